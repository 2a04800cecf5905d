"""How ``train`` shows a run: the lecture's lines in a pipe, a live table and bar on a terminal, and its end.

The training loop in :mod:`tinyshake.cli.train` hands each event of the core's
generator to one :class:`View`; the functions at the bottom word how a run
ends (complete already, interrupted, aborted) and its summary.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Optional, Protocol, Sequence

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.padding import Padding
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from tinyshake.training import stages
from tinyshake.cli._render import loss_chart, plain_charts, visible
from tinyshake.store.record import Evaluation
from tinyshake.units import bits_per_char
from tinyshake.cli._signals import INTERRUPT_EXIT, say_now
from tinyshake.cli._stage_text import run_header

if TYPE_CHECKING:
    import torch

    from tinyshake.training import train as core
    from tinyshake.training.plan import Plan
    from tinyshake.tokens import Tokenizer

CHART_ROWS, CHART_WIDTH = 8, 100  # the live loss chart under the table: small, so the table keeps its room
CHART_MIN_TERMINAL = 30  # terminal rows below which the live view leaves the chart out


class View(Protocol):
    """What run_training needs from an output style, so the loop is written once for both."""

    def __enter__(self) -> "View": ...
    def __exit__(self, *exc: object) -> None: ...
    def started(self, event: core.Started) -> None: ...
    def stepped(self, event: core.Stepped) -> None: ...
    def evaluating(self, event: core.Evaluating) -> None: ...
    def evaluated(self, event: core.Evaluated) -> None: ...
    def saved(self, event: core.Saved) -> None: ...
    def stopping(self, why: str) -> None: ...
    def note(self, text: str) -> None: ...


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

    def evaluating(self, event: core.Evaluating) -> None:
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
        say_now(f"{why}: stopping after this step and saving a checkpoint (press Ctrl-C again to abort)...\n")


class SilentView(PlainView):
    """Every rank but 0 of a data-parallel run: it trains in step, rank 0 does the talking."""

    def __init__(self, console: Console) -> None:
        super().__init__(console, quiet=True)

    def started(self, event: core.Started) -> None:
        return None

    def stopping(self, why: str) -> None:
        return None


SAMPLE_CHARS = 60  # the sample under the table at each evaluation: one short line at 80 columns


def visible_newline(char: str) -> str:
    """A newline as ⏎, so that a sample stays on its one line."""
    return visible(char) if char == "\n" else char


WIDE_BAR = 120  # terminal columns from which the bar also shows tokens/s and the time elapsed


def progress_columns(config: core.TrainConfig, width: int) -> list[ProgressColumn]:
    """The bar's columns for a terminal ``width`` wide: all of them from 120 columns; at 80 a shorter bar and no
    tokens/s or elapsed time, so that the step count and the loss are never cut off."""
    counter = TextColumn("{task.completed:.0f}/{task.total:.0f} s") if config.time_budget else MofNCompleteColumn()
    wide = width >= WIDE_BAR
    return [TextColumn("[bold]{task.description}"), BarColumn(bar_width=30 if wide else 16), counter,
            TextColumn("{task.fields[its]:>7.1f} it/s"),
            *([TextColumn("{task.fields[tps]:>9,.0f} tok/s")] if wide else []),
            TextColumn("loss {task.fields[loss]}"), *([TimeElapsedColumn()] if wide else []), TimeRemainingColumn()]


class RichView:
    """TTY output: a loss table that grows above a progress bar with speed and the recent loss.

    The bar counts steps out of max_iters, or with a time budget the seconds of
    training out of the budget, since that is what ends such a run. The live
    region shows only as many table rows as fit the terminal (a taller one could
    not be redrawn in place); when training ends it is replaced by the whole
    table, which then stays in the scrollback.
    """

    def __init__(self, console: Console, config: core.TrainConfig, tokenizer: Optional[Tokenizer] = None,
                 earlier: Sequence[tuple[Evaluation, float]] = ()) -> None:
        """``earlier``: a resumed run's evaluations so far (each with its val in bits per character), which its
        table shows before the new ones."""
        self.console, self.config, self.tokenizer = console, config, tokenizer
        self.model: Optional[torch.nn.Module] = None  # sampled from after each evaluation, with a tokenizer
        self.samples: list[tuple[str, str]] = []  # (step, text): what the model writes at each evaluation
        self.progress = Progress(*progress_columns(config, console.width), console=console)
        budget = config.time_budget
        self.task = self.progress.add_task(config.stage, total=budget or config.max_iters, its=0.0, tps=0.0, loss="-")
        self.rows: list[tuple[str, ...]] = []
        self.metrics: list[Evaluation] = []  # the evaluations, for the chart
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
        self.preparing = Spinner("dots", Text("Preparing the run…", style="dim"))
        self.live = Live(console=console, refresh_per_second=8, transient=True, get_renderable=self._render)
        for row, val_bpc in earlier:
            self._add(row, val_bpc)

    def _table(self, rows: list[tuple[str, ...]]) -> Table:
        table = Table(title=f"{self.config.stage} · run {self.config.run}", title_justify="left")
        for column in ("step", "train", "val", "Δ val", "val bits/char", "elapsed"):
            table.add_column(column, justify="right")
        if len(rows) < len(self.rows):
            table.add_row("…", "", "", "", "", "")
        for row in rows:
            table.add_row(*row)
        return table

    def _samples(self, samples: list[tuple[str, str]]) -> list[RenderableType]:
        """The samples under the table: one line each, the step then the text, which never wraps."""
        if not samples:
            return []
        from tinyshake.sampling import SHOWCASE_SEED  # torch is loaded: there are samples

        grid = Table.grid(padding=(0, 1))
        grid.add_column(justify="right", style="dim", no_wrap=True)
        grid.add_column(no_wrap=True, overflow="ellipsis")
        for step, text in samples:
            grid.add_row(step, Text(text))
        heading = f"what it writes from a newline (seed {SHOWCASE_SEED}, {SAMPLE_CHARS} characters, ⏎ a newline)"
        return [Text(heading, style="dim"), grid]

    def _render(self) -> RenderableType:
        if not self.begun:  # the header comes with the start of training: until then, a spinner and no empty table
            return self.preparing
        chart = self.chart if self.console.size.height >= CHART_MIN_TERMINAL else None
        room = max(1, self.console.size.height - 9 - (CHART_ROWS + 4 if chart else 0))  # title, header, borders,
        # "…" row, progress bar, prompt; the chart's rows, axis, scale and legend
        shown = min(len(self.samples), room // 3)  # the latest samples take at most a third, with their heading
        samples = self._samples(self.samples[len(self.samples) - shown:])
        rows = max(1, room - shown - (1 if shown else 0))
        return Group(self._table(self.rows[-rows:]), *samples, *([chart] if chart else []), self.progress)

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
                self.console.print(Group(self._table(self.rows), *self._samples(self.samples),
                                         *([self.chart] if self.chart else []), self.progress))

    def started(self, event: core.Started) -> None:
        self.begun = True
        for notice in event.notices:
            self.console.print(Text.assemble(("note: ", "yellow"), notice))
        self.world_size = event.world_size
        self.model = event.model
        title, details = run_header(event.config, event.parameters)
        self.console.print(Text(training_line(event, title)))
        lines = "\n".join(line.strip() for line in details.splitlines())
        self.console.print(Padding(Text(lines, style="dim"), (0, 0, 0, 2)))  # a wrapped line keeps the indent
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

    def evaluating(self, event: core.Evaluating) -> None:
        """The bar says which evaluation runs and how far it is: it may take as long as many steps."""
        self.progress.update(self.task, description=f"{self.config.stage} eval {event.done}/{event.total}")

    def evaluated(self, event: core.Evaluated) -> None:
        self.progress.update(self.task, description=self.config.stage)
        step = self._add(Evaluation(event.step, event.val, event.train, event.elapsed, event.final), event.val_bpc)
        self._sample(step)
        if len(self.metrics) > 1:
            self.chart = loss_chart(self.metrics, min(self.console.width, CHART_WIDTH), CHART_ROWS, plain=self.plain_chart)

    def _add(self, row: Evaluation, val_bpc: float) -> str:
        """One evaluation (and its val in bits per character) into the table and the chart's data; returns its
        step as the table shows it."""
        delta = "" if self.last_val is None else f"{row.val - self.last_val:+.4f}"
        step = f"final {row.step}" if row.final else str(row.step)
        train = f"{row.train:.4f}" if row.train is not None else "-"
        self.rows.append((step, train, f"{row.val:.4f}", delta, f"{val_bpc:.4f}", f"{row.elapsed or 0:.1f}s"))
        self.last_val = row.val
        self.metrics.append(row)
        return step

    def _sample(self, step: str) -> None:
        """What the model writes now, from the same start and seed each time: the text improves as the loss falls.

        It draws from a generator of its own, in eval mode (put back after), so
        the training's random stream and its numbers are those of a run without it.
        """
        if self.model is None or self.tokenizer is None:
            return
        from tinyshake import sampling

        ids = sampling.showcase(self.model, [sampling.START_TOKEN], SAMPLE_CHARS)  # a token is a character or more
        text = self.tokenizer.decode(ids)[:SAMPLE_CHARS]
        self.samples.append((step, "".join(map(visible_newline, text))))

    def saved(self, event: core.Saved) -> None:
        """Measure speed from here: evaluating and saving are not training."""
        self.mark = (event.step, time.perf_counter())

    def note(self, text: str) -> None:
        self.console.print(Text.assemble(("note: ", "yellow"), text))

    def stopping(self, why: str) -> None:
        self.progress.update(self.task, description=f"{self.config.stage} [yellow]stopping ({why})…[/]")


def resume_hint(run: str) -> str:
    """The command that goes on with ``run``, which every way of stopping prints."""
    return f"tinyshake train --run {run} --resume"


def report_complete(plan: Plan) -> None:
    """``--resume`` of a run that has trained all its steps: nothing to do, which is a success (exit 0).

    A scheduler that requeues a finished job with ``--resume`` must not see it fail.
    """
    if not plan.steps_done:  # the time budget, not max_iters, is what is used up
        trained, budget = plan.trained_seconds, plan.config.time_budget or 0.0
        more = max(2 * budget, math.ceil(trained) + 1)
        print(f"run {plan.run!r} is complete: it has trained {trained:.1f} s, its time budget being {budget:g} s, "
              f"and stopped at step {plan.start_step}; to train it further, give a larger --time-budget "
              f"({resume_hint(plan.run)} --time-budget {more:g})", file=sys.stderr)
        return
    more = max(2 * plan.start_step, plan.start_step + 1)
    print(f"run {plan.run!r} is complete: it has trained {plan.start_step} of {plan.config.max_iters} steps; "
          f"to train it further, give a larger --max-iters ({resume_hint(plan.run)} --max-iters {more})",
          file=sys.stderr)


def summary(console: Console, event: core.Finished, params: int, run: str, budget: Optional[float]) -> None:
    """On a terminal, after the live table: what was trained, how it ended, where it is and how to chat with it."""
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    rows = [("parameters", f"{params:,}"), ("steps", str(event.step)), ("wall time", f"{event.elapsed:.1f}s")]
    if event.budget_ended and budget:
        rows.append(("ended by", budget_line(event, budget)))
    if event.final is not None:
        rows.append(("final val", f"{event.final.val:.4f} (step {event.final.step}), "
                                  f"{event.final.val_bpc:.4f} bits/char"))
    if event.best_val is not None:
        per_token = event.final.chars_per_token[1] if event.final is not None else 1.0
        rows.append(("best val", f"{event.best_val:.4f} (step {event.best_step}), "
                                 f"{bits_per_char(event.best_val, per_token):.4f} bits/char"))
    rows += [("checkpoint", event.path), ("chat", f"tinyshake chat {run}")]
    for key, value in rows:
        table.add_row(key, Text(value))
    console.print(table)


def next_line(stage: str) -> Optional[str]:
    """Where the ladder goes from ``stage``: how to train the next stage, and what it adds (None after the last).

    The command comes first, so that a narrow terminal wraps what it adds, never the command."""
    following = stages.next_stage(stage)
    if following is None:
        return None
    return f"Next on the ladder: tinyshake train --model {following.name} ({following.adds})"


def interrupted(console: Console, event: core.Interrupted, run: str, code: int) -> typer.Exit:
    """A stop signal was obeyed: say what is saved (a stop during an evaluation keeps the last checkpoint)."""
    if not event.during_evaluation:
        console.print(f"Interrupted at step {event.step}; checkpoint saved in {event.path}", markup=False)
    elif event.saved_step is not None:
        console.print(f"Interrupted during the evaluation at step {event.step}; the checkpoint of step "
                      f"{event.saved_step} in {event.path} is kept", markup=False)
    else:
        console.print(f"Interrupted during the evaluation at step {event.step}; nothing was saved", markup=False)
    if event.saved_step is not None:
        console.print(f"Resume with: {resume_hint(run)}", markup=False)
    return typer.Exit(code)


def aborted(run: str, code: int = INTERRUPT_EXIT) -> typer.Exit:
    """A second Ctrl-C (or a stop before the first step ended): say what is left on disk, then exit with ``code``."""
    from tinyshake import checkpoint

    kept = f"; run {run!r} keeps its last checkpoint ({resume_hint(run)})" if checkpoint.exists(run) else ""
    print(f"\nAborted{kept}", file=sys.stderr)
    return typer.Exit(code)
