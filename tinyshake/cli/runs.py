"""``tinyshake runs``: list trained runs; ``runs show NAME`` shows one; ``runs rm NAME`` deletes one.

All three read records through the torch-free :mod:`tinyshake.store.record`, so they start
without loading torch.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from tinyshake.store import paths, record, values
from tinyshake.training import stages
from tinyshake.cli._fit import Col, fitted_table
from tinyshake.cli._output import footnote, handle_errors, make_console
from tinyshake.cli._stage_text import ROUGH, ROUGH_NOTE, estimate, rough_words

app = typer.Typer(help="List trained runs, or delete one.", no_args_is_help=False)
# a narrow terminal leaves out the date first, then the parameters; names, steps and vals stay whole
COLUMNS = (Col("name", "left"), Col("stage", "left"), Col("parameters", spare=2), Col("steps"),
           Col("best val", wrap=True), Col("bits/char"), Col("date", "left", wrap=True, spare=3),
           Col("status", "left", wrap=True))


def _status(run: record.RunStatus) -> str:
    pid = run.holder
    held = f"in use by process {pid}" if pid else "in use" if pid is not None else ""
    if run.damaged:
        return f"damaged: {run.damaged}" + (f" ({held})" if held else "")
    if run.record is None:
        return f"no checkpoint yet ({held})"
    return held or "ok"


def _row(run: record.RunStatus) -> tuple[str, ...]:
    stored = run.record
    if stored is None:  # damaged, or a training before its first save: nothing in it can be trusted
        return run.name, "-", "-", "-", "-", "-", "-", _status(run)
    best, at = stored.best_val, stored.best_step
    return (
        run.name,
        stored.stage,
        f"{stored.parameters:,}" if stored.parameters is not None else "-",
        _steps(stored),
        (estimate(best, stored.eval_iters) + (f" @{at}" if at is not None else "")) if best is not None else "-",
        f"{stored.bits_per_char(best):.4f}" if best is not None else "-",
        when(stored.updated),
        _status(run),
    )


def when(stamp: str) -> str:
    """A record's timestamp to the minute, ``2026-12-07 17:36``: the same in ``runs`` and ``runs show``."""
    return stamp[:16].replace("T", " ")


def words(value: object) -> str:
    """A setting's value as a reader says it: on/off for a flag, "none" for no value."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def trained_on(run: record.RunRecord) -> str:
    """Where and in what precision the run trained: the device and dtype that ``auto`` resolved to."""
    asked = run.hyper.get("device")
    device = run.device or f"{asked} (which device it resolved to was not recorded)"
    threads = f", {run.threads} threads" if run.threads and run.device == "cpu" else ""
    return f"{device}, {run.dtype or run.hyper.get('dtype')}{threads}"


def _budget(run: record.RunRecord) -> Optional[float]:
    """The run's time budget in seconds of training, or None."""
    budget = run.hyper.get("time_budget")
    return float(budget) if values.number(budget) else None


def budget_ended(run: record.RunRecord) -> Optional[float]:
    """The time budget that ended ``run`` (it trained all of it before its last step), or None."""
    budget = _budget(run)
    if budget is None or run.train_seconds < budget:
        return None
    return budget if run.max_iters is None or run.step < run.max_iters else None


def _steps(run: record.RunRecord) -> str:
    """Steps done of the planned ones; for a run its time budget ended, the steps it reached in it; for one that
    trains until its budget ends (no step count was asked for), the steps so far and the seconds of it used."""
    budget = budget_ended(run)
    if budget is not None:
        return f"{run.step} in {budget:g} s"
    budget = _budget(run)
    if budget is not None and (run.max_iters is None or run.max_iters >= stages.UNTIL_BUDGET):
        return f"{run.step} in {run.train_seconds:.0f}/{budget:g} s"
    return f"{run.step}/{_or_unknown(run.max_iters)}"


def _or_unknown(value: object) -> str:
    return "?" if value is None else str(value)



