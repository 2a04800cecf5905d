"""``tinyshake eval``: a trained run's loss over a whole split, and its bits per character."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tinyshake import checkpoint, corpus, device
from tinyshake.cli._output import handle_errors, make_console
from tinyshake.errors import UsageError
from tinyshake.evaluate import split_loss

SPLITS = ("train", "val")


def resolve_run(name: Optional[str]) -> str:
    """The named run, or the most recent one; with no runs at all, say how to make one."""
    name = name or checkpoint.latest()
    if name is None:
        raise UsageError("no trained runs yet; train one with `tinyshake train --model mini`")
    return name


@handle_errors
def eval_run(
    run: Annotated[Optional[str], typer.Argument(help="Run to evaluate (default: the most recent).")] = None,
    split: Annotated[str, typer.Option(help="train or val.")] = "val",
    device_name: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps.")] = "auto",
) -> None:
    """Score a run on every position of a split (deterministic), in nats and bits per character."""
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; choose train or val")
    name = resolve_run(run)
    loaded = checkpoint.load(name, device.resolve(device_name).device)
    corpus_name = loaded.record.get("corpus", {}).get("name", corpus.DEFAULT_CORPUS)
    data = corpus.load(corpus_name)
    if data.tokenizer.chars != loaded.tokenizer.chars:
        raise checkpoint.CheckpointError(f"run {name!r} has another vocabulary than corpus {corpus_name!r}")
    result = split_loss(loaded.model, getattr(data, split), loaded.config.block_size)
    make_console().print(
        f"{name}: {split} loss {result.loss:.4f} ({result.bits_per_char:.4f} bits/char) over {result.positions:,} positions"
    )
