"""A run's record (``<home>/runs/<name>/config.json``), read and checked without torch.

``tinyshake runs``, ``runs rm`` and ``--help`` must start fast, so everything
that reads, checks, lists or deletes runs lives here; :mod:`tinyshake.checkpoint`
is the torch side that writes and loads tensors.

The record cannot lie: it holds the SHA-256 of every file it names and, under
``record_sha256``, the SHA-256 of its own canonical JSON. Whatever changes what
a run computes or decodes (vocabulary, model, hyperparameters, corpus hash,
file names and hashes) is covered, so an edited or damaged record is refused
on every read instead of decoding wrong. It is read with a size cap, checked
field by field (types too) and parsed once, into a frozen :class:`RunRecord`
that every reader takes; a save replaces it last, so a reader that finds the
files it names gone simply reads the fresh record again (:func:`consistent`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Optional, TypeVar, Union

from tinyshake.store import names, paths, runlock
from tinyshake.store.values import count as _count, number as _number
from tinyshake.store.atomic import write_bytes
from tinyshake.errors import TinyshakeError, UsageError
from tinyshake.units import bits_per_char

FORMAT = 2
CONFIG = "config.json"
DIGEST = "record_sha256"
MAX_RECORD_BYTES = 1 << 20  # a real record is a few KiB; a huge one is damage, never read whole
ATTEMPTS = 5  # fresh reads of a record whose files a concurrent save replaced
KINDS = ("weights", "state", "best", "tokenizer")
SPLITS = ("train", "val")  # the files a record may name; weights and state always
HEX64 = re.compile(r"[0-9a-f]{64}")
TRAIN_HINT = "train one first: tinyshake train --model mini"
BYTES_PER_WEIGHT = 2  # the least a stored weight takes (16-bit); checkpoints store float32, so this errs lenient

Scalar = Union[str, bool, int, float, None]
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


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of a run: the loss estimates at a step, and the seconds spent when it was made.

    ``final`` marks the evaluation of a finished run's final weights, which is
    beyond the lecture's schedule.
    """

    step: int
    val: float
    train: Optional[float] = None
    elapsed: Optional[float] = None
    final: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The row as config.json stores it (absent values left out)."""
        row: dict[str, Any] = {"step": self.step, "train": self.train, "val": self.val, "elapsed": self.elapsed}
        row = {k: v for k, v in row.items() if v is not None}
        return dict(row, final=True) if self.final else row


@dataclass(frozen=True)
class StoredFile:
    """A file in the run's folder that the record names, with the SHA-256 and size it must have."""

    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class CorpusRef:
    """The text a run was trained on: the cached corpus's name and the SHA-256 of its text."""

    name: str
    sha256: str


@dataclass(frozen=True)
class RunRecord:
    """A run's verified record: what it is, how far it got, and the files that hold it. Parsed once, by :func:`parse`."""

    name: str  # the folder's name: a copied folder is the copy, whatever its record says
    stage: str
    model: Mapping[str, Scalar]
    hyper: Mapping[str, Scalar]
    vocab: tuple[str, ...]
    files: Mapping[str, StoredFile]
    step: int
    updated: str
    digest: str
    created: str = ""
    corpus: Optional[CorpusRef] = None
    tokenizer: str = "char"
    max_iters: Optional[int] = None
    parameters: Optional[int] = None
    metrics: tuple[Evaluation, ...] = ()
    final: Optional[Evaluation] = None
    best_val: Optional[float] = None
    best_step: Optional[int] = None
    wall_time: float = 0.0
    train_seconds: float = 0.0
    dtype: Optional[str] = None
    threads: Optional[int] = None
    device: Optional[str] = None  # the device it trained on, resolved ("cpu", "cuda:0"); None in older records
    chars_per_token: tuple[float, float] = (1.0, 1.0)  # of the train and val splits: 1 for the lecture's characters

    def bits_per_char(self, loss: float, split: str = "val") -> float:
        """A per-token loss of ``split`` in bits per character: the scale on which char and BPE runs compare."""
        return bits_per_char(loss, self.chars_per_token[SPLITS.index(split)])

    def evaluations(self) -> list[Evaluation]:
        """Every evaluation in step order, ending with the final weights' one where the run made one."""
        rows = list(self.metrics)
        if self.final is not None and (not rows or self.final.step > rows[-1].step):
            rows.append(self.final)
        return rows

    @property
    def last_val(self) -> Optional[float]:
        """The run's last val estimate: of its final weights where it made one, else its last evaluation."""
        rows = self.evaluations()
        return rows[-1].val if rows else None

    @property
    def eval_iters(self) -> Optional[int]:
        """The batches per split of each of the run's val estimates (None in a record that does not say)."""
        value = self.hyper.get("eval_iters")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def corpus_name(self) -> Optional[str]:
        return self.corpus.name if self.corpus is not None else None


