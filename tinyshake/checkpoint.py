"""Trained runs on disk: ``<home>/runs/<name>/``, saved atomically, loaded without executing code.

A run folder holds ``config.json`` plus one weights file (safetensors) and one
training-state file (optimizer, RNG states and step, read back with
``torch.load(weights_only=True)``). The weights and state are written first,
under names that carry their step; ``config.json`` is replaced last and names
them, with their SHA-256. It is the commit point: a crash at any moment leaves
the previous checkpoint whole, and a damaged file is caught by its hash.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torch.nn as nn

from tinyshake import __version__, paths
from tinyshake.atomic import write_bytes
from tinyshake.corpus import NAME_RE, CharTokenizer
from tinyshake.errors import TinyshakeError, UsageError
from tinyshake.model import ModelConfig, build

FORMAT = 1
CONFIG = "config.json"


class CheckpointError(UsageError):
    """A checkpoint is missing, corrupt, truncated or does not fit."""


def run_dir(name: str) -> Path:
    if not NAME_RE.match(name):
        raise UsageError(f"invalid run name {name!r}: use letters, digits, '.', '_' or '-'")
    return paths.runs_root() / name


def exists(name: str) -> bool:
    return (run_dir(name) / CONFIG).is_file()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(name: str, model: nn.Module, record: dict[str, Any], state: dict[str, Any]) -> Path:
    """Write a checkpoint of ``model`` with its ``record`` (config.json fields) and training ``state``."""
    folder = run_dir(name)
    step = int(record["step"])
    # clone: the parameters may be views into one flat tensor, and safetensors refuses shared storage
    weights = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    weights_bytes = safetensors.torch.save(weights, metadata={"step": str(step)})
    buffer = io.BytesIO()
    torch.save(state, buffer)
    state_bytes = buffer.getvalue()
    sha = {"weights": _sha256(weights_bytes), "state": _sha256(state_bytes)}
    # Names carry the content's hash: a save never rewrites the files the current config.json names.
    files = {"weights": f"model-{step:07d}-{sha['weights'][:12]}.safetensors",
             "state": f"state-{step:07d}-{sha['state'][:12]}.pt"}
    write_bytes(folder / files["weights"], weights_bytes)
    write_bytes(folder / files["state"], state_bytes)
    record = dict(record, format=FORMAT, files=files, updated=_now(), torch=torch.__version__, tinyshake=__version__,
                  sha256=sha)
    record["created"] = record.get("created") or record["updated"]
    write_bytes(folder / CONFIG, (json.dumps(record, indent=2) + "\n").encode())
    for stale in folder.glob("*-*.*"):
        if stale.name not in files.values() and stale.suffix in (".safetensors", ".pt"):
            stale.unlink(missing_ok=True)
    return folder


def read_record(name: str) -> dict[str, Any]:
    """The run's config.json, or a one-line error if it is missing or unreadable."""
    path = run_dir(name) / CONFIG
    if not path.is_file():
        raise CheckpointError(f"no run named {name!r} in {paths.runs_root()}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        _check_shape(record)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt ({type(exc).__name__}); "
                              "retrain the run with --overwrite") from None
    return record


def _check_shape(record: Any) -> None:
    """Raise TypeError unless config.json has the fields, of the types, that loading and resuming read.

    The weights and state are protected by their hashes; config.json is not,
    so a damaged or hand-edited one must fail here, not deep in a load.
    """
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise TypeError(what)

    need(isinstance(record, dict), "not an object")
    for key in ("files", "sha256", "model", "hyper"):
        need(isinstance(record.get(key), dict), key)
    for kind in ("weights", "state"):
        name = record["files"].get(kind)
        need(isinstance(name, str) and Path(name).name == name and name not in ("", ".", ".."), f"files.{kind}")
    vocab = record.get("vocab")
    need(isinstance(vocab, list) and all(isinstance(c, str) and len(c) == 1 for c in vocab), "vocab")
    metrics = record.get("metrics", [])
    need(isinstance(metrics, list) and all(isinstance(m, dict) and isinstance(m.get("step"), int)
                                           and isinstance(m.get("val"), (int, float)) for m in metrics), "metrics")


def _read_verified(name: str, record: dict[str, Any], kind: str) -> bytes:
    path = run_dir(name) / record["files"][kind]
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"checkpoint file {path} cannot be read: {exc.strerror or exc}") from None
    if _sha256(data) != record.get("sha256", {}).get(kind):
        raise CheckpointError(f"checkpoint file {path} is corrupt or truncated (SHA-256 mismatch); retrain the run")
    return data


@dataclass
class LoadedRun:
    name: str
    record: dict[str, Any]
    config: ModelConfig
    tokenizer: CharTokenizer
    model: nn.Module


def load(name: str, device: torch.device | str = "cpu") -> LoadedRun:
    """Rebuild a run's model from its verified weights; nothing in the files is executed."""
    record = read_record(name)
    config = ModelConfig.from_dict(record["model"])
    weights = _read_verified(name, record, "weights")
    try:
        tensors = safetensors.torch.load(weights)
        model = build(config)
        model.load_state_dict(tensors)
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"checkpoint of run {name!r} does not load: {first_line(exc)}") from None
    model.to(device)
    return LoadedRun(name, record, config, CharTokenizer(record["vocab"]), model)


def load_state(name: str, record: dict[str, Any]) -> dict[str, Any]:
    """The training state (optimizer, RNG, step), read with ``weights_only=True``."""
    data = _read_verified(name, record, "state")
    try:
        state = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:  # a damaged pickle can raise nearly anything; report it in one line
        raise CheckpointError(f"training state of run {name!r} does not load: {first_line(exc)}") from None
    rng = state.get("rng") if isinstance(state, dict) else None
    if not (isinstance(rng, dict) and isinstance(rng.get("cpu"), torch.Tensor) and isinstance(state.get("step"), int)
            and isinstance(state.get("optimizer"), dict)):
        raise CheckpointError(f"training state of run {name!r} lacks its step, optimizer or RNG state")
    return state


def first_line(exc: BaseException) -> str:
    """An exception's message as one line (its type when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def list_runs() -> list[dict[str, Any]]:
    """Every readable run's record, newest first; unreadable folders are reported as such."""
    root = paths.runs_root()
    if not root.is_dir():
        return []
    records = []
    for folder in root.iterdir():
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        try:
            records.append(dict(read_record(folder.name), name=folder.name))
        except TinyshakeError:
            records.append({"name": folder.name, "stage": "?", "corrupt": True, "updated": ""})
    return sorted(records, key=lambda r: r.get("updated", ""), reverse=True)


def latest() -> str | None:
    """The most recently updated run's name, if any."""
    runs = [r for r in list_runs() if not r.get("corrupt")]
    return runs[0]["name"] if runs else None


def remove(name: str) -> None:
    folder = run_dir(name)
    if not folder.is_dir():
        raise UsageError(f"no run named {name!r} in {paths.runs_root()}")
    shutil.rmtree(folder)
