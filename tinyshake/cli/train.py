"""``tinyshake train``: train one stage of the ladder with live progress, then stream a sample.

The core decides (:func:`tinyshake.plan.make_plan`) and trains
(:func:`tinyshake.train.train`); this module renders both. It imports no torch
at module level, so ``tinyshake train --help`` answers at once.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, Protocol

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from tinyshake import paths, stages
from tinyshake.atomic import write_bytes
from tinyshake.cli import _torch
from tinyshake.cli._output import handle_errors, make_console, use_rich
from tinyshake.cli._render import loss_chart, plain_charts
from tinyshake.cli.stages import run_header
from tinyshake.errors import TinyshakeError, UsageError

if TYPE_CHECKING:
    import torch

    from tinyshake import corpus
    from tinyshake import train as core
    from tinyshake.plan import Plan

CPU_FLOPS_GUESS = 60e9  # sustained training FLOP/s on a laptop CPU, for the time estimates below
GPU_FLOPS_GUESS = 100e12  # more than any GPU sustains here: an estimate that only absurd evaluations exceed
LOSS_FLOPS_PER_LOGIT = 15  # softmax and cross-entropy per logit, training: what a bigram's step costs
ENDLESS_EVALUATION_SECONDS = 24 * 3600  # an evaluation estimated at more than a day is a typo, refused
ASK_ABOVE_SECONDS = 30 * 60  # a gpt run on a CPU this long asks before it starts (on a terminal)
INTERRUPT_EXIT = 130  # what shells report for a process stopped by Ctrl-C
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
CHART_ROWS, CHART_WIDTH = 8, 100  # the live loss chart under the table: small, so the table keeps its room
CHART_MIN_TERMINAL = 30  # terminal rows below which the live view leaves the chart out


def _say_now(text: str) -> None:
    """Write to stderr from a signal handler: one raw write, which cannot re-enter a buffered stream."""
    try:
        os.write(sys.stderr.fileno(), text.encode())
    except (OSError, ValueError):  # no real file descriptor (an in-process test runner): stay silent
        pass


class View(Protocol):
    """What run_training needs from an output style, so the loop is written once for both."""

    def __enter__(self) -> "View": ...
    def __exit__(self, *exc: object) -> None: ...
    def started(self, event: core.Started) -> None: ...
    def stepped(self, event: core.Stepped) -> None: ...
    def evaluated(self, event: core.Evaluated) -> None: ...
    def saved(self, event: core.Saved) -> None: ...
    def stopping(self, why: str) -> None: ...
    def note(self, text: str) -> None: ...


class StopFlag:
    """Ctrl-C, SIGTERM or SIGHUP asks the loop to finish its step and save; a second one stops at once.

    Batch schedulers send SIGTERM (and a closed terminal SIGHUP) before they
    kill, so those save exactly like Ctrl-C. The exit code is the shell's for
    the first signal: 130, 143 or 129. Once that checkpoint is saved, more
    signals are ignored: all that is left is printing how to resume.
    """

    def __init__(self, view: View) -> None:
        self.signum: Optional[int] = None
        self.saved = False
        self.view = view

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)

    def __call__(self, signum: int, frame: Any) -> None:
        if self.saved:
            return
        if self.requested:
            raise KeyboardInterrupt
        self.signum = signum
        self.view.stopping("Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name)


def _refuse_data_home(path: Path) -> None:
    """A metrics file must not land among the runs or corpora, where it could replace a checkpoint."""
    where = path.resolve()
    for root in (paths.runs_root(), paths.corpus_root()):
        if where == root.resolve() or root.resolve() in where.parents:
            raise UsageError(f"cannot write metrics to {path}: it is inside tinyshake's data folder {root}; "
                             "choose a path elsewhere")


class MetricsLog:
    """Every evaluation as one JSON line. A new run starts the file afresh; a resumed run adds to it.

    The whole file is rewritten atomically at each evaluation (there are few),
    so a crash never leaves half a line; a bad path is refused before training.
    The evaluation of the final weights, beyond the lecture's, carries ``"final": true``.
    """

    def __init__(self, path: Optional[Path], resume: bool) -> None:
        self.path = path
        self.lines: list[str] = []
        if path is None:
            return
        if path.is_dir() or not path.parent.is_dir():
            raise UsageError(f"cannot write metrics to {path}: its folder does not exist or it is a folder")
        _refuse_data_home(path)
        if resume and path.is_file():
            try:
                self.lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
            except OSError as exc:
                raise UsageError(f"cannot read metrics file {path}: {exc.strerror or exc}") from None

    def write(self, event: core.Evaluated) -> None:
        if self.path is None:
            return
        row: dict[str, Any] = {"step": event.step, "train": event.train, "val": event.val,
                               "elapsed": round(event.elapsed, 3)}
        if event.final:
            row["final"] = True
        self.lines.append(json.dumps(row) + "\n")
        write_bytes(self.path, "".join(self.lines).encode())


def lecture_line(event: core.Evaluated) -> str:
    """The lecture's log line, e.g. ``step 300: train loss 2.8110, val loss 2.8249``."""
    return f"step {event.step}: train loss {event.train:.4f}, val loss {event.val:.4f}"