@dataclass(frozen=True)
class RunStatus:
    """What ``runs`` shows of one run folder: its record if it reads, why it is damaged if not, and who holds it."""

    name: str
    record: Optional[RunRecord]
    damaged: Optional[str]
    holder: Optional[int]  # the pid of the process that holds the run, 0 while it starts, None when free

    @property
    def readable(self) -> bool:
        return self.record is not None and self.damaged is None


def run_dir(name: str) -> Path:
    """The run's folder; the name follows the one rule for names (:mod:`tinyshake.store.names`)."""
    return paths.runs_root() / names.check(name, "run")


def exists(name: str) -> bool:
    """The run has a record: a folder a killed first save left with no config.json is no run yet."""
    return (run_dir(name) / CONFIG).is_file()


def missing(name: str) -> CheckpointError:
    return CheckpointError(f"no run named {name!r} in {paths.runs_root()}")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(body: Mapping[str, Any]) -> str:
    """The SHA-256 of the record's canonical JSON, without the digest itself."""
    unsealed = {k: v for k, v in body.items() if k != DIGEST}
    return sha256(json.dumps(unsealed, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode())


def write_record(folder: Path, body: dict[str, Any]) -> RunRecord:
    """Seal ``body`` with its digest and replace ``folder/config.json`` with it (atomically)."""
    sealed = dict(body)
    sealed[DIGEST] = digest(sealed)
    write_bytes(folder / CONFIG, (json.dumps(sealed, indent=2) + "\n").encode())
    return parse(folder.name, sealed)


def read_record(name: str) -> RunRecord:
    """The run's verified record, or a one-line error: missing, too big, not JSON, edited, or of the wrong shape.

    A config.json that is a link is refused: it would show another run's record as this one's.
    """
    path = run_dir(name) / CONFIG
    if path.is_symlink():
        raise Damaged(name, "config.json is a link, not the run's own record")
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
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise Damaged(name, "config.json is not UTF-8") from None
    except (ValueError, RecursionError):
        raise Damaged(name, "config.json is not valid JSON") from None
    return parse(name, body)


def parse(name: str, body: Any) -> RunRecord:
    """The typed record of a config.json's JSON, or :class:`Damaged` with the first thing wrong."""
    reason = _problem(body)
    if reason:
        raise Damaged(name, reason)
    files = {kind: StoredFile(file, body["sha256"][kind], body["sizes"][kind]) for kind, file in body["files"].items()}
    corpus = body.get("corpus")
    final = body.get("final")
    record = RunRecord(
        name=name, stage=body["stage"], model=MappingProxyType(dict(body["model"])),
        hyper=MappingProxyType(dict(body["hyper"])), vocab=tuple(body["vocab"]), files=MappingProxyType(files),
        step=body["step"], updated=body["updated"], digest=body[DIGEST], created=body.get("created") or body["updated"],
        corpus=CorpusRef(corpus["name"], corpus["sha256"]) if corpus is not None else None,
        tokenizer=body.get("tokenizer", "char"), max_iters=body.get("max_iters"), parameters=body.get("parameters"),
        metrics=tuple(_evaluation(row) for row in body.get("metrics", [])),
        final=_evaluation(dict(final, final=True)) if final is not None else None,
        best_val=body.get("best_val"), best_step=body.get("best_step"), wall_time=float(body.get("wall_time", 0.0)),
        train_seconds=float(body.get("train_seconds", 0.0)), dtype=body.get("dtype"), threads=body.get("threads"),
        device=body.get("device"),
        chars_per_token=tuple(float(body.get("chars_per_token", {}).get(split, 1.0)) for split in SPLITS),
    )
    too_big = _larger_than_its_weights(record)
    if too_big:
        raise Damaged(name, too_big)
    return record


def _evaluation(row: Mapping[str, Any]) -> Evaluation:
    return Evaluation(row["step"], float(row["val"]), row.get("train"), row.get("elapsed"), bool(row.get("final")))


def _problem(body: Any) -> Optional[str]:
    """Why ``body`` cannot be trusted (the first thing wrong), or None."""
    if not isinstance(body, dict):
        return "config.json is not a JSON object"
    if body.get("format") != FORMAT:
        return f"record format {body.get('format')!r}, this tinyshake reads format {FORMAT}"
    try:
        sealed = body.get(DIGEST) == digest(body)
    except (ValueError, RecursionError):
        sealed = False
    if not sealed:
        return "config.json does not match its SHA-256: edited or damaged"
    for key, ok, what in _FIELDS:
        if key in body or key in _REQUIRED:
            if not ok(body.get(key)):
                return f"field {key!r} is not {what}"
    files = body["files"]
    for kind in files:
        if kind not in KINDS or not names.is_valid(files[kind]):
            return f"files.{kind} is not a file name in the run's folder"
        if not _is_hex(body["sha256"].get(kind)) or not _count(body["sizes"].get(kind)):
            return f"the SHA-256 or size of files.{kind} is missing"
    if "weights" not in files or "state" not in files:
        return "config.json names no weights or state file"
    if ("best" in files) != _count(body.get("best_step")):
        return "best_step and files.best disagree"
    if (body.get("tokenizer", "char") != "char") != ("tokenizer" in files):
        return "the tokenizer and files.tokenizer disagree"
    return None


def _larger_than_its_weights(record: RunRecord) -> Optional[str]:
    """Why the record's model cannot be the one its weights file holds: it has more weights than the file has room for.

    A record edited and sealed again to ``n_layer: 200000`` would otherwise
    make every reader build a model no machine could have trained.
    """
    floor = _least_weights(record.model)
    room = record.files["weights"].size // BYTES_PER_WEIGHT
    if floor <= room:
        return None
    return f"its model needs at least {floor:,} weights, and its weights file holds at most {room:,}"


def _least_weights(model: Mapping[str, Scalar]) -> int:
    """A lower bound on the weights of the model a record describes: its embeddings, and each layer's key, query
    and value; 0 where the sizes are not positive whole numbers (the model's own checks say what is wrong)."""
    sizes = {key: model.get(key) for key in ("vocab_size", "n_embd", "n_layer")}
    if not all(_count(v) for v in sizes.values()):
        return 0
    vocab, width, layers = sizes["vocab_size"], sizes["n_embd"], sizes["n_layer"]
    if model.get("arch") == "bigram":
        return vocab * vocab
    return vocab * width + layers * 3 * width * width


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
    ("tokenizer", lambda v: v in ("char", "bpe"), "char or bpe"),
    ("chars_per_token", lambda v: isinstance(v, dict) and set(v) == set(SPLITS)
     and all(_number(x) and x >= 1 for x in v.values()), "the characters per token of train and val"),
    ("files", lambda v: isinstance(v, dict), "an object"),
    ("sha256", lambda v: isinstance(v, dict), "an object"),
    ("sizes", lambda v: isinstance(v, dict), "an object"),
    ("step", _count, "a step count"),
    ("max_iters", _count, "a step count"),
    ("parameters", _count, "a count"),
    ("metrics", lambda v: isinstance(v, list) and all(_metric(m) for m in v), "a list of evaluations"),
    ("final", lambda v: v is None or _metric(v), "an evaluation"),
    ("best_val", lambda v: v is None or _number(v), "a finite number"),
    ("best_step", lambda v: v is None or _count(v), "a step count"),
    ("wall_time", _number, "a finite number"),
    ("train_seconds", _number, "a finite number"),
    ("created", lambda v: v is None or isinstance(v, str), "a date"),
    ("updated", lambda v: isinstance(v, str), "a date"),
    ("name", lambda v: isinstance(v, str), "a string"),
    ("dtype", lambda v: v is None or isinstance(v, str), "a string"),
    ("device", lambda v: v is None or isinstance(v, str), "a string"),
    ("threads", lambda v: v is None or _count(v), "a count"),
)
_REQUIRED = frozenset({"stage", "model", "hyper", "vocab", "files", "sha256", "sizes", "step", "updated"})


