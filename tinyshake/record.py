"""A run's record (``<home>/runs/<name>/config.json``), read and checked without torch.

``tinyshake runs``, ``runs rm`` and ``--help`` must start fast, so everything
that reads, checks, lists or deletes runs lives here; :mod:`tinyshake.checkpoint`
is the torch side that writes and loads tensors.

The record cannot lie: it holds the SHA-256 of every file it names and, under
``record_sha256``, the SHA-256 of its own canonical JSON. Whatever changes what
a run computes or decodes (vocabulary, model, hyperparameters, corpus hash,
file names and hashes) is covered, so an edited or damaged record is refused
on every read instead of decoding wrong. It is read with a size cap, checked
field by field (types too), and a save replaces it last, so a reader that
finds the files it names gone simply reads the fresh record again
(:func:`consistent`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from tinyshake import names, paths, runlock
from tinyshake.atomic import write_bytes
from tinyshake.errors import TinyshakeError, UsageError

FORMAT = 2
CONFIG = "config.json"
DIGEST = "record_sha256"
MAX_RECORD_BYTES = 1 << 20  # a real record is a few KiB; a huge one is damage, never read whole
ATTEMPTS = 5  # fresh reads of a record whose files a concurrent save replaced
KINDS = ("weights", "state", "best")  # the files a record may name; weights and state always
HEX64 = re.compile(r"[0-9a-f]{64}")
TRAIN_HINT = "train one first: tinyshake train --model mini"

T = TypeVar("T")


class CheckpointError(UsageError):
    """A checkpoint is missing, corrupt, truncated or does not fit."""


class Damaged(CheckpointError):
    """A run whose record or files are damaged; ``reason`` is the short cause that ``runs`` lists."""

    def __init__(self, name: str, reason: str) -> None:
        self.reason = reason
        super().__init__(f"run {name!r} is damaged ({reason}); retrain it with --overwrite or delete it with "
                         f"`tinyshake runs rm {name}`")


class FileGone(CheckpointError):
    """A file the record names is not there: a concurrent save may have replaced the record."""


def run_dir(name: str) -> Path:
    """The run's folder; the name follows the one rule for names (:mod:`tinyshake.names`)."""
    return paths.runs_root() / names.check(name, "run")


def exists(name: str) -> bool:
    return (run_dir(name) / CONFIG).is_file()


def missing(name: str) -> CheckpointError:
    return CheckpointError(f"no run named {name!r} in {paths.runs_root()}")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(record: dict[str, Any]) -> str:
    """The SHA-256 of the record's canonical JSON, without the digest itself."""
    body = {k: v for k, v in record.items() if k != DIGEST}
    return sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode())


def write_record(folder: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Seal ``record`` with its digest and replace ``folder/config.json`` with it (atomically)."""
    sealed = dict(record)
    sealed[DIGEST] = digest(sealed)
    write_bytes(folder / CONFIG, (json.dumps(sealed, indent=2) + "\n").encode())
    return sealed


def read_record(name: str) -> dict[str, Any]:
    """The run's verified record, or a one-line error: missing, too big, not JSON, edited, or of the wrong shape."""
    path = run_dir(name) / CONFIG
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_RECORD_BYTES + 1)
    except FileNotFoundError:
        raise missing(name) from None
    except OSError as exc:
        raise Damaged(name, f"config.json cannot be read: {exc.strerror or exc}") from None
    if len(raw) > MAX_RECORD_BYTES:
        raise Damaged(name, f"config.json is larger than {MAX_RECORD_BYTES >> 20} MiB")
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise Damaged(name, "config.json is not UTF-8") from None
    except (ValueError, RecursionError):
        raise Damaged(name, "config.json is not valid JSON") from None
    reason = problem(record)
    if reason:
        raise Damaged(name, reason)
    return record


