"""``tinyshake ladder [STAGE ...]``: train the lecture's stages in turn and compare them in one table.

The core (:mod:`tinyshake.ladder`) plans each stage with ``make_plan`` and trains
it with the training generator, as ``train`` does; this module renders its
events and handles stop signals as ``train`` does (:mod:`tinyshake.cli._signals`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from tinyshake.training import stages
from tinyshake.cli._confirm import confirm_slow_run
from tinyshake.cli._corpus import ensure_corpus
from tinyshake.cli._output import handle_errors, make_console, use_rich
from tinyshake.cli._signals import INTERRUPT_EXIT, StopFlag, handling, say_now
from tinyshake.cli._stage_text import ROUGH, ROUGH_NOTE, batches, estimate

if TYPE_CHECKING:
    from tinyshake import ladder as core
    from tinyshake.training import train as training

ACTIONS = {"train": "training", "resume": "resuming", "reuse": "reusing"}
# never wrapped or cut; the whole split's val and, under it, the same in bits per character (how BPE stages compare)
NUMBERS = ("params", "val\nestimate", "full val\nbits/char", "lecture\nval", "time")


def _val(value: Optional[float]) -> str:
    return f"{value:.4f}" if value is not None else "-"


def _estimate(r: core.StageResult) -> str:
    """The stage's last val estimate, marked where it took other than the lecture's batches (``--quick``)."""
    return estimate(r.last_val, r.eval_iters) if r.last_val is not None else "-"


def _lecture(value: Optional[float]) -> str:
    return f"{value:.2f}" if value is not None else "-"


def results_table(results: list[core.StageResult], final: bool, console: Console) -> Table:
    """The tour so far: one row per finished stage; ``final`` adds what each adds, where the console has room.

    Names and numbers are never cut; what a stage adds and its sample wrap
    instead. Where even so the table would not fit the console, it drops what
    each stage adds (``tinyshake stages`` shows it) and its inner borders.
    """
    roomy = _table(results, final, with_adds=final, compact=False)
    table = roomy if _fits(console, roomy) else _table(results, final, with_adds=False, compact=True)
    if any(_estimate(r).endswith(ROUGH) for r in results):
        table.caption, table.caption_justify = ROUGH_NOTE, "left"
    return table


def _fits(console: Console, table: Table) -> bool:
    """Whether ``table`` shows whole on ``console``: Rich crops a table too wide, right border and all."""
    lines = ("".join(segment.text for segment in line) for line in console.render_lines(table, pad=False))
    top = next((line for line in lines if "┏" in line), "")
    return top.rstrip().endswith("┓")


def _table(results: list[core.StageResult], titled: bool, with_adds: bool, compact: bool) -> Table:
    table = Table(title="The lecture's ladder" if titled else None, title_justify="left",
                  box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD, show_edge=not compact)
    table.add_column("stage", no_wrap=True, min_width=max(len(r.stage) for r in results) if results else None)
    if with_adds:
        table.add_column("what it adds", ratio=1, overflow="fold", min_width=10)
    for column in NUMBERS:
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("sample (first line)", ratio=2, overflow="fold", min_width=12)
    for r in results:
        table.add_row(r.stage, *([r.adds] if with_adds else []), f"{r.parameters:,}", _estimate(r),
                      f"{_val(r.full_val)}\n{_val(r.full_bpc)}", _lecture(r.published_val),
                      f"{r.seconds:.1f}s" + ("\nreused" if r.reused else ""), Text(r.sample))
    return table


def plain_line(r: core.StageResult) -> str:
    """One stage as one plain line, for pipes and logs."""
    reused = ", reused" if r.reused else ""
    rough = "" if stages.lecture_estimate(r.eval_iters) else f" on {batches(r.eval_iters)}"
    return (f"{r.stage}: {r.parameters:,} parameters, val {_val(r.last_val)}{rough} (full split {_val(r.full_val)}, "
            f"{_val(r.full_bpc)} bits/char), "
            f"lecture {_lecture(r.published_val)}, {r.seconds:.1f} s{reused} | {r.sample}")


def _notices(event: training.Event) -> list[str]:
    from tinyshake.training import train as training

    return list(event.notices) if isinstance(event, training.Started) else []


class LiveTour:
    """On a terminal: the current stage's progress bar above the table of finished stages."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.results: list[core.StageResult] = []
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[val]}"), TimeElapsedColumn(), console=console)
        self.task: Optional[Any] = None
        self.live = Live(console=console, refresh_per_second=8, transient=True, get_renderable=self._render)

    def _render(self) -> RenderableType:
        return Group(self.progress, results_table(self.results, final=False, console=self.console))

    def __enter__(self) -> "LiveTour":
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()

    def started(self, event: core.StageStarted) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        label = f"{event.index + 1}/{event.total} {event.stage} ({ACTIONS[event.action]} run {event.run})"
        reused = event.action == "reuse"  # trained before: its bar is full while its full split is measured
        self.task = self.progress.add_task(label, total=event.config.max_iters,
                                           completed=event.config.max_iters if reused else 0,
                                           val="- (measuring the full val split)" if reused else "-")

    def trained(self, event: training.Event) -> None:
        from tinyshake.training import train as training

        if self.task is None:
            return
        if isinstance(event, training.Stepped):
            self.progress.update(self.task, completed=event.step)
        elif isinstance(event, training.Evaluating):
            self.progress.update(self.task, val=f"evaluating step {event.step}: {event.done}/{event.total} batches")
        elif isinstance(event, training.Evaluated):
            self.progress.update(self.task, val=f"train {event.train:.4f}, val {event.val:.4f}")
        elif isinstance(event, training.Started):
            self.progress.update(self.task, completed=event.start_step)
        for notice in _notices(event):
            self.console.print(Text.assemble(("note: ", "yellow"), notice))

    def done(self, result: core.StageResult) -> None:
        self.results.append(result)

    def stopping(self, why: str) -> None:
        if self.task is not None:
            self.progress.update(self.task, description=f"[yellow]{why}: stopping after this step…[/]")