@app.callback(invoke_without_command=True)
@handle_errors
def runs(ctx: typer.Context) -> None:
    """List trained runs: name, stage, parameters, steps, best val (train's estimate, at its step) and the same in
    bits per character (on which char and BPE runs compare), date, status.

    A run whose record or files are damaged is listed with the reason; one in
    use by a training shows that process.
    """
    if ctx.invoked_subcommand is not None:
        return
    console = make_console()
    found = record.list_runs()
    if not found:
        console.print(f"No runs in {paths.runs_root()} yet; train one with `tinyshake train --model mini`.",
                      markup=False)
        return
    rows = [_row(run) for run in found]
    table = fitted_table(console, COLUMNS, [tuple(map(Text, row)) for row in rows])  # data, never Rich markup
    if any(ROUGH in row[4] for row in rows):
        footnote(console, table, ROUGH_NOTE)
    console.print(table)


@app.command("rm")
@handle_errors
def rm(name: Annotated[str, typer.Argument(help="Run to delete.")]) -> None:
    """Delete a trained run and its checkpoints (refused while a training holds it)."""
    record.remove(name)
    make_console().print(f"Deleted run {name}", markup=False)


def _best(run: record.RunRecord) -> str:
    """The best val, its step, and, where it was estimated otherwise than the lecture's, why it does not compare."""
    best, at = run.best_val, run.best_step
    if best is None or at is None:
        return "-"
    rough = "" if stages.lecture_estimate(run.eval_iters) else f"; {rough_words(run.eval_iters)}"
    return f"{best:.4f} at step {at} ({run.bits_per_char(best):.4f} bits/char{rough})"


def _settings(run: record.RunRecord) -> list[tuple[str, str]]:
    """What a run is: its stage, size, progress, best, corpus, model shape and training settings."""
    budget = budget_ended(run)
    model = {k: v for k, v in run.model.items() if k != "vocab_size"}
    if model.get("arch") == "bigram":  # a lookup table: the GPT's shape fields are defaults it never uses
        model = {k: model[k] for k in ("arch", "block_size") if k in model}
    per_token = f", {run.chars_per_token[1]:.2f} characters a token in val" if run.tokenizer != "char" else ""
    return [
        ("stage", run.stage), ("parameters", f"{run.parameters or 0:,}"),
        ("steps", _steps(run) if budget is None else
         f"{run.step}: complete, ended by its time budget ({budget:g} s of training)"),
        ("best val", _best(run)),
        ("tokenizer", f"{run.tokenizer}{per_token}"),
        ("corpus", str(run.corpus_name)), ("trained on", trained_on(run)), ("updated", when(run.updated)),
        ("model", ", ".join(f"{k} {words(v)}" for k, v in model.items())),
        ("training", ", ".join(f"{k} {_setting(k, v)}" for k, v in run.hyper.items()
                               if k not in ("stage", "run", "device", "dtype"))),
    ]


def _setting(key: str, value: object) -> str:
    """A training setting as a reader says it; a budget run's step bound, which no run reaches, as what it means."""
    if key == "max_iters" and isinstance(value, int) and value >= stages.UNTIL_BUDGET:
        return "none (until the time budget)"
    return words(value)


@app.command("show")
@handle_errors
def show(name: Annotated[str, typer.Argument(help="Run to show.")]) -> None:
    """Show a run's settings, every evaluation it recorded (its final weights' last), and its loss chart."""
    from tinyshake.cli._render import loss_cell, loss_chart, plain_charts

    run, console = record.read_record(record.resolve(name)), make_console()  # an unknown name lists the runs
    settings = Table(show_header=False, box=None, title=f"run {name}", title_justify="left")
    settings.add_column(style="bold")
    settings.add_column()
    for key, value in _settings(run):
        settings.add_row(key, Text(value))
    console.print(settings)
    metrics = Table(title="evaluations", title_justify="left")
    for column in ("step", "train", "val", "val bits/char", "elapsed"):
        metrics.add_column(column, justify="right")  # numbers line up by their digits
    rows = run.evaluations()
    for row in rows:
        step = f"final {row.step}" if row.final else str(row.step)
        metrics.add_row(step, loss_cell(row.train), f"{row.val:.4f}", f"{run.bits_per_char(row.val):.4f}",
                        f"{row.elapsed or 0:.1f}s")
    console.print(metrics)
    console.print(loss_chart(rows, min(console.width, 100), 12, plain=plain_charts(), title="loss"))