def problem(record: Any) -> str | None:
    """Why ``record`` cannot be trusted (the first thing wrong), or None."""
    if not isinstance(record, dict):
        return "config.json is not a JSON object"
    if record.get("format") != FORMAT:
        return f"record format {record.get('format')!r}, this tinyshake reads format {FORMAT}"
    try:
        sealed = record.get(DIGEST) == digest(record)
    except (ValueError, RecursionError):
        sealed = False
    if not sealed:
        return "config.json does not match its SHA-256: edited or damaged"
    for key, ok, what in _FIELDS:
        if key in record or key in _REQUIRED:
            if not ok(record.get(key)):
                return f"field {key!r} is not {what}"
    files = record["files"]
    for kind in files:
        if kind not in KINDS or not names.is_valid(files[kind]):
            return f"files.{kind} is not a file name in the run's folder"
        if not _is_hex(record["sha256"].get(kind)) or not _count(record["sizes"].get(kind)):
            return f"the SHA-256 or size of files.{kind} is missing"
    if "weights" not in files or "state" not in files:
        return "config.json names no weights or state file"
    if ("best" in files) != _count(record.get("best_step")):
        return "best_step and files.best disagree"
    return None


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_hex(value: Any) -> bool:
    return isinstance(value, str) and HEX64.fullmatch(value) is not None


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool)) or _number(value)


def _metric(row: Any) -> bool:
    return (isinstance(row, dict) and _count(row.get("step")) and _number(row.get("val"))
            and all(_number(row[k]) for k in ("train", "elapsed") if k in row))


_FIELDS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("stage", lambda v: isinstance(v, str), "a string"),
    ("model", lambda v: isinstance(v, dict) and all(_scalar(x) for x in v.values()), "an object of numbers and names"),
    ("hyper", lambda v: isinstance(v, dict) and all(_scalar(x) for x in v.values()), "an object of numbers and names"),
    ("vocab", lambda v: isinstance(v, list) and len(v) > 0 and len(set(v)) == len(v)
     and all(isinstance(c, str) and len(c) == 1 for c in v), "a list of distinct characters"),
    ("corpus", lambda v: isinstance(v, dict) and isinstance(v.get("name"), str) and _is_hex(v.get("sha256")),
     "an object with the corpus name and SHA-256"),
    ("files", lambda v: isinstance(v, dict), "an object"),
    ("sha256", lambda v: isinstance(v, dict), "an object"),
    ("sizes", lambda v: isinstance(v, dict), "an object"),
    ("step", _count, "a step count"),
    ("max_iters", _count, "a step count"),
    ("parameters", _count, "a count"),
    ("metrics", lambda v: isinstance(v, list) and all(_metric(m) for m in v), "a list of evaluations"),
    ("best_val", lambda v: v is None or _number(v), "a finite number"),
    ("best_step", lambda v: v is None or _count(v), "a step count"),
    ("wall_time", _number, "a finite number"),
    ("train_seconds", _number, "a finite number"),
    ("created", lambda v: isinstance(v, str), "a date"),
    ("updated", lambda v: isinstance(v, str), "a date"),
    ("name", lambda v: isinstance(v, str), "a string"),
)
_REQUIRED = frozenset({"stage", "model", "hyper", "vocab", "files", "sha256", "sizes", "step", "updated"})


def file_path(name: str, record: dict[str, Any], kind: str) -> Path:
    return run_dir(name) / record["files"][kind]


def read_file(name: str, record: dict[str, Any], kind: str) -> bytes:
    """A file the record names, checked against its SHA-256; :class:`FileGone` if it is not there."""
    path = file_path(name, record, kind)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileGone(f"checkpoint file {path} is missing; retrain the run") from None
    except OSError as exc:
        raise CheckpointError(f"checkpoint file {path} cannot be read: {exc.strerror or exc}") from None
    if sha256(data) != record["sha256"][kind]:
        raise CheckpointError(f"checkpoint file {path} is corrupt or truncated (SHA-256 mismatch); retrain the run")
    return data


def consistent(name: str, use: Callable[[dict[str, Any]], T]) -> T:
    """``use(record)`` on one consistent checkpoint, even while a training saves new ones.

    A save writes the new files, replaces config.json, then deletes the old
    files; a reader between the last two steps finds its files gone. It then
    reads the fresh record and tries again, a bounded number of times.
    """
    record = read_record(name)
    for _ in range(ATTEMPTS):
        try:
            return use(record)
        except FileGone:
            fresh = read_record(name)
            if fresh["files"] == record["files"]:
                raise  # nothing was replaced: the file really is gone
            record = fresh
    raise CheckpointError(f"run {name!r} was saved {ATTEMPTS} times while it was being read; try again")


