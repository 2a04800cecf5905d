"""Trained runs on disk, the torch side: save weights and state atomically, load them without executing code.

A run folder holds ``config.json`` (the record, read and checked by the
torch-free :mod:`tinyshake.store.record`), the latest weights (safetensors), the
training state (optimizer, RNG states and step, read back with
``torch.load(weights_only=True)``) and the best weights so far. Weights and
state are written first, under names that carry their step and hash;
``config.json`` is replaced last and names them, with their SHA-256 and sizes.
It is the commit point: a crash at any moment leaves the previous checkpoint
whole, a damaged file is caught by its hash, and the files it no longer names
(and the leftovers of killed saves) are deleted after it.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import safetensors.torch
import torch
import torch.nn as nn

from tinyshake import __version__, tokens
from tinyshake.models import speed
from tinyshake.store.atomic import write_bytes
from tinyshake.tokens import Tokenizer
from tinyshake.errors import UsageError
from tinyshake.models.model import LanguageModel, ModelConfig
from tinyshake.store.record import (  # re-exported: the torch side's callers read records through here too
    CONFIG, FORMAT, CheckpointError, RunRecord, clean, consistent, exists, first_line, latest, list_runs, read_file,
    read_record, remove, run_dir, sha256, write_record,
)

__all__ = ["CONFIG", "FORMAT", "CheckpointError", "LoadedRun", "RunRecord", "exists", "first_line", "latest",
           "list_runs", "load", "load_state", "read_record", "remove", "rng_state", "run_dir", "save", "set_rng_state"]
WEIGHTS = ("best", "last")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")  # fine enough to order runs saved in one second


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(name: str, model: nn.Module, record: dict[str, Any], state: dict[str, Any], best: bool = False,
         tokenizer: Optional[bytes] = None) -> RunRecord:
    """Write a checkpoint of ``model`` with its ``record`` (config.json fields) and training ``state``; returns the
    record as saved.

    Every save writes the latest weights; ``best=True`` also makes them the
    run's best (``files["best"]``, ``best_step``, ``best_val``). Otherwise the
    best of an earlier save is kept, if it belongs to this run's evaluations.
    A BPE run's ``tokenizer`` (its JSON bytes) is named and sealed by every
    save, as the vocabulary is.
    """
    folder = run_dir(name)
    step = int(record["step"])
    # clone: the parameters may be views into one flat tensor, and safetensors refuses shared storage
    weights = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    blobs = {"weights": safetensors.torch.save(weights, metadata={"step": str(step)})}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    blobs["state"] = buffer.getvalue()
    if tokenizer is not None:
        blobs["tokenizer"] = tokenizer
    sha = {kind: sha256(data) for kind, data in blobs.items()}
    # Names carry the content's hash: a save never rewrites the files the current config.json names.
    files = {"weights": f"model-{step:07d}-{sha['weights'][:12]}.safetensors",
             "state": f"state-{step:07d}-{sha['state'][:12]}.pt"}
    if tokenizer is not None:
        files["tokenizer"] = f"tokenizer-{sha['tokenizer'][:12]}.json"
    sizes = {kind: len(data) for kind, data in blobs.items()}
    for kind, data in blobs.items():
        write_bytes(folder / files[kind], data)
    best_fields: dict[str, Any] = {"best_step": None}
    if best:
        files["best"], sha["best"], sizes["best"] = f"best-{step:07d}-{sha['weights'][:12]}.safetensors", \
            sha["weights"], sizes["weights"]
        _same_bytes(folder / files["weights"], folder / files["best"], blobs["weights"])
        vals = [m["val"] for m in record.get("metrics", []) if m.get("step") == step]
        best_fields = {"best_step": step, "best_val": vals[-1] if vals else record.get("best_val")}
    else:
        kept = _kept_best(name, record)
        if kept is not None:
            stored = kept.files["best"]
            files["best"], sha["best"], sizes["best"] = stored.name, stored.sha256, stored.size
            best_fields = {"best_step": kept.best_step, "best_val": kept.best_val}
    record = dict(record, **best_fields, format=FORMAT, files=files, sha256=sha, sizes=sizes, updated=_now(),
                  torch=torch.__version__, tinyshake=__version__)
    record["created"] = record.get("created") or record["updated"]
    saved = write_record(folder, record)
    clean(folder, files.values())
    return saved


def _same_bytes(source: Path, dest: Path, data: bytes) -> None:
    """``dest`` with ``source``'s bytes: a hard link (no second copy on disk) where the filesystem has them."""
    try:
        os.link(source, dest)
    except FileExistsError:  # the same step and hash: the same bytes
        pass
    except OSError:
        write_bytes(dest, data)


def _kept_best(name: str, record: dict[str, Any]) -> RunRecord | None:
    """The folder's current record, if its best weights are one of ``record``'s evaluations (same step and val).

    That ties the best to this run: an --overwrite starts with no evaluations,
    so the replaced run's best is never carried into the new one.
    """
    try:
        stored = read_record(name)
    except CheckpointError:
        return None
    if "best" not in stored.files:
        return None
    evaluations = {(m.get("step"), m.get("val")) for m in record.get("metrics", [])}
    return stored if (stored.best_step, stored.best_val) in evaluations else None


