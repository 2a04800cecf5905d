"""``tinyshake plot RUN [RUN ...]``: the loss curves of several runs in one chart, from their records."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from tinyshake.store import record
from tinyshake.store.atomic import output_target, write_output
from tinyshake.cli._output import columns_env, handle_errors, make_console
from tinyshake.cli._render import Series, chart_svg, line_chart, loss_cell, metric_series, plain_charts
from tinyshake.errors import UsageError

SPLITS = ("train", "val", "both")
AXES = {"loss": "loss", "bpc": "bits per character"}
AXIS_HELP = "loss (per token, the lecture's) or bpc (bits per character, on which char and BPE runs compare)."
SVG_WIDTH = 100
SVG_WHAT = "the chart"
MAX_HEIGHT = 1000  # more rows than any screen; a million took minutes and gigabytes to draw


def select_runs(patterns: list[str], runs: list[record.RunStatus]) -> list[record.RunRecord]:
    """The records named by ``patterns`` (names or shell patterns such as ``ladder-*``), in the order given.

    A pattern that matches nothing is a usage error; with no patterns, the most recent run.
    """
    readable = [r.record for r in runs if r.readable and r.record is not None]
    if not patterns:  # the latest run, picked (and refused when there is none) as chat, eval and inspect pick it
        latest = record.resolve(None)
        return [r for r in readable if r.name == latest]
    chosen: list[record.RunRecord] = []
    for pattern in patterns:
        found = sorted((r for r in readable if fnmatch.fnmatchcase(r.name, pattern)), key=lambda r: r.created)
        if not found:
            for damaged in (r for r in runs if r.damaged and fnmatch.fnmatchcase(r.name, pattern)):
                raise record.Damaged(damaged.name, damaged.damaged)  # what is wrong, as eval and chat say
            raise UsageError(f"no run matches {pattern!r}; `tinyshake runs` lists them")
        chosen += [r for r in found if r not in chosen]
    return chosen


def _table(records: list[record.RunRecord], plain: bool) -> Table:
    """Each run's last train and val (of its final weights where it has them) and its best val.

    Cells are Text: a record's fields are data, never Rich markup.
    """
    table = Table("run", "stage", "steps", "last train", "last val", "best val", "best bits/char",
                  header_style="" if plain else None)
    for run in records:
        rows = run.evaluations()
        last = (rows[-1].train, rows[-1].val) if rows else (None, None)
        best_bpc = run.bits_per_char(run.best_val) if run.best_val is not None else None
        cells = (run.name, run.stage, str(run.step), *(loss_cell(value) for value in last), loss_cell(run.best_val),
                 loss_cell(best_bpc))
        table.add_row(*map(Text, cells))
    return table



def _curve(run: record.RunRecord, split: str, label: str, axis: str) -> Series:
    """A run's curve of ``split``: its per-token loss, or the same in bits per character (``axis`` bpc)."""
    series = metric_series(run.evaluations(), split, label)
    if axis == "loss":
        return series
    return Series(label, [(step, run.bits_per_char(loss, split)) for step, loss in series.points])


def _label(run: str, split: str, runs: int, chosen: str) -> str:
    """A curve's name in the legend: the run (the title names the split), the split (one run), or both."""
    if chosen == "both":
        return f"{run} {split}" if runs > 1 else split
    return run if runs > 1 else split


@handle_errors
def plot(
    runs: Annotated[Optional[list[str]], typer.Argument(
        metavar="RUN",
        help="Runs to draw, by name or pattern (`'ladder-*'`); default: the most recent run.")] = None,
    split: Annotated[str, typer.Option(help="Which curves: val, train or both.")] = "val",
    height: Annotated[int, typer.Option(help="Rows of the plot area.", min=3, max=MAX_HEIGHT)] = 16,
    svg: Annotated[Optional[Path], typer.Option(help="Also save the chart, in colour, as an SVG image.")] = None,
    axis: Annotated[str, typer.Option(help=AXIS_HELP)] = "loss",
) -> None:
    """Draw the loss curves of one or more runs against step, in one chart with a legend."""
    split = split.lower()
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; choose val, train or both")
    if axis not in AXES:
        raise UsageError(f"unknown axis {axis!r}; choose loss or bpc")
    if svg is not None:
        output_target(svg, SVG_WHAT)  # refused before anything is drawn
    records = select_runs(runs or [], record.list_runs())
    splits = ("train", "val") if split == "both" else (split,)
    series = [_curve(r, s, _label(r.name, s, len(records), split), axis) for r in records for s in splits]
    title = f"{'train and val' if split == 'both' else split} {AXES[axis]}"
    console, plain = make_console(), plain_charts()
    width = columns_env() or 100 if plain else min(console.width, 120)
    console.print(line_chart(series, width, height, plain=plain, title=title))
    console.print()
    console.print(_table(records, plain))
    if svg is not None:
        write_output(svg, chart_svg(line_chart(series, SVG_WIDTH, height, plain=False, title=title),
                                    title=f"tinyshake plot: {title}", width=SVG_WIDTH).encode(), SVG_WHAT)
        console.print(f"Saved the chart to {svg}", markup=False)
