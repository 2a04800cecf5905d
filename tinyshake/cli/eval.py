"""``tinyshake eval``: a trained run's loss over a whole split, and its bits per character."""

from __future__ import annotations

import contextlib
import sys
from typing import Annotated, Callable, Iterator, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tinyshake.store import record
from tinyshake.cli import _torch
from tinyshake.cli._options import Weights, WeightsOpt
from tinyshake.cli._output import handle_errors, make_console, use_rich
from tinyshake.errors import UsageError

SPLITS = ("train", "val")


@contextlib.contextmanager
def scoring_bar(label: str) -> Iterator[Callable[[int, int], None]]:
    """A transient bar on stderr on a terminal (positions scored of the split's), and nothing in a pipe."""
    if not use_rich(sys.stderr):
        yield lambda done, total: None
        return
    with Progress(TextColumn(label), BarColumn(bar_width=20), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=make_console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@handle_errors
def eval_run(
    run: Annotated[Optional[str], typer.Argument(help="Run to evaluate (default: the most recent).")] = None,
    split: Annotated[str, typer.Option(help="train or val.")] = "val",
    weights: WeightsOpt = Weights.best,
    corpus_name: Annotated[Optional[str], typer.Option(
        "--corpus", help="Score on this cached corpus (default: the run's own; same characters needed).")] = None,
    device_name: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps.")] = "auto",
) -> None:
    """Score a run on every position of a split (deterministic): the full split's loss, in nats and bits per character.

    Training's "val" is an estimate from random batches; this is the whole
    split, every position once, so it is called "full val loss".
    """
    split = split.lower()
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; choose train or val")
    name = record.resolve(run)
    _torch.load()  # only once there is something to score
    from tinyshake import checkpoint, corpus
    from tinyshake.training import device
    from tinyshake.evaluate import corpus_notice, split_loss

    loaded = checkpoint.load(name, device.resolve(device_name).device, weights.value)
    data = corpus.load(corpus_name or loaded.record.corpus_name or corpus.DEFAULT_CORPUS)
    notice = corpus_notice(loaded, data)
    if notice:
        print(f"Note: {notice}", file=sys.stderr, flush=True)
    if loaded.tokenizer.kind != data.tokenizer.kind:  # a BPE run reads the text in its own tokens
        data = data.with_tokenizer(loaded.tokenizer)
    with scoring_bar(f"scoring {name} on the {split} split") as progress:
        result = split_loss(loaded.model, getattr(data, split), loaded.config.block_size, data.tokenizer, progress)
    covered = f" ({result.characters:,} characters)" if result.characters != result.positions else ""
    make_console().print(
        f"{name} ({loaded.weights} weights, step {loaded.step}): full {split} loss {result.loss:.4f} "
        f"({result.bits_per_char:.4f} bits/char) over {result.positions:,} positions{covered} of corpus {data.name!r}",
        markup=False,
    )