class PlainTour:
    """Piped: one line per stage on stdout when it is done; what it is doing goes to stderr."""

    def __init__(self) -> None:
        self.results: list[core.StageResult] = []

    def __enter__(self) -> "PlainTour":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def started(self, event: core.StageStarted) -> None:
        print(f"{event.stage}: {ACTIONS[event.action]} run {event.run}", file=sys.stderr, flush=True)

    def trained(self, event: training.Event) -> None:
        for notice in _notices(event):
            print(f"note: {notice}", file=sys.stderr)

    def done(self, result: core.StageResult) -> None:
        self.results.append(result)
        print(plain_line(result), flush=True)

    def stopping(self, why: str) -> None:
        """Called from the signal handler, hence :func:`say_now`."""
        say_now(f"{why}: stopping after this step and saving the stage's checkpoint (press Ctrl-C again to abort)...\n")


def stopped_line(event: core.StageInterrupted) -> str:
    """Where the tour stopped, what is kept, and how to go on."""
    kept = (f"its checkpoint of step {event.saved_step} is kept in run {event.run}" if event.saved_step is not None
            else "nothing of it was saved yet")
    return f"Stopped {event.stage} at step {event.step}; {kept}. Run the same command again to go on."


@handle_errors
def ladder(
    stage_names: Annotated[Optional[list[str]], typer.Argument(
        metavar="STAGE", help="Stages to train, in order (default: bigram through layernorm, then mini; "
                                   "gpt only when named). `tinyshake stages` lists them.")] = None,
    prefix: Annotated[str, typer.Option(help="Runs are named PREFIX-STAGE.")] = "ladder",
    quick: Annotated[bool, typer.Option("--quick", help="A tenth of each stage's steps, and of each evaluation: "
                                                        "a tour of minutes.")] = False,
    max_iters: Annotated[Optional[int], typer.Option(help="Training steps of every stage (default: each "
                                                          "stage's own).")] = None,
    eval_interval: Annotated[Optional[int], typer.Option(help="Steps between evaluations, for every stage.")] = None,
    eval_iters: Annotated[Optional[int], typer.Option(help="Random batches per split in each evaluation.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Train every stage again, even a finished one.")] = False,
    device_name: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or mps.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Don't ask before a very long stage.")] = False,
    tokenizer: Annotated[Optional[str], typer.Option(
        help="char (the lecture's) or bpe for every stage (then the default tour leaves out the bigram).")] = None,
    vocab_size: Annotated[Optional[int], typer.Option(help="The BPE's size, with --tokenizer bpe (default 512).")]
    = None,
) -> None:
    """Train the lecture's ladder stage by stage and compare them: val loss, the lecture's, time and a sample.

    Each stage is an ordinary run (`ladder-STAGE`): a finished one is reused, an interrupted one resumed,
    so after Ctrl-C the same command goes on where it stopped.
    """
    from tinyshake import corpus
    from tinyshake import ladder as core

    plans = core.plan_tour(stage_names or [], prefix, corpus.DEFAULT_CORPUS, quick, overwrite, device=device_name,
                           max_iters=max_iters, eval_interval=eval_interval, eval_iters=eval_iters,
                           tokenizer=tokenizer, bpe_vocab=vocab_size)
    for stage in plans:  # the gpt stages warn (and, if very long, ask) before anything trains
        if stage.action != "reuse":
            confirm_slow_run(stage.plan, yes)
    ensure_corpus(corpus.DEFAULT_CORPUS, make_console(stderr=True))
    data = corpus.load(corpus.DEFAULT_CORPUS)
    console = make_console()
    view: Any = LiveTour(console) if use_rich() else PlainTour()
    flag = StopFlag(view.stopping)
    stopped = _run_tour(core.tour(plans, data, should_stop=lambda: flag.requested), view, flag)
    if use_rich() and view.results:
        console.print(results_table(view.results, final=True, console=console))
    if stopped is not None:
        console.print(stopped_line(stopped), markup=False)
        raise typer.Exit(flag.exit_code)
    if use_rich():
        console.print(f"Compare the curves: tinyshake plot '{prefix}-*'", markup=False)


def _run_tour(events: Any, view: Any, flag: StopFlag) -> Optional[core.StageInterrupted]:
    """Render the tour's events; return where it stopped (``None``: it went to its end).

    A stop signal once ends the current stage at the end of its step, with its
    checkpoint; twice aborts at once, keeping what is saved.
    """
    from tinyshake import ladder as core

    try:
        with handling(flag), view:
            for event in events:
                if isinstance(event, core.StageStarted):
                    view.started(event)
                elif isinstance(event, core.StageProgress):
                    view.trained(event.event)
                elif isinstance(event, core.StageResult):
                    view.done(event)
                elif isinstance(event, core.StageInterrupted):
                    flag.saved = True
                    return event
    except KeyboardInterrupt:
        print("\nAborted; every finished stage and the last checkpoint are kept", file=sys.stderr)
        raise typer.Exit(INTERRUPT_EXIT) from None
    return None
