"""``tinyshake demo``: replay the lecture's self-attention steps in the terminal, computed live.

The numbers come from :mod:`tinyshake.demos`; this module only draws them. On a
terminal each demo is a Rich panel with coloured heatmaps and bars; piped or with
NO_COLOR it is the same transcript as plain text, with ASCII pictures.
"""

from __future__ import annotations

import sys
import textwrap
from typing import TYPE_CHECKING, Annotated, Iterator, Optional

import typer
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from tinyshake.cli import _render, _torch
from tinyshake.cli._output import handle_errors, make_console, use_rich

if TYPE_CHECKING:
    import torch

    from tinyshake import demos

PROMPT, MORE = ">>> ", "... "


def code_lines(code: str) -> Iterator[tuple[str, Text]]:
    """Code as a REPL transcript: ``>>>`` before a statement, ``...`` inside an indented block."""
    syntax = Syntax("", "python", theme="ansi_dark")
    for line in code.splitlines():
        prompt = MORE if line.startswith((" ", "\t")) else PROMPT
        highlighted = syntax.highlight(line)
        highlighted.rstrip()
        highlighted.no_wrap, highlighted.overflow = False, "fold"  # wrapped, never cut off with an ellipsis
        yield prompt, highlighted


def code_block(code: str, fancy: bool) -> Iterator[RenderableType]:
    """Code set apart from what it prints: on a terminal, a line that wraps goes on under the code, not under
    the prompt, so it cannot be read as output; piped, one transcript line per line of code."""
    lines = list(code_lines(code))
    if not lines:
        return
    if not fancy:
        yield from (Text.assemble(prompt, line) for prompt, line in lines)
        return
    table = Table.grid()
    table.add_column(style="dim", no_wrap=True)
    table.add_column()
    for prompt, line in lines:
        table.add_row(prompt, line)
    yield table


def value_text(value: demos.Value) -> Text:
    """A value exactly as torch (or Python) prints it; booleans in green or red on a terminal."""
    if isinstance(value, bool):
        return Text(str(value), style="bold green" if value else "bold red")
    return Text(str(value))


def _weights(value: demos.Value) -> torch.Tensor:
    """A picture's numbers, clamped to [0, 1] since pictures only show weights."""
    import torch

    assert isinstance(value, torch.Tensor), "pictures are drawn from tensors"
    return value.detach().float().clamp(0.0, 1.0)


def heatmap(value: demos.Value, fancy: bool) -> RenderableType:
    """Rows are queries, columns keys: coloured cells on a terminal, ASCII shades otherwise."""
    weights = _weights(value)
    columns = range(weights.shape[1])
    if not fancy:
        top = ("       " + "".join(f"{j:<2}" for j in columns)).rstrip()
        rows = [f"t={i:<3} |" + "".join(_render.shade(float(w)) * 2 for w in row) + "|"
                for i, row in enumerate(weights)]
        return Text("\n".join([top, *rows])) + Text("\n") + _render.legend(fancy)
    table = Table(box=None, padding=(0, 0), show_edge=False, title="query row x key column", title_justify="left")
    table.add_column("", style="dim", justify="right")
    for j in columns:
        table.add_column(f"{j}", justify="center", min_width=6)
    for i, row in enumerate(weights):
        table.add_row(f"t={i} ", *(Text(f"{float(w):.2f}", style=_render.blend(float(w))) for w in row))
    return table


def bars(value: demos.Value, fancy: bool) -> Text:
    """One bar per probability, labelled by its index."""
    values = _weights(value).tolist()
    return _render.bars([f"{i:>3}" for i in range(len(values))], values, fancy)


def pieces(value: demos.Value, fancy: bool) -> Text:
    """A list of token texts as the text they make, cut at the token boundaries."""
    assert isinstance(value, list), "token pictures are drawn from lists of token texts"
    return _render.token_pieces(value, fancy)


PICTURES = {"heatmap": heatmap, "bars": bars, "pieces": pieces}


def step_parts(step: demos.Step, fancy: bool) -> Iterator[RenderableType]:
    """The code that ran, the expression, its value and, when asked for, its picture."""
    if step.code:
        yield Text("")
    yield from code_block(step.code, fancy)
    yield from code_block(step.label, fancy)
    yield value_text(step.value)
    draw = PICTURES.get(step.view)
    if draw is not None:
        yield draw(step.value, fancy)


def seed_note(demo: demos.Demo) -> str:
    return f"seed {demo.seed}" if demo.seed is not None else "no random numbers"


def render(demo: demos.Demo, console: Console) -> None:
    """One demo: a panel on a terminal, a headed plain-text transcript otherwise."""
    fancy = use_rich(console.file)
    explanation = demo.explanation if fancy else textwrap.fill(
        demo.explanation, width=max(40, console.width), break_on_hyphens=False
    )
    parts: list[RenderableType] = [Text(explanation)]
    parts += [part for step in demo.steps for part in step_parts(step, fancy)]
    if fancy:
        title = Text.assemble((demo.name, "bold cyan"), " \u00b7 ", (demo.title, "bold"))
        console.print(Panel(Group(*parts), title=title, title_align="left", subtitle=seed_note(demo),
                            subtitle_align="right", border_style="blue", padding=(1, 2)))
        return
    console.print(f"== {demo.name}: {demo.title} ({seed_note(demo)}) ==", markup=False)
    console.print()
    for part in parts:
        console.print(part)


def show_list(console: Console) -> None:
    """One line per demo, then how to run them."""
    from tinyshake import demos

    width = max(len(name) for name in demos.DEMOS)
    for name, spec in demos.DEMOS.items():
        console.print(Text.assemble((f"{name:<{width}}", "bold cyan"), "  ", spec.summary))
    console.print()
    console.print(
        f"Run `tinyshake demo NAME`, or `tinyshake demo {demos.ALL}` for every one in order; "
        "--seed N redraws the random numbers.",
        markup=False,
    )


@handle_errors
def demo(
    name: Annotated[
        Optional[str], typer.Argument(
            metavar="NAME", help="The demo to run, or `all`; leave it out to list them.", show_default=False
        )
    ] = None,
    seed: Annotated[
        Optional[int], typer.Option(help="Redraw the random numbers from this seed, 0 to 2**64 - 1 "
                                         "(default: the notebook's).")
    ] = None,
    no_mask: Annotated[
        bool, typer.Option("--no-mask", help="attention: drop the causal mask, so every token sees every other.")
    ] = False,
) -> None:
    """Replay the lecture's steps from characters to self-attention, and the sequel's BPE, each computed live; no NAME lists them."""
    _torch.load()  # the demos compute with torch: seconds, said on a terminal
    from tinyshake import demos

    console = make_console()
    if name is None:
        show_list(console)
        return
    names = demos.select(name)
    for index, result in enumerate(demos.run(name, seed=seed, mask=not no_mask)):
        if index:
            console.print()
        render(result, console)
        if index + 1 < len(names) and not next_please(console, names[index + 1]):
            return


def next_please(console: Console, following: str) -> bool:
    """On a terminal, wait for Enter before the next demo, so each can be read before the next scrolls it away.

    Piped (or with stdin not a terminal) it goes straight on; end of input (Ctrl-D) ends the tour: False.
    """
    if not (use_rich(console.file) and sys.stdin.isatty()):
        return True
    try:
        input(f"Press Enter for the next demo ({following}), Ctrl-D to stop: ")
    except EOFError:
        console.file.write("\n")
        return False
    return True