def training_line(event: core.Started, title: str) -> str:
    """What trains where, e.g. ``Training run mini-2: mini (209,729 parameters; ...) on cpu, 2 threads (...)``."""
    resuming = f", resuming at step {event.start_step}" if event.start_step else ""
    where = f"{event.device} × {event.world_size} processes" if event.world_size > 1 else event.device
    threads = f", {event.threads}" if event.threads else ""
    return f"Training run {event.config.run}: {title} on {where}{threads}{resuming}"


def rethreaded_line(event: core.Rethreaded) -> str:
    return f"after step {event.step}: now {event.choice.describe()}"


def final_line(event: core.Evaluated) -> str:
    """The final weights' evaluation, worded so that it can never be mistaken for a lecture line."""
    return f"final weights after step {event.step}: train loss {event.train:.4f}, val loss {event.val:.4f}"


def budget_line(finished: core.Finished, budget: float) -> str:
    return f"the time budget ({budget:g} s of training) ended the run at step {finished.step}"


class PlainView:
    """Non-TTY output (and --quiet): the lecture's lines and nothing else on stdout; notes go to stderr."""

    def __init__(self, console: Console, quiet: bool) -> None:
        self.console, self.quiet = console, quiet

    def __enter__(self) -> "PlainView":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def started(self, event: core.Started) -> None:
        for notice in event.notices:
            print(f"note: {notice}", file=sys.stderr)
        if not self.quiet:  # on stderr: stdout stays the lecture's log
            title, details = run_header(event.config, event.parameters)
            print(f"{training_line(event, title)}\n  {details}", file=sys.stderr, flush=True)

    def stepped(self, event: core.Stepped) -> None:
        return None

    def evaluated(self, event: core.Evaluated) -> None:
        if self.quiet:
            return
        if event.final:  # stdout stays exactly the lecture's log
            print(final_line(event), file=sys.stderr)
        else:
            self.console.print(lecture_line(event), markup=False)

    def saved(self, event: core.Saved) -> None:
        return None

    def note(self, text: str) -> None:
        print(f"note: {text}", file=sys.stderr, flush=True)

    def stopping(self, why: str) -> None:
        _say_now(f"{why}: stopping after this step and saving a checkpoint (press Ctrl-C again to abort)...\n")


class SilentView(PlainView):
    """Every rank but 0 of a data-parallel run: it trains in step, rank 0 does the talking."""

    def __init__(self, console: Console) -> None:
        super().__init__(console, quiet=True)

    def started(self, event: core.Started) -> None:
        return None

    def stopping(self, why: str) -> None:
        return None