def file_path(record: RunRecord, kind: str) -> Path:
    return run_dir(record.name) / record.files[kind].name


def read_file(record: RunRecord, kind: str) -> bytes:
    """A file the record names, checked against its SHA-256; :class:`FileGone` if it is not there."""
    path = file_path(record, kind)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileGone(f"checkpoint file {path} is missing; retrain the run") from None
    except OSError as exc:
        raise CheckpointError(f"checkpoint file {path} cannot be read: {exc.strerror or exc}") from None
    if sha256(data) != record.files[kind].sha256:
        raise CheckpointError(f"checkpoint file {path} is corrupt or truncated (SHA-256 mismatch); retrain the run")
    return data


def consistent(name: str, use: Callable[[RunRecord], T]) -> T:
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
            if fresh.files == record.files:
                raise  # nothing was replaced: the file really is gone
            record = fresh
    raise CheckpointError(f"run {name!r} was saved {ATTEMPTS} times while it was being read; try again")


def check_files(record: RunRecord) -> RunRecord:
    """``record`` if every file it names is there at its stored size (cheap: one stat each, no hashing)."""
    for kind, stored in record.files.items():
        try:
            size = (run_dir(record.name) / stored.name).stat().st_size
        except FileNotFoundError:
            raise FileGone(f"{kind} file missing") from None
        except OSError as exc:
            raise Damaged(record.name, f"{kind} file cannot be read: {exc.strerror or exc}") from None
        if size != stored.size:
            raise Damaged(record.name, f"{kind} file is {size:,} bytes, the record says {stored.size:,}")
    return record


