"""``tinyshake stages``: the lecture's ladder in one table, beside what you have trained.

It needs no tensors: parameter counts come from :func:`tinyshake.stages.parameter_count`,
by arithmetic, and the user's runs from their records.
"""

from __future__ import annotations

from rich.table import Table

from tinyshake import record, stages
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


@handle_errors
def stages_cmd() -> None:
    """The lecture's model ladder: what each stage adds, its size and settings, the lecture's val and yours."""
    trained = best_runs(record.readable())
    table = Table(title="The lecture's ladder (train one with `tinyshake train --model STAGE`, "
                        "all in order with `tinyshake ladder`)", title_justify="left")
    for column in ("stage", "what it adds", "params", "batch", "block", "width", "heads", "layers", "dropout",
                   "lr", "steps", "lecture val", "your best val", "bits/char", "run"):
        table.add_column(column, justify="left" if column in ("stage", "what it adds", "run") else "right",
                         overflow="fold")
    for stage in stages.STAGES.values():
        bits, val, run = trained.get(stage.name, (None, None, "-"))
        table.add_row(stage.name, stage.adds, f"{stages.parameter_count(stage):,}", *settings(stage).values(),
                      published(stage), f"{val:.4f}" if val is not None else "-",
                      f"{bits:.4f}" if bits is not None else "-", run)
    make_console().print(table)
