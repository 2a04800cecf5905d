"""``tinyshake ladder [STAGE ...]``: train the lecture's stages in turn and compare them in one table."""

from __future__ import annotations

import signal
import sys
from typing import Annotated, Any, Optional

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from tinyshake import stages
from tinyshake.cli._output import handle_errors, make_console, use_rich

INTERRUPT_EXIT = 130
ACTIONS = {"train": "training", "resume": "resuming", "reuse": "reusing"}


def _val(value: Optional[float]) -> str:
    return f"{value:.4f}" if value is not None else "-"


def _lecture(value: Optional[float]) -> str:
    return f"{value:.2f}" if value is not None else "-"


def results_table(results: list[Any], final: bool) -> Table:
    """The tour so far: one row per finished stage; ``final`` adds what each adds and its sample."""
    table = Table(title="The lecture's ladder" if final else None, title_justify="left")
    columns = ["stage", *(["what it adds"] if final else []), "params", "val (estimate)", "val (full split)",
               "lecture val", "time", "sample (first line)"]
    for column in columns:
        table.add_column(column, justify="right" if column in ("params", "val (estimate)", "val (full split)",
                                                                "lecture val", "time") else "left",
                         overflow="fold" if column == "what it adds" else "ellipsis",
                         no_wrap=column == "sample (first line)", max_width=30 if column == "what it adds" else None)
    for r in results:
        table.add_row(r.stage, *([r.adds] if final else []), f"{r.parameters:,}", _val(r.last_val), _val(r.full_val),
                      _lecture(r.published_val), f"{r.seconds:.1f}s" + (" (reused)" if r.reused else ""),
                      Text(r.sample))
    return table


def plain_line(r: Any) -> str:
    """One stage as one plain line, for pipes and logs."""
    reused = ", reused" if r.reused else ""
    return (f"{r.stage}: {r.parameters:,} parameters, val {_val(r.last_val)} (full split {_val(r.full_val)}), "
            f"lecture {_lecture(r.published_val)}, {r.seconds:.1f} s{reused} | {r.sample}")


class LiveTour:
    """On a terminal: the current stage's progress bar above the table of finished stages."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.results: list[Any] = []
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[val]}"), TimeElapsedColumn(), console=console)
        self.task: Optional[Any] = None
        self.live = Live(console=console, refresh_per_second=8, transient=True, get_renderable=self._render)

    def _render(self) -> RenderableType:
        return Group(self.progress, results_table(self.results, final=False))

    def __enter__(self) -> "LiveTour":
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()

    def started(self, event: Any) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        label = f"{event.index + 1}/{event.total} {event.stage} ({ACTIONS[event.action]} run {event.run})"
        self.task = self.progress.add_task(label, total=event.config.max_iters, val="-")

    def trained(self, event: Any) -> None:
        from tinyshake import train as core

        if isinstance(event, core.Stepped) and self.task is not None:
            self.progress.update(self.task, completed=event.step)
        elif isinstance(event, core.Evaluated) and self.task is not None:
            self.progress.update(self.task, val=f"train {event.train:.4f}, val {event.val:.4f}")
        elif isinstance(event, core.Started) and self.task is not None:
            self.progress.update(self.task, completed=event.start_step)
            for notice in event.notices:
                self.console.print(Text.assemble(("note: ", "yellow"), notice))

    def done(self, result: Any) -> None:
        self.results.append(result)

    def stopping(self) -> None:
        if self.task is not None:
            self.progress.update(self.task, description="[yellow]stopping after this step…[/]")


class PlainTour:
    """Piped: one line per stage when it is done, and nothing else on stdout."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.results: list[Any] = []

    def __enter__(self) -> "PlainTour":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def started(self, event: Any) -> None:
        print(f"{event.stage}: {ACTIONS[event.action]} run {event.run}", file=sys.stderr)

    def trained(self, event: Any) -> None:
        from tinyshake import train as core

        if isinstance(event, core.Started):
            for notice in event.notices:
                print(f"note: {notice}", file=sys.stderr)

    def done(self, result: Any) -> None:
        self.results.append(result)
        print(plain_line(result), flush=True)

    def stopping(self) -> None:
        print("Stopping after this step and saving the stage's checkpoint (Ctrl-C again to abort)...",
              file=sys.stderr, flush=True)


class StopFlag:
    """The first Ctrl-C stops the current stage at the end of its step, with its checkpoint; a second aborts."""

    def __init__(self, view: Any) -> None:
        self.requested, self.view = False, view

    def __call__(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.view.stopping()


@handle_errors
def ladder(
    stage_names: Annotated[Optional[list[str]], typer.Argument(
        metavar="[STAGE]...", help="Stages to train, in order (default: bigram through layernorm, then mini; "
                                   "gpt only when named). `tinyshake stages` lists them.")] = None,
    prefix: Annotated[str, typer.Option(help="Runs are named PREFIX-STAGE.")] = "ladder",
    quick: Annotated[bool, typer.Option("--quick", help="A tenth of each stage's steps, and of each evaluation: "
                                                        "a tour of minutes.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Train every stage again, even a finished one.")] = False,
    device_name: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps.")] = "auto",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Don't ask before a very long stage.")] = False,
) -> None:
    """Train the lecture's ladder stage by stage and compare them: val loss, the lecture's, time and a sample.

    Each stage is an ordinary run (`ladder-STAGE`): a finished one is reused, an interrupted one resumed,
    so after Ctrl-C the same command goes on where it stopped.
    """
    from tinyshake import corpus
    from tinyshake import ladder as core
    from tinyshake.cli.fetch import ensure_corpus
    from tinyshake.cli.train import _confirm_slow_run

    chosen = core.check_stages(stage_names or [])
    for name in chosen:  # the gpt stages warn (and, if very long, ask) before anything trains
        if name in stages.GPU_SIZED:
            _confirm_slow_run(core.stage_config(name, prefix, quick, 65, device_name), yes)
    ensure_corpus(corpus.DEFAULT_CORPUS, make_console(stderr=True))
    data = corpus.load(corpus.DEFAULT_CORPUS)
    console = make_console()
    view: Any = LiveTour(console) if use_rich() else PlainTour(console)
    flag = StopFlag(view)
    previous = signal.signal(signal.SIGINT, flag)
    stopped = None
    try:
        with view:
            for event in core.tour(chosen, data, prefix, quick, overwrite, device_name, lambda: flag.requested):
                if isinstance(event, core.StageStarted):
                    view.started(event)
                elif isinstance(event, core.StageProgress):
                    view.trained(event.event)
                elif isinstance(event, core.StageResult):
                    view.done(event)
                elif isinstance(event, core.StageInterrupted):
                    stopped = event
    except KeyboardInterrupt:
        print("\nAborted; every finished stage and the last checkpoint are kept", file=sys.stderr)
        raise typer.Exit(INTERRUPT_EXIT) from None
    finally:
        signal.signal(signal.SIGINT, previous)
    if use_rich() and view.results:
        console.print(results_table(view.results, final=True))
    if stopped is not None:
        console.print(f"Stopped {stopped.stage} at step {stopped.step}; its checkpoint is saved in run {stopped.run}. "
                      "Run the same command again to go on.", markup=False)
        raise typer.Exit(INTERRUPT_EXIT)
    if use_rich():
        console.print(f"Compare the curves: tinyshake plot '{prefix}-*'", markup=False)
