"""``tinyshake sample RUN [RUN ...]``: several runs continue one prompt with one seed, side by side.

A command of its own rather than ``chat --compare``: chat is a conversation with
one model, this is one look at many, and its runs are positional like every
other command's. Each run draws from :func:`tinyshake.sampling.showcase`, so
the same seed gives every model the same random numbers and the difference in
the text is the difference in the models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tinyshake.store import record
from tinyshake.cli import _torch
from tinyshake.cli._options import Weights, WeightsOpt
from tinyshake.cli._output import handle_errors, make_console, use_rich
from tinyshake.errors import UsageError

MIN_COLUMN = 24  # narrower than this, the runs are shown one under another instead of side by side


@dataclass(frozen=True)
class Continuation:
    """One run's continuation of the prompt, and what the heading says of the run."""

    run: str
    about: str  # stage and val, e.g. "mini, val 1.8231"
    text: str


def heading(found: Continuation) -> str:
    return f"{found.run} ({found.about})"


def continue_prompt(name: str, prompt: str, chars: int, seed: int, weights: Weights) -> Continuation:
    """Load ``name`` on the CPU and sample its continuation of ``prompt`` (the start token when empty)."""
    from tinyshake import checkpoint, sampling
    from tinyshake.tokens import UnknownCharacterError

    loaded = checkpoint.load(name, "cpu", weights=weights.value)
    try:
        context = loaded.tokenizer.encode(prompt)[-loaded.config.block_size:] or [sampling.START_TOKEN]
    except UnknownCharacterError as exc:
        raise UsageError(f"run {name!r}: {exc}") from None
    text = loaded.tokenizer.decode(sampling.showcase(loaded.model, context, chars, seed))
    val = loaded.record.best_val if weights is Weights.best else loaded.record.last_val
    about = loaded.record.stage + (f", val {val:.4f}" if val is not None else "")
    return Continuation(name, about, text)


def side_by_side(found: list[Continuation], prompt: str) -> Table:
    """One column per run, the prompt leading each, so that the texts are read across."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, expand=True)
    for each in found:
        table.add_column(Text(heading(each)), ratio=1, overflow="fold")
    table.add_row(*(Text.assemble((prompt, "dim"), each.text) for each in found))
    return table


def show(console: Console, found: list[Continuation], prompt: str) -> None:
    """Side by side where every column gets room on a terminal; one under another otherwise, and in a pipe."""
    if use_rich(console.file) and (console.width - 3 * len(found)) // len(found) >= MIN_COLUMN:
        console.print(side_by_side(found, prompt))
        return
    for index, each in enumerate(found):
        if index:
            console.print()
        console.print(Text(f"== {heading(each)} ==", style="bold"))
        console.print(Text.assemble((prompt, "dim"), each.text))


@handle_errors
def sample_cmd(
    runs: Annotated[list[str], typer.Argument(
        metavar="RUN", help="The runs to compare, in the order to show them (`tinyshake runs` lists them).",
        show_default=False)],
    prompt: Annotated[str, typer.Option(
        "--prompt", "-p", help="The text every run continues (\\n is a newline; default: the start token, a "
                               "newline).")] = "",
    chars: Annotated[int, typer.Option(help="Characters each run writes.", min=1, max=2000)] = 200,
    seed: Annotated[Optional[int], typer.Option(
        help="The random numbers every run draws (default: the one train's and ladder's samples use).",
        show_default=False)] = None,
    weights: WeightsOpt = Weights.best,
) -> None:
    """Several runs continue one prompt with the same random numbers, side by side: see what each stage learned."""
    names = [record.resolve(name) for name in runs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UsageError(f"run {repeated[0]!r} is named twice")
    _torch.load()
    from tinyshake import sampling

    seed = sampling.check_seed(sampling.SHOWCASE_SEED if seed is None else seed)
    text = prompt.replace("\\n", "\n")
    found = [continue_prompt(name, text, chars, seed, weights) for name in names]
    show(make_console(), found, text)