class RichView:
    """TTY output: a loss table that grows above a progress bar with speed and the recent loss.

    The bar counts steps out of max_iters, or with a time budget the seconds of
    training out of the budget, since that is what ends such a run. The live
    region shows only as many table rows as fit the terminal (a taller one could
    not be redrawn in place); when training ends it is replaced by the whole
    table, which then stays in the scrollback.
    """

    def __init__(self, console: Console, config: core.TrainConfig) -> None:
        self.console, self.config = console, config
        budget = config.time_budget
        counter = TextColumn("{task.completed:.0f}/{task.total:.0f} s") if budget else MofNCompleteColumn()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), counter,
            TextColumn("{task.fields[its]:>7.1f} it/s"), TextColumn("{task.fields[tps]:>9,.0f} tok/s"),
            TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console,
        )
        self.task = self.progress.add_task(config.stage, total=budget or config.max_iters, its=0.0, tps=0.0, loss="-")
        self.rows: list[tuple[str, ...]] = []
        self.metrics: list[dict[str, float]] = []  # this session's evaluations, for the chart
        self.chart: Optional[Text] = None  # redrawn at each evaluation only, so steps never wait for it
        self.plain_chart = plain_charts()  # markers, not braille, without colour
        self.last_val: Optional[float] = None
        self.window: Optional[torch.Tensor] = None  # sum of the losses since the bar last showed one
        self.window_steps = 0
        self.last_show = 0.0
        self.mark = (0, time.perf_counter())
        self.world_size = 1  # processes training data-parallel: tokens per step scale with it
        self.live_on = False
        self.begun = False  # nothing to leave on screen if training never started (a load error)
        self.live = Live(console=console, refresh_per_second=8, transient=True, get_renderable=self._render)

    def _table(self, rows: list[tuple[str, ...]]) -> Table:
        table = Table(title=f"{self.config.stage} · run {self.config.run}", title_justify="left")
        for column in ("step", "train", "val", "Δ val", "elapsed"):
            table.add_column(column, justify="right")
        if len(rows) < len(self.rows):
            table.add_row("…", "", "", "", "")
        for row in rows:
            table.add_row(*row)
        return table

    def _render(self) -> RenderableType:
        chart = self.chart if self.console.size.height >= CHART_MIN_TERMINAL else None
        room = max(1, self.console.size.height - 9 - (CHART_ROWS + 4 if chart else 0))  # title, header, borders,
        # "…" row, progress bar, prompt; the chart's rows, axis, scale and legend
        return Group(self._table(self.rows[-room:]), *([chart] if chart else []), self.progress)

    def __enter__(self) -> "RichView":
        self.live.start()
        self.live_on = True
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the live region and leave the whole table (and the bar's last state) on the screen."""
        if self.live_on:
            self.live_on = False
            self.live.stop()
            if self.begun:
                self.console.print(Group(self._table(self.rows), *([self.chart] if self.chart else []), self.progress))

    def started(self, event: core.Started) -> None:
        self.begun = True
        for notice in event.notices:
            self.console.print(Text.assemble(("note: ", "yellow"), notice))
        self.world_size = event.world_size
        title, details = run_header(event.config, event.parameters)
        self.console.print(Text.assemble(training_line(event, title), "\n  ", (details, "dim")))
        if not self.config.time_budget:
            self.progress.update(self.task, completed=event.start_step)
        self.mark = (event.start_step, time.perf_counter())

    def stepped(self, event: core.Stepped) -> None:
        """Show speed and the mean loss of the steps since the last update, a few times a second.

        Losses are summed on the device and read once per update, so the bar
        costs no synchronisation per step.
        """
        self.window = event.loss.float() if self.window is None else self.window + event.loss.float()
        self.window_steps += 1
        now = time.perf_counter()
        budget = self.config.time_budget
        last = event.step >= self.config.max_iters or (budget is not None and event.trained >= budget)
        if now - self.last_show < 0.25 and not last:  # the last step always shows: the bar ends full
            return
        loss = self.window.item() / self.window_steps
        self.window, self.window_steps = None, 0
        steps, seconds = event.step - self.mark[0], now - self.mark[1]
        its = steps / seconds if seconds > 0 else 0.0
        done = min(event.trained, budget) if budget else event.step
        self.progress.update(self.task, completed=done, its=its, loss=f"{loss:.4f}",
                             tps=its * self.config.batch_size * self.config.block_size * self.world_size)
        self.last_show = now

    def evaluated(self, event: core.Evaluated) -> None:
        delta = "" if self.last_val is None else f"{event.val - self.last_val:+.4f}"
        step = f"final {event.step}" if event.final else str(event.step)
        self.rows.append((step, f"{event.train:.4f}", f"{event.val:.4f}", delta, f"{event.elapsed:.1f}s"))
        self.last_val = event.val
        self.metrics.append({"step": event.step, "train": event.train, "val": event.val})
        if len(self.metrics) > 1:
            self.chart = loss_chart(self.metrics, min(self.console.width, CHART_WIDTH), CHART_ROWS, plain=self.plain_chart)

    def saved(self, event: core.Saved) -> None:
        """Measure speed from here: evaluating and saving are not training."""
        self.mark = (event.step, time.perf_counter())

    def note(self, text: str) -> None:
        self.console.print(Text.assemble(("note: ", "yellow"), text))

    def stopping(self, why: str) -> None:
        self.progress.update(self.task, description=f"{self.config.stage} [yellow]stopping ({why})…[/]")


def _duration(seconds: float) -> str:
    """A rough duration for people: seconds, minutes, hours or days."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 72 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:,.0f} days"


def confirm_slow_run(plan: Plan, yes: bool) -> None:
    """Warn (on stderr) before the gpt stage on a CPU, with an estimate; ask on a terminal if it is long.

    On a CPU the gpt stage's evaluations (2 x 200 batches each) can cost more
    than its training steps, so the warning says how much and how to cut it.
    """
    from tinyshake import train as core
    from tinyshake.model import flops_per_token

    config = plan.config
    if config.stage not in stages.GPU_SIZED or plan.device.device.type != "cpu":
        return
    per_step = flops_per_token(config.model) * config.batch_size * config.block_size / CPU_FLOPS_GUESS
    seconds = core.estimate_seconds(config, per_step)
    evals = core.evaluation_steps(config) * per_step
    print(f"Warning: the gpt stage is slow on a CPU; this run needs roughly {_duration(seconds)} here, "
          f"{_duration(evals)} of it in evaluations of {config.eval_iters} batches per split (a smaller "
          "--eval-iters, such as 20, makes them cheaper; or try --model mini, or a GPU).", file=sys.stderr)
    if yes or seconds < ASK_ABOVE_SECONDS or not (sys.stdin.isatty() and sys.stdout.isatty()):
        return
    if not typer.confirm("Train it anyway?", default=False):
        raise typer.Exit(1)


def _refuse_endless_evaluation(plan: Plan, yes: bool) -> None:
    """Refuse in one line an ``--eval-iters`` that would make each evaluation take more than a day.

    ``--eval-iters 1000000000`` on mini would evaluate for months before the
    first step. The estimate counts FLOPs at a rate above what the device
    sustains, so it errs short and only absurd values are refused; ``--yes``
    runs them anyway.
    """
    from tinyshake import train as core
    from tinyshake.model import flops_per_token

    config, lecture = plan.config, core.TrainConfig.eval_iters
    rate = CPU_FLOPS_GUESS if plan.device.device.type == "cpu" else GPU_FLOPS_GUESS
    per_token = flops_per_token(config.model) + LOSS_FLOPS_PER_LOGIT * config.model.vocab_size
    seconds = core.steps_per_evaluation(config) * per_token * config.batch_size * config.block_size / rate
    at_lecture = seconds * lecture / config.eval_iters  # the same evaluation at the lecture's count
    if yes or seconds <= ENDLESS_EVALUATION_SECONDS or at_lecture > ENDLESS_EVALUATION_SECONDS:
        return  # endless even at the lecture's count: the model's size is what to lower (checked as it is built)
    raise UsageError(f"each evaluation of {config.eval_iters:,} batches per split would take at least "
                     f"{_duration(seconds)} on {plan.device.device.type}; lower --eval-iters (the lecture uses "
                     f"{lecture}), or pass --yes to run it anyway")


def _resume_hint(run: str) -> str:
    return f"tinyshake train --run {run} --resume"


def _complete(plan: Plan) -> None:
    """``--resume`` of a run that has trained all its steps: nothing to do, which is a success (exit 0).

    A scheduler that requeues a finished job with ``--resume`` must not see it fail.
    """
    if not plan.steps_done:  # the time budget, not max_iters, is what is used up
        trained, budget = plan.trained_seconds, plan.config.time_budget or 0.0
        more = max(2 * budget, math.ceil(trained) + 1)
        print(f"run {plan.run!r} is complete: it has trained {trained:.1f} s, its time budget being {budget:g} s, "
              f"and stopped at step {plan.start_step}; to train it further, give a larger --time-budget "
              f"({_resume_hint(plan.run)} --time-budget {more:g})", file=sys.stderr)
        return
    more = max(2 * plan.start_step, plan.start_step + 1)
    print(f"run {plan.run!r} is complete: it has trained {plan.start_step} of {plan.config.max_iters} steps; "
          f"to train it further, give a larger --max-iters ({_resume_hint(plan.run)} --max-iters {more})",
          file=sys.stderr)


def stream_sample(model: Any, tokenizer: corpus.CharTokenizer, chars: int, out: Any = None) -> None:
    """Stream ``chars`` sampled characters from a context of token 0, printing the context as the lecture does."""
    from tinyshake import sampling

    out = out or sys.stdout
    context = [sampling.START_TOKEN]
    out.write(tokenizer.decode(context))
    for token in sampling.generate(model, context, sampling.SamplingSettings(max_new_tokens=chars)):
        out.write(tokenizer.decode([token]))
        out.flush()
    out.write("\n")
    out.flush()


def _summary(console: Console, event: core.Finished, params: int, run: str, budget: Optional[float]) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    rows = [("parameters", f"{params:,}"), ("steps", str(event.step)), ("wall time", f"{event.elapsed:.1f}s")]
    if event.budget_ended and budget:
        rows.append(("ended by", budget_line(event, budget)))
    if event.final is not None:
        rows.append(("final val", f"{event.final.val:.4f} (step {event.final.step})"))
    if event.best_val is not None:
        rows.append(("best val", f"{event.best_val:.4f} (step {event.best_step})"))
    rows += [("checkpoint", event.path), ("chat", f"tinyshake chat --run {run}")]
    for key, value in rows:
        table.add_row(key, Text(value))
    console.print(table)


def _interrupted(console: Console, event: core.Interrupted, run: str, code: int) -> typer.Exit:
    if not event.during_evaluation:
        console.print(f"Interrupted at step {event.step}; checkpoint saved in {event.path}", markup=False)
    elif event.saved_step is not None:
        console.print(f"Interrupted during the evaluation at step {event.step}; the checkpoint of step "
                      f"{event.saved_step} in {event.path} is kept", markup=False)
    else:
        console.print(f"Interrupted during the evaluation at step {event.step}; nothing was saved", markup=False)
    if event.saved_step is not None:
        console.print(f"Resume with: {_resume_hint(run)}", markup=False)
    return typer.Exit(code)


def _aborted(run: str) -> typer.Exit:
    """A second Ctrl-C: say what is left on disk, then exit as an interrupted program does."""
    from tinyshake import checkpoint

    kept = f"; run {run!r} keeps its last checkpoint ({_resume_hint(run)})" if checkpoint.exists(run) else ""
    print(f"\nAborted{kept}", file=sys.stderr)
    return typer.Exit(INTERRUPT_EXIT)


def run_training(plan: Plan, data: corpus.Corpus, view: View, console: Console,
                 metrics: MetricsLog) -> tuple[core.Finished, int, StopFlag]:
    """Drive the core loop and render its events; return the Finished event, the parameter count and the flag.

    A stop signal once saves a checkpoint at the end of the step and exits with
    the shell's code for it; twice aborts at once.
    """
    from tinyshake import train as core

    flag = StopFlag(view)
    previous = {sig: signal.signal(sig, flag) for sig in STOP_SIGNALS}
    params, main = 0, True
    try:
        with view:
            for event in core.train(plan, data, should_stop=lambda: flag.requested):
                if isinstance(event, core.Started):
                    params, main = event.parameters, event.rank == 0
                    view.started(event)
                elif isinstance(event, core.Stepped):
                    view.stepped(event)
                elif isinstance(event, core.Evaluated):
                    view.evaluated(event)
                    metrics.write(event)
                elif isinstance(event, core.Saved):
                    view.saved(event)
                elif isinstance(event, core.Rethreaded) and main:
                    view.note(rethreaded_line(event))
                elif isinstance(event, core.Interrupted):
                    flag.saved = True
                    view.__exit__()
                    raise _interrupted(console, event, plan.run, flag.exit_code) if main else typer.Exit(flag.exit_code)
                elif isinstance(event, core.Finished):
                    flag.saved = True
                    return event, params, flag
    except KeyboardInterrupt:
        raise _aborted(plan.run) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    raise TinyshakeError("training ended without finishing")  # pragma: no cover - the core always finishes


def _after_training(console: Console, plan: Plan, data: corpus.Corpus, rich: bool, quiet: bool,
                    sample_chars: int, finished: core.Finished, params: int, flag: StopFlag) -> None:
    """The summary, the budget's line and the sample; a stop signal during the last save skips the sample."""
    budget = plan.config.time_budget
    if rich:
        _summary(console, finished, params, plan.run, budget)
    elif finished.budget_ended and budget and not quiet:
        print(f"note: {budget_line(finished, budget)}", file=sys.stderr)
    if flag.requested:
        console.print(f"Interrupted after the last step; checkpoint saved in {finished.path} (sample skipped)",
                      markup=False)
        raise typer.Exit(flag.exit_code)
    if sample_chars:
        console.file.flush()
        try:
            stream_sample(finished.model, data.tokenizer, sample_chars)
        except KeyboardInterrupt:
            print(file=sys.stdout)
            raise typer.Exit(INTERRUPT_EXIT) from None


@handle_errors
def train(
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help=f"Stage: {', '.join(stages.STAGES)} (default {stages.DEFAULT_STAGE}); "
                              "`tinyshake stages` shows what each adds, its settings and the lecture's val.")] = None,
    run: Annotated[Optional[str], typer.Option(
        help="Run name (default: the stage's name, or the next free one: bigram-2, ...).")] = None,
    corpus_name: Annotated[Optional[str], typer.Option(
        "--corpus", help="Cached corpus to train on (default tiny Shakespeare, or a resumed run's own).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Sequences per batch.")] = None,
    block_size: Annotated[Optional[int], typer.Option(help="Context length.")] = None,
    n_embd: Annotated[Optional[int], typer.Option(help="Embedding width.")] = None,
    n_head: Annotated[Optional[int], typer.Option(help="Attention heads.")] = None,
    n_layer: Annotated[Optional[int], typer.Option(help="Blocks.")] = None,
    dropout: Annotated[Optional[float], typer.Option(help="Dropout probability.")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="AdamW learning rate.")] = None,
    optimizer: Annotated[Optional[str], typer.Option(help="adamw (the lecture) or muon (modern's default).")] = None,
    muon_lr: Annotated[Optional[float], typer.Option(help="Muon's learning rate, with --optimizer muon.")] = None,
    warmup: Annotated[Optional[float], typer.Option(help="Fraction of the run spent warming the rate up.")] = None,
    warmdown: Annotated[Optional[float], typer.Option(help="Fraction at the end spent cooling the rate to 0.")] = None,
    max_iters: Annotated[Optional[int], typer.Option(help="Training steps.")] = None,
    eval_interval: Annotated[Optional[int], typer.Option(help="Steps between evaluations.")] = None,
    eval_iters: Annotated[Optional[int], typer.Option(
        help="Random batches per split in each evaluation (default 200).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (default 1337).")] = None,
    device_name: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or mps (default auto).")] = None,
    dtype: Annotated[Optional[str], typer.Option(
        help="float32 (the lecture's stages' default), bfloat16/float16 autocast, or auto (modern's default): "
             "bfloat16 where the CPU or GPU multiplies it natively, else float32.")] = None,
    compile_model: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="Use torch.compile.")] = None,
    time_budget: Annotated[Optional[float], typer.Option(
        help="Seconds of training (evaluations excluded); a warmup/warmdown schedule ends exactly then.")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the run from its latest checkpoint, with its own settings.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run of the same name.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Don't ask before a very long run.")] = False,
    sample_chars: Annotated[int, typer.Option(help="Characters to sample at the end (0 to skip).", min=0)] = 500,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the sample.")] = False,
    metrics: Annotated[Optional[Path], typer.Option(help="Write every evaluation to this file as JSON lines.")] = None,
    nproc: Annotated[Optional[int], typer.Option(
        help="Train data-parallel in N processes on this machine (runs torchrun for you).", min=1)] = None,
    threads: Annotated[Optional[int], typer.Option(
        help="CPU threads (default: as many as there are free cores, looked at again at each evaluation).")] = None,
) -> None:
    """Train a stage of the lecture's model ladder, save a checkpoint, and stream a sample."""
    settings = dict(batch_size=batch_size, block_size=block_size, n_embd=n_embd, n_head=n_head, n_layer=n_layer,
                    dropout=dropout, learning_rate=lr, max_iters=max_iters, eval_interval=eval_interval,
                    eval_iters=eval_iters, seed=seed, device=device_name, dtype=dtype, compile=compile_model,
                    time_budget=time_budget, optimizer=optimizer, muon_lr=muon_lr, warmup=warmup, warmdown=warmdown,
                    threads_requested=threads)
    try:
        _train(model, run, corpus_name, resume, overwrite, yes, sample_chars, quiet, metrics, nproc, settings)
    except KeyboardInterrupt:  # before training's own handler is in place: importing, fetching, loading
        print("\nInterrupted before training started; nothing was written", file=sys.stderr)
        raise typer.Exit(INTERRUPT_EXIT) from None