@dataclass
class LoadedRun:
    name: str
    record: RunRecord
    config: ModelConfig
    tokenizer: Tokenizer
    model: nn.Module
    weights: str = "last"  # "best" or "last": which weights were loaded
    step: int = 0  # the step those weights were saved at


def _fits(value: Any, default: Any) -> bool:
    """Whether a stored value has the type of the field's default (an int may stand for a float; a bool never)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def model_config(record: RunRecord) -> ModelConfig:
    """The record's model config; a field of the wrong type is a one-line error, not a failure deep in a build."""
    name, given = record.name, record.model
    for field in fields(ModelConfig):
        if field.name in given and field.default is not None and not _fits(given[field.name], field.default):
            raise CheckpointError(f"run {name!r} stores model.{field.name} = {given[field.name]!r}, "
                                  f"not a {type(field.default).__name__}; retrain it with --overwrite")
        if isinstance(field.default, int) and not isinstance(field.default, bool) and given.get(field.name, 1) < 1:
            raise CheckpointError(f"run {name!r} stores model.{field.name} = {given[field.name]!r}, "
                                  "not a positive size; retrain it with --overwrite")
    config = ModelConfig.from_dict(given)
    if config.n_embd % config.n_head:
        raise CheckpointError(f"run {name!r} stores n_embd {config.n_embd}, not divisible by n_head {config.n_head}; "
                              "retrain it with --overwrite")
    return config


def lecture_names(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Weights saved by earlier releases, under the lecture's names: old runs are read, their files left as they are.

    Those releases saved each layer's heads as one fused tensor ``blocks.N.sa.qkv``
    (n_head, 3, head_size, n_embd), key, query, value per head, and without the
    ``tril`` masks; the lecture's gpt.py names every head's matrices and keeps its mask.
    """
    if not any(key.endswith(".sa.qkv") for key in state):
        return state
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.endswith(".sa.qkv"):
            renamed[key] = value
            continue
        prefix = key[: -len("qkv")]
        for h, head in enumerate(value):
            for kind, weight in zip(speed.KINDS, head):
                renamed[f"{prefix}heads.{h}.{kind}.weight"] = weight
            renamed[f"{prefix}heads.{h}.tril"] = torch.tril(torch.ones(config.block_size, config.block_size))
    return renamed


def rebuild(config: ModelConfig, state: dict[str, torch.Tensor]) -> LanguageModel:
    """The sped-up model (:mod:`tinyshake.models.speed`) with these weights, old names converted."""
    model = speed.build(config)
    model.load_state_dict(lecture_names(state, config))
    return model


def load(name: str, device: torch.device | str = "cpu", weights: str = "best") -> LoadedRun:
    """Rebuild a run's model from its verified ``weights`` ("best", or "last"); nothing in the files is executed.

    A run without a best (none saved yet) loads its last weights. While the run
    is training, a save may replace its files under the reader: the load then
    starts over from the fresh record.
    """
    if weights not in WEIGHTS:
        raise UsageError(f"unknown weights {weights!r}; choose best or last")

    def attempt(record: RunRecord) -> LoadedRun:
        kind = "best" if weights == "best" and "best" in record.files else "weights"
        config = model_config(record)
        data = read_file(record, kind)
        try:
            model = rebuild(config, safetensors.torch.load(data))
        except Exception as exc:  # safetensors raises its own error types for damaged files
            raise CheckpointError(f"checkpoint of run {name!r} does not load: {first_line(exc)}") from None
        step = record.best_step if kind == "best" and record.best_step is not None else record.step
        tokenizer = tokens.of_record(record)
        if tokenizer.vocab_size != config.vocab_size:
            raise CheckpointError(f"run {name!r} has a model of {config.vocab_size:,} tokens and a tokenizer of "
                                  f"{tokenizer.vocab_size:,}; retrain it with --overwrite")
        return LoadedRun(name, record, config, tokenizer, model, "best" if kind == "best" else "last", step)

    loaded = consistent(name, attempt)
    loaded.model.to(device)
    return loaded


def load_state(record: RunRecord) -> dict[str, Any]:
    """The training state (optimizer, RNG, step), read with ``weights_only=True``."""
    name, data = record.name, read_file(record, "state")
    try:
        state = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:  # a damaged pickle can raise nearly anything; report it in one line
        raise CheckpointError(f"training state of run {name!r} does not load: {first_line(exc)}") from None
    rng = state.get("rng") if isinstance(state, dict) else None
    if not (isinstance(rng, dict) and isinstance(rng.get("cpu"), torch.Tensor) and isinstance(state.get("step"), int)
            and isinstance(state.get("optimizer"), dict)):
        raise CheckpointError(f"training state of run {name!r} lacks its step, optimizer or RNG state")
    return state
