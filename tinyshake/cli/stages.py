"""``tinyshake stages``: the lecture's ladder in one table, beside what you have trained.

It needs no tensors: parameter counts come from :func:`tinyshake.training.stages.parameter_count`,
by arithmetic, and the user's runs from their records.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from tinyshake.store import record
from tinyshake.training import stages
from tinyshake.cli._fit import Col, fitted_table
from tinyshake.cli._output import footnote, handle_errors, make_console
from tinyshake.cli._stage_text import ROUGH, ROUGH_NOTE, estimate, published, rough_words, settings


def best_runs(runs: list[record.RunRecord]) -> dict[str, record.RunRecord]:
    """For each stage the user has trained: its run of the best val in bits per character (the scale on which char
    and BPE runs of a stage compare).

    Only runs whose val was estimated as the lecture estimates it compete,
    where there are any: a noisier estimate (fewer batches) could beat them by
    luck alone. Where there are none, the best of the others stands, marked.
    """
    best: dict[str, record.RunRecord] = {}

    def rank(run: record.RunRecord) -> tuple[bool, float]:
        return not stages.lecture_estimate(run.eval_iters), run.bits_per_char(run.best_val or 0.0)

    for run in runs:
        held = best.get(run.stage)
        if run.best_val is not None and (held is None or rank(run) < rank(held)):
            best[run.stage] = run
    return best


def your_best(run: Optional[record.RunRecord]) -> str:
    return estimate(run.best_val, run.eval_iters) if run is not None and run.best_val is not None else "-"


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
        run = trained.get(each.name)
        bits = f"{run.bits_per_char(run.best_val):.4f}" if run is not None and run.best_val is not None else "-"
        rows.append((each.name, each.adds, f"{stages.parameter_count(each):,}", *settings(each).values(),
                     published(each), your_best(run), bits, run.name if run is not None else "-"))
    table = fitted_table(console, COLUMNS, rows,
                         title="The lecture's ladder (train one with `tinyshake train --model STAGE`, "
                               "all in order with `tinyshake ladder`)", title_justify="left")
    if len(table.columns) < len(COLUMNS):
        table.caption, table.caption_justify = "A stage's settings: tinyshake stages STAGE", "left"
    if any(row[-3].endswith(ROUGH) for row in rows):  # your best val
        footnote(console, table, ROUGH_NOTE)
    console.print(table)


def _detail(stage: stages.Stage, trained: dict[str, record.RunRecord]) -> None:
    """One stage as a list of facts, each on its own line: nothing in it has to be dropped to fit."""
    run = trained.get(stage.name)
    best = your_best(run)
    if run is not None and run.best_val is not None:
        bits = f"{run.bits_per_char(run.best_val):.4f} bits/char"
        rough = "" if not best.endswith(ROUGH) else f"; {rough_words(run.eval_iters)}"
        best = f"{best.removesuffix(ROUGH)}, {bits} (run {run.name}{rough})"
    rows = [("stage", stage.name), ("what it adds", stage.adds),
            ("parameters", f"{stages.parameter_count(stage):,}"),
            *((key, value) for key, value in settings(stage).items() if value != "-"),
            ("evaluates", f"every {stage.eval_interval} steps"),
            ("lecture val", published(stage)),
            ("your best val", best),
            ("train it", f"tinyshake train --model {stage.name}")]
    table = Table(show_header=False, box=None)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for key, value in rows:
        table.add_row(key, Text(value))
    make_console().print(table)