def _train(stage: Optional[str], run: Optional[str], corpus_name: Optional[str], resume: bool, overwrite: bool,
           yes: bool, sample_chars: int, quiet: bool, metrics: Optional[Path], nproc: Optional[int],
           settings: dict[str, Any]) -> None:
    _torch.load()  # first: a Ctrl-C while torch loads must end the command
    from tinyshake import corpus, distributed
    from tinyshake.cli.fetch import ensure_corpus
    from tinyshake.plan import make_plan

    console = make_console()
    dist = distributed.Dist.from_env()
    if nproc is not None and dist.enabled:
        raise UsageError("--nproc starts torchrun itself; leave it out when running under torchrun")
    plan = make_plan(stage, run, corpus_name, resume, overwrite, **settings)
    if plan.complete:
        _complete(plan)
        return
    if nproc is not None and nproc > 1:
        distributed.check_launch(nproc, plan.device.device)
    _refuse_endless_evaluation(plan, yes)  # on every rank alike, before anything is written
    log = MetricsLog(metrics if dist.is_main else None, resume)
    if dist.is_main:
        confirm_slow_run(plan, yes or dist.enabled)  # workers under torchrun cannot ask
    ensure_corpus(plan.corpus, make_console(stderr=True))  # fetch progress must not mix with the log on stdout
    if nproc is not None and nproc > 1:  # everything is checked and fetched: now the workers do the rest
        code = distributed.launch(nproc, sys.argv[1:])
        if code == distributed.INTERRUPTED:
            raise typer.Exit(INTERRUPT_EXIT)
        distributed.check_exit(code, plan.run)
        return
    data = corpus.load(plan.corpus)
    rich = use_rich() and not quiet and dist.is_main
    view: View = RichView(console, plan.config) if rich else PlainView(console, quiet)
    if not dist.is_main:
        view = SilentView(console)  # rank 0 alone shows the run
    finished, params, flag = run_training(plan, data, view, console, log)
    if dist.is_main:
        _after_training(console, plan, data, rich, quiet, sample_chars, finished, params, flag)