def status(name: str) -> RunStatus:
    """What ``runs`` shows of one run: its record (if readable), why it is damaged (if it is), and who holds it."""
    pid = runlock.holder(name)
    try:
        return RunStatus(name, consistent(name, check_files), None, pid)
    except FileGone as exc:
        return RunStatus(name, None, str(exc), pid)
    except Damaged as exc:
        return RunStatus(name, None, exc.reason, pid)
    except CheckpointError:  # no config.json: a training before its first save, or a leftover folder
        return RunStatus(name, None, None if pid else "no config.json", pid)


def list_runs() -> list[RunStatus]:
    """Every run folder's :func:`status`, newest first; damaged runs are listed too, with their reason."""
    root = paths.runs_root()
    if not root.is_dir():
        return []
    found = [status(folder.name) for folder in root.iterdir()
             if folder.is_dir() and names.is_valid(folder.name)]
    return sorted(found, key=lambda s: (s.record.updated if s.record else "", s.name), reverse=True)


def readable() -> list[RunRecord]:
    """The records of the runs that can be loaded (not damaged, saved at least once), newest first."""
    return [s.record for s in list_runs() if s.readable and s.record is not None]


def latest() -> Optional[str]:
    """The most recently saved readable run's name, if any."""
    runs = readable()
    return runs[0].name if runs else None


def resolve(name: Optional[str]) -> str:
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
        known = [r.name for r in readable()]
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
        stale = (path.name.endswith(".part") or path.suffix in (".safetensors", ".pt")
                 or (path.name.startswith("tokenizer-") and path.suffix == ".json"))
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
