"""``tinyshake stages``: the lecture's ladder in one table, beside what you have trained.

It needs no tensors: parameter counts come from :func:`tinyshake.stages.parameter_count`,
by arithmetic, and the user's runs from their records.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from tinyshake import record, stages
from tinyshake.cli._fit import Col, fitted_table
from tinyshake.cli._output import handle_errors, make_console
from tinyshake.cli._stage_text import published, settings


def best_runs(runs: list[record.RunRecord]) -> dict[str, tuple[float, float, str]]:
    """For each stage the user has trained: the best val of its runs in bits per character (the scale on which
    char and BPE runs of a stage compare), that run's own val, and its name."""
    best: dict[str, tuple[float, float, str]] = {}
    for run in runs:
        val, stage = run.best_val, run.stage
        if val is None:
            continue
        bits = run.bits_per_char(val)
        if stage not in best or bits < best[stage][0]:
            best[stage] = (bits, val, run.name)
    return best


SETTINGS = ("batch", "block", "width", "heads", "layers", "dropout", "lr", "steps")
# on a narrow terminal the settings go first (the last first), then the size, then the run's name;
# `stages STAGE` shows them all
COLUMNS = (Col("stage", "left"), Col("what it adds", "left", wrap=True, room=24), Col("params", spare=2),
           *(Col(name, spare=3 + i) for i, name in enumerate(SETTINGS)),
           Col("lecture val", wrap=True), Col("your best val"), Col("bits/char"), Col("run", "left", spare=1))


@handle_errors
def stages_cmd(
    stage: Annotated[Optional[str], typer.Argument(
        metavar="STAGE", help="Show one stage in full: its settings, the lecture's val and your best.",
        show_default=False)] = None,
) -> None:
    """The lecture's model ladder: what each stage adds, its size and settings, the lecture's val and yours."""
    trained = best_runs(record.readable())
    if stage is not None:
        _detail(stages.get(stage), trained)
        return
    console = make_console()
    rows = []
    for each in stages.STAGES.values():
        bits, val, run = trained.get(each.name, (None, None, "-"))
        rows.append((each.name, each.adds, f"{stages.parameter_count(each):,}", *settings(each).values(),
                     published(each), f"{val:.4f}" if val is not None else "-",
                     f"{bits:.4f}" if bits is not None else "-", run))
    table = fitted_table(console, COLUMNS, rows,
                         title="The lecture's ladder (train one with `tinyshake train --model STAGE`, "
                               "all in order with `tinyshake ladder`)", title_justify="left")
    if len(table.columns) < len(COLUMNS):
        table.caption, table.caption_justify = "A stage's settings: tinyshake stages STAGE", "left"
    console.print(table)


def _detail(stage: stages.Stage, trained: dict[str, tuple[float, float, str]]) -> None:
    """One stage as a list of facts, each on its own line: nothing in it has to be dropped to fit."""
    bits, val, run = trained.get(stage.name, (None, None, None))
    rows = [("stage", stage.name), ("what it adds", stage.adds),
            ("parameters", f"{stages.parameter_count(stage):,}"),
            *((key, value) for key, value in settings(stage).items() if value != "-"),
            ("evaluates", f"every {stage.eval_interval} steps"),
            ("lecture val", published(stage)),
            ("your best val", f"{val:.4f}, {bits:.4f} bits/char (run {run})" if val is not None else "-"),
            ("train it", f"tinyshake train --model {stage.name}")]
    table = Table(show_header=False, box=None)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for key, value in rows:
        table.add_row(key, Text(value))
    make_console().print(table)
