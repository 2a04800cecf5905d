"""``tinyshake stages``: the lecture's ladder in one table, beside what you have trained.

It needs no tensors: parameter counts come from :func:`tinyshake.stages.parameter_count`,
by arithmetic, and the user's runs from their records.
"""

from __future__ import annotations

from rich.table import Table

from tinyshake import record, stages
from tinyshake.cli._output import handle_errors, make_console
from tinyshake.cli._stage_text import published, settings


def best_runs(runs: list[record.RunRecord]) -> dict[str, tuple[float, str]]:
    """For each stage the user has trained: the lowest best val of its runs, and that run's name."""
    best: dict[str, tuple[float, str]] = {}
    for run in runs:
        val, stage = run.best_val, run.stage
        if val is not None and (stage not in best or val < best[stage][0]):
            best[stage] = (val, run.name)
    return best


@handle_errors
def stages_cmd() -> None:
    """The lecture's model ladder: what each stage adds, its size and settings, the lecture's val and yours."""
    trained = best_runs(record.readable())
    table = Table(title="The lecture's ladder (train one with `tinyshake train --model STAGE`, "
                        "all in order with `tinyshake ladder`)", title_justify="left")
    for column in ("stage", "what it adds", "params", "batch", "block", "width", "heads", "layers", "dropout",
                   "lr", "steps", "lecture val", "your best val", "run"):
        table.add_column(column, justify="left" if column in ("stage", "what it adds", "run") else "right",
                         overflow="fold")
    for stage in stages.STAGES.values():
        val, run = trained.get(stage.name, (None, "-"))
        table.add_row(stage.name, stage.adds, f"{stages.parameter_count(stage):,}", *settings(stage).values(),
                      published(stage), f"{val:.4f}" if val is not None else "-", run)
    make_console().print(table)
