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


@app.command("show")
@handle_errors
def show(name: Annotated[str, typer.Argument(help="Run to show.")]) -> None:
    """Show a run's settings, every evaluation it recorded, and its loss chart."""
    from tinyshake import record as records  # torch-free
    from tinyshake.cli._output import use_rich
    from tinyshake.cli._render import loss_chart

    run, console = records.read_record(name), make_console()
    settings = Table(show_header=False, box=None, title=f"run {name}", title_justify="left")
    settings.add_column(style="bold")
    settings.add_column()
    model = {k: v for k, v in run["model"].items() if k not in ("vocab_size",)}
    for key, value in (("stage", run.get("stage")), ("parameters", f"{run.get('parameters', 0):,}"),
                       ("steps", f"{run.get('step')}/{run.get('max_iters', '?')}"),
                       ("corpus", run.get("corpus", {}).get("name")), ("updated", run.get("updated")),
                       ("model", ", ".join(f"{k} {v}" for k, v in model.items())),
                       ("training", ", ".join(f"{k} {v}" for k, v in run["hyper"].items() if k not in ("stage", "run")))):
        settings.add_row(key, str(value))
    console.print(settings)
    metrics = Table("step", "train", "val", "elapsed", title="evaluations", title_justify="left")
    for row in run.get("metrics", []):
        metrics.add_row(str(row["step"]), f"{row['train']:.4f}", f"{row['val']:.4f}", f"{row.get('elapsed', 0):.1f}s")
    console.print(metrics)
    console.print(loss_chart(run.get("metrics", []), min(console.width, 100), 12, plain=not use_rich(), title="loss"))