def check_files(name: str, record: dict[str, Any]) -> dict[str, Any]:
    """``record`` if every file it names is there at its stored size (cheap: one stat each, no hashing)."""
    for kind, file in record["files"].items():
        try:
            size = (run_dir(name) / file).stat().st_size
        except FileNotFoundError:
            raise FileGone(f"{kind} file missing") from None
        except OSError as exc:
            raise Damaged(name, f"{kind} file cannot be read: {exc.strerror or exc}") from None
        if size != record["sizes"][kind]:
            raise Damaged(name, f"{kind} file is {size:,} bytes, the record says {record['sizes'][kind]:,}")
    return record


def status(name: str) -> dict[str, Any]:
    """What ``runs`` shows of one run: its record (if readable), ``damaged`` (a reason or None), ``holder``."""
    pid = runlock.holder(name)
    try:
        record = consistent(name, lambda r: check_files(name, r))
    except FileGone as exc:
        return {"name": name, "damaged": str(exc), "holder": pid}
    except Damaged as exc:
        return {"name": name, "damaged": exc.reason, "holder": pid}
    except CheckpointError:  # no config.json: a training before its first save, or a leftover folder
        return {"name": name, "damaged": None if pid else "no config.json", "holder": pid}
    return dict(record, name=name, damaged=None, holder=pid)


def list_runs() -> list[dict[str, Any]]:
    """Every run folder's :func:`status`, newest first; damaged runs are listed too, with their reason."""
    root = paths.runs_root()
    if not root.is_dir():
        return []
    found = [status(folder.name) for folder in root.iterdir()
             if folder.is_dir() and names.is_valid(folder.name)]
    return sorted(found, key=lambda r: (r.get("updated", ""), r["name"]), reverse=True)


def _readable() -> list[str]:
    """The names of the runs that can be loaded (not damaged, saved at least once), newest first."""
    return [r["name"] for r in list_runs() if r["damaged"] is None and "updated" in r]


def latest() -> str | None:
    """The most recently saved readable run's name, if any."""
    runs = _readable()
    return runs[0] if runs else None


def resolve(name: str | None) -> str:
    """The run a command reads: ``name`` if that run exists, or the most recently saved one when ``name`` is None.

    Every command that reads a run (chat, eval, inspect) picks it here, so
    they agree: '' is a name (and an invalid one), never "the latest"; a
    missing run is a usage error that lists the runs there are; with no runs
    at all, it says how to train one.
    """
    if name is None:
        found = latest()
        if found is None:
            raise UsageError(f"there are no trained runs in {paths.runs_root()} yet; {TRAIN_HINT}")
        return found
    if not exists(name):
        known = _readable()
        hint = f"runs: {', '.join(known)}" if known else TRAIN_HINT
        raise CheckpointError(f"no run named {name!r} in {paths.runs_root()}; {hint}")
    return name


def clean(folder: Path, keep: Iterable[str]) -> None:
    """Delete what earlier saves left behind in a run folder: replaced or orphan files, and ``.part`` leftovers.

    Only the process that holds the run's lock saves, so any other file of
    these kinds is stale: one a kill or a full disk left half-way.
    """
    keep = set(keep) | {CONFIG}
    for path in folder.iterdir():
        stale = path.name.endswith(".part") or path.suffix in (".safetensors", ".pt")
        if stale and path.name not in keep and path.is_file():
            with contextlib.suppress(OSError):  # a reader may hold it open (Windows); the next save retries
                path.unlink()


def remove(name: str) -> None:
    """Delete a run, unless a process holds it (a training): refused with that process's pid."""
    folder = run_dir(name)
    if folder.is_symlink():  # deleting through it would delete a run that lives somewhere else
        raise UsageError(f"run {name!r} is a link to {os.readlink(folder)}; remove the link itself ({folder}) "
                         "if you mean to")
    if not folder.is_dir():
        raise missing(name)
    with runlock.hold(name, "rm"):
        if not folder.is_dir():  # another `runs rm` finished first
            raise missing(name)
        try:
            (folder / CONFIG).unlink(missing_ok=True)  # first: a half-deleted run is no longer a run
            shutil.rmtree(folder)
        except OSError as exc:
            raise TinyshakeError(f"cannot delete run {name!r} in {folder}: {exc.strerror or exc}") from None


def first_line(exc: BaseException) -> str:
    """An exception's message as one line (its type when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
