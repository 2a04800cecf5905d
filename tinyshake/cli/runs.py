"""``tinyshake runs``: list trained runs; ``tinyshake runs rm NAME`` deletes one."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from tinyshake import checkpoint, paths
from tinyshake.cli._output import handle_errors, make_console

app = typer.Typer(help="List trained runs, or delete one.", no_args_is_help=False)


def _row(record: dict) -> tuple[str, ...]:
    if record.get("corrupt"):
        return record["name"], "?", "-", "-", "-", "corrupt"
    best = record.get("best_val")
    return (
        record["name"],
        record.get("stage", "?"),
        f"{record.get('parameters', 0):,}",
        f"{record.get('step', 0)}/{record.get('max_iters', '?')}",
        f"{best:.4f}" if isinstance(best, (int, float)) else "-",
        str(record.get("updated", ""))[:16].replace("T", " "),
    )


@app.callback(invoke_without_command=True)
@handle_errors
def runs(ctx: typer.Context) -> None:
    """List trained runs: name, stage, parameters, steps, best val and date."""
    if ctx.invoked_subcommand is not None:
        return
    console = make_console()
    records = checkpoint.list_runs()
    if not records:
        console.print(f"No runs in {paths.runs_root()} yet; train one with `tinyshake train --model mini`.")
        return
    table = Table("name", "stage", "parameters", "steps", "best val", "date")
    for record in records:
        table.add_row(*_row(record))
    console.print(table)


@app.command("rm")
@handle_errors
def rm(name: Annotated[str, typer.Argument(help="Run to delete.")]) -> None:
    """Delete a trained run and its checkpoints."""
    checkpoint.remove(name)
    make_console().print(f"Deleted run {name}")
