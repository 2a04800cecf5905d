"""``tinyshake train``: train one stage of the ladder with live progress, then stream a sample."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional, Protocol

import torch
import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from tinyshake import checkpoint, corpus, device, distributed, sampling, stages, train as core
from tinyshake.atomic import write_bytes
from tinyshake.cli._output import handle_errors, make_console, use_rich
from tinyshake.cli._render import loss_chart
from tinyshake.cli.fetch import ensure_corpus
from tinyshake.cli.stages import run_header
from tinyshake.errors import TinyshakeError, UsageError
from tinyshake.model import flops_per_token

CPU_FLOPS_GUESS = 60e9  # sustained training FLOP/s on a laptop CPU, for the gpt stage's warning only
ASK_ABOVE_SECONDS = 30 * 60  # a gpt run on a CPU this long asks before it starts (on a terminal)
INTERRUPT_EXIT = 130  # what shells report for a process stopped by Ctrl-C
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
    def stopping(self) -> None: ...


class StopFlag:
    """The first Ctrl-C asks the loop to finish its step and save; a second one stops at once.

    Once that checkpoint is saved, more presses are ignored: all that is left
    is printing how to resume, and cutting that short would help no one.
    """

    def __init__(self, view: View) -> None:
        self.requested = False
        self.saved = False
        self.view = view

    def __call__(self, signum: int, frame: Any) -> None:
        if self.saved:
            return
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.view.stopping()


class MetricsLog:
    """Every evaluation as one JSON line. A new run starts the file afresh; a resumed run adds to it.

    The whole file is rewritten atomically at each evaluation (there are few),
    so a crash never leaves half a line; a bad path is refused before training.
    """

    def __init__(self, path: Optional[Path], resume: bool) -> None:
        self.path = path
        self.lines: list[str] = []
        if path is None:
            return
        if path.is_dir() or not path.parent.is_dir():
            raise UsageError(f"cannot write metrics to {path}: its folder does not exist or it is a folder")
        if resume and path.is_file():
            try:
                self.lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
            except OSError as exc:
                raise UsageError(f"cannot read metrics file {path}: {exc.strerror or exc}") from None

    def write(self, event: core.Evaluated) -> None:
        if self.path is None:
            return
        self.lines.append(json.dumps({"step": event.step, "train": event.train, "val": event.val,
                                      "elapsed": round(event.elapsed, 3)}) + "\n")
        write_bytes(self.path, "".join(self.lines).encode())


def lecture_line(event: core.Evaluated) -> str:
    """The lecture's log line, e.g. ``step 300: train loss 2.8110, val loss 2.8249``."""
    return f"step {event.step}: train loss {event.train:.4f}, val loss {event.val:.4f}"


class PlainView:
    """Non-TTY output (and --quiet): the lecture's lines and nothing else; notes go to stderr."""

    def __init__(self, console: Console, quiet: bool) -> None:
        self.console, self.quiet = console, quiet

    def __enter__(self) -> "PlainView":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def started(self, event: core.Started) -> None:
        for notice in event.notices:
            print(f"note: {notice}", file=sys.stderr)
        if not self.quiet:  # stdout stays the lecture's log
            title, details = run_header(event.config, event.parameters)
            print(f"Training {title} on {event.device}\n  {details}", file=sys.stderr)

    def stepped(self, event: core.Stepped) -> None:
        return None

    def evaluated(self, event: core.Evaluated) -> None:
        if not self.quiet:
            self.console.print(lecture_line(event), markup=False)

    def saved(self, event: core.Saved) -> None:
        return None

    def stopping(self) -> None:
        _say_now("Stopping after this step and saving a checkpoint (Ctrl-C again to abort)...\n")


class SilentView(PlainView):
    """Every rank but 0 of a data-parallel run: it trains in step, rank 0 does the talking."""

    def __init__(self, console: Console) -> None:
        super().__init__(console, quiet=True)

    def started(self, event: core.Started) -> None:
        return None

    def stopping(self) -> None:
        return None


class RichView:
    """TTY output: a loss table that grows above a progress bar with speed and the recent loss.

    The live region shows only as many table rows as fit the terminal (a taller
    one could not be redrawn in place); when training ends it is replaced by
    the whole table, which then stays in the scrollback.
    """

    def __init__(self, console: Console, config: core.TrainConfig) -> None:
        self.console, self.config = console, config
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[its]:>7.1f} it/s"), TextColumn("{task.fields[tps]:>9,.0f} tok/s"),
            TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console,
        )
        self.task = self.progress.add_task(config.stage, total=config.max_iters, its=0.0, tps=0.0, loss="-")
        self.rows: list[tuple[str, ...]] = []
        self.metrics: list[dict[str, float]] = []  # this session's evaluations, for the chart
        self.chart: Optional[Text] = None  # redrawn at each evaluation only, so steps never wait for it
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
        resuming = f", resuming at step {event.start_step}" if event.start_step else ""
        self.world_size = event.world_size
        where = f"{event.device} × {event.world_size} processes" if event.world_size > 1 else event.device
        title, details = run_header(event.config, event.parameters)
        self.console.print(Text.assemble("Training ", (title, "bold"), f" on {where}{resuming}\n  ", (details, "dim")))
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
        if now - self.last_show < 0.25 and event.step < self.config.max_iters:
            return
        loss = self.window.item() / self.window_steps
        self.window, self.window_steps = None, 0
        steps, seconds = event.step - self.mark[0], now - self.mark[1]
        its = steps / seconds if seconds > 0 else 0.0
        self.progress.update(self.task, completed=event.step, its=its, loss=f"{loss:.4f}",
                             tps=its * self.config.batch_size * self.config.block_size * self.world_size)
        self.last_show = now

    def evaluated(self, event: core.Evaluated) -> None:
        delta = "" if self.last_val is None else f"{event.val - self.last_val:+.4f}"
        self.rows.append((str(event.step), f"{event.train:.4f}", f"{event.val:.4f}", delta, f"{event.elapsed:.1f}s"))
        self.last_val = event.val
        self.metrics.append({"step": event.step, "train": event.train, "val": event.val})
        if len(self.metrics) > 1:
            self.chart = loss_chart(self.metrics, min(self.console.width, CHART_WIDTH), CHART_ROWS, plain=False)

    def saved(self, event: core.Saved) -> None:
        """Measure speed from here: evaluating and saving are not training."""
        self.mark = (event.step, time.perf_counter())

    def stopping(self) -> None:
        self.progress.update(self.task, description=f"{self.config.stage} [yellow]stopping…[/]")


def _duration(seconds: float) -> str:
    """A rough duration for people: seconds, minutes or hours."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _confirm_slow_run(config: core.TrainConfig, yes: bool) -> None:
    """Warn (on stderr) before the gpt stage on a CPU, with an estimate; ask on a terminal if it is long."""
    if config.stage not in stages.GPU_SIZED or device.resolve(config.device).device.type != "cpu":
        return
    per_step = flops_per_token(config.model) * config.batch_size * config.block_size / CPU_FLOPS_GUESS
    seconds = core.estimate_seconds(config, per_step)
    print(f"Warning: the gpt stage is slow on a CPU; this run needs roughly {_duration(seconds)} here "
          "(try --model mini, or a GPU).", file=sys.stderr)
    if yes or seconds < ASK_ABOVE_SECONDS or not (sys.stdin.isatty() and sys.stdout.isatty()):
        return
    if not typer.confirm("Train it anyway?", default=False):
        raise typer.Exit(1)


def _resume_hint(run: str) -> str:
    return f"tinyshake train --run {run} --resume"


def _plan(stage: Optional[str], run: Optional[str], corpus_name: Optional[str], resume: bool, overwrite: bool,
          settings: dict[str, Any]) -> tuple[core.TrainConfig, str]:
    """This session's config and corpus name, checked before anything is fetched or written.

    A new run merges the stage's preset with the flags (its vocabulary size is
    filled in once the corpus is loaded); a resumed run takes its stored
    settings and, unless told otherwise, its own corpus.
    """
    if resume:
        name = run or stage or stages.DEFAULT_STAGE
        if stage is not None:
            stages.get(stage)
        if not checkpoint.exists(name):
            raise UsageError(f"there is no run {name!r} to resume; start it without --resume")
        record = checkpoint.read_record(name)
        stored = record.get("corpus")
        stored_name = stored.get("name") if isinstance(stored, dict) else None
        return core.resume_config(record, stage=stage, **settings), corpus_name or stored_name or corpus.DEFAULT_CORPUS
    config = core.make_config(stage or stages.DEFAULT_STAGE, run=run, **settings)
    if checkpoint.exists(config.run) and not overwrite:
        record = checkpoint.read_record(config.run)
        raise UsageError(f"run {config.run!r} already exists (step {record.get('step')}); use --resume to continue "
                         "it, --overwrite to replace it, or --run NAME for a new one")
    return config, corpus_name or corpus.DEFAULT_CORPUS


def stream_sample(model: Any, tokenizer: corpus.CharTokenizer, chars: int, out: Any = None) -> None:
    """Stream ``chars`` sampled characters from a context of token 0, printing the context as the lecture does."""
    out = out or sys.stdout
    context = [sampling.START_TOKEN]
    out.write(tokenizer.decode(context))
    for token in sampling.generate(model, context, sampling.SamplingSettings(max_new_tokens=chars)):
        out.write(tokenizer.decode([token]))
        out.flush()
    out.write("\n")
    out.flush()


def _summary(console: Console, event: core.Finished, params: int, run: str) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    best = f"{event.best_val:.4f}" if event.best_val is not None else "-"
    for key, value in (("parameters", f"{params:,}"), ("steps", str(event.step)), ("wall time", f"{event.elapsed:.1f}s"),
                       ("best val", best), ("checkpoint", event.path), ("chat", f"tinyshake chat --run {run}")):
        table.add_row(key, Text(value))
    console.print(table)


def _interrupted(console: Console, event: core.Interrupted, run: str) -> typer.Exit:
    console.print(f"Interrupted at step {event.step}; checkpoint saved in {event.path}", markup=False)
    console.print(f"Resume with: {_resume_hint(run)}", markup=False)
    return typer.Exit(INTERRUPT_EXIT)


def _aborted(run: str) -> typer.Exit:
    """A second Ctrl-C: say what is left on disk, then exit as an interrupted program does."""
    kept = f"; run {run!r} keeps its last checkpoint ({_resume_hint(run)})" if checkpoint.exists(run) else ""
    print(f"\nAborted{kept}", file=sys.stderr)
    return typer.Exit(INTERRUPT_EXIT)


def run_training(config: core.TrainConfig, data: corpus.Corpus, resume: bool, view: View, console: Console,
                 metrics: MetricsLog) -> tuple[core.Finished, int]:
    """Drive the core loop and render its events; return the Finished event and the parameter count.

    Ctrl-C once saves a checkpoint at the end of the step and exits 130; twice aborts at once.
    """
    flag = StopFlag(view)
    previous = signal.signal(signal.SIGINT, flag)
    params, main = 0, True
    try:
        with view:
            for event in core.train(config, data, resume=resume, should_stop=lambda: flag.requested):
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
                elif isinstance(event, core.Interrupted):
                    flag.saved = True
                    view.__exit__()
                    raise _interrupted(console, event, config.run) if main else typer.Exit(INTERRUPT_EXIT)
                elif isinstance(event, core.Finished):
                    return event, params
    except KeyboardInterrupt:
        raise _aborted(config.run) from None
    finally:
        signal.signal(signal.SIGINT, previous)
    raise TinyshakeError("training ended without finishing")  # pragma: no cover - the core always finishes


@handle_errors
def train(
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help=f"Stage: {', '.join(stages.STAGES)} (default {stages.DEFAULT_STAGE}); "
                              "`tinyshake stages` shows what each adds, its settings and the lecture's val.")] = None,
    run: Annotated[Optional[str], typer.Option(help="Run name (default: the stage's name).")] = None,
    corpus_name: Annotated[Optional[str], typer.Option(
        "--corpus", help=f"Cached corpus to train on (default {corpus.DEFAULT_CORPUS}, or a resumed run's).")] = None,
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
    dtype: Annotated[Optional[str], typer.Option(help="float32 (default), or bfloat16/float16 autocast.")] = None,
    compile_model: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="Use torch.compile.")] = None,
    time_budget: Annotated[Optional[float], typer.Option(
        help="Seconds of training (evaluations excluded); a warmup/warmdown schedule ends exactly then.")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the run from its last checkpoint, with its own settings.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run of the same name.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Don't ask before a very long run.")] = False,
    sample_chars: Annotated[int, typer.Option(help="Characters to sample at the end (0 to skip).", min=0)] = 500,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the sample.")] = False,
    metrics: Annotated[Optional[Path], typer.Option(help="Write every evaluation to this file as JSON lines.")] = None,
    nproc: Annotated[Optional[int], typer.Option(
        help="Train data-parallel in N processes on this machine (runs torchrun for you).", min=1)] = None,
) -> None:
    """Train a stage of the lecture's model ladder, save a checkpoint, and stream a sample."""
    console = make_console()
    dist = distributed.Dist.from_env()
    if nproc is not None and dist.enabled:
        raise UsageError("--nproc starts torchrun itself; leave it out when running under torchrun")
    settings = dict(batch_size=batch_size, block_size=block_size, n_embd=n_embd, n_head=n_head, n_layer=n_layer,
                    dropout=dropout, learning_rate=lr, max_iters=max_iters, eval_interval=eval_interval,
                    eval_iters=eval_iters, seed=seed, device=device_name, dtype=dtype, compile=compile_model,
                    time_budget=time_budget, optimizer=optimizer, muon_lr=muon_lr, warmup=warmup, warmdown=warmdown)
    config, corpus_name = _plan(model, run, corpus_name, resume, overwrite, settings)
    chosen = device.resolve(config.device).device
    if nproc is not None and nproc > 1:
        distributed.check_launch(nproc, chosen)
    log = MetricsLog(metrics if dist.is_main else None, resume)
    if dist.is_main:
        _confirm_slow_run(config, yes or dist.enabled)  # workers under torchrun cannot ask
    ensure_corpus(corpus_name, make_console(stderr=True))  # fetch progress must not mix with the log on stdout
    if nproc is not None and nproc > 1:  # everything is checked and fetched: now the workers do the rest
        code = distributed.launch(nproc, sys.argv[1:])
        if code == distributed.INTERRUPTED:
            raise typer.Exit(INTERRUPT_EXIT)
        distributed.check_exit(code, config.run)
        return
    data = corpus.load(corpus_name)
    if not resume:
        config = core.with_vocab(config, data.tokenizer.vocab_size)
    rich = use_rich() and not quiet and dist.is_main
    view: View = RichView(console, config) if rich else PlainView(console, quiet)
    if not dist.is_main:
        view = SilentView(console)  # rank 0 alone shows the run
    finished, params = run_training(config, data, resume, view, console, log)
    if rich:
        _summary(console, finished, params, config.run)
    if sample_chars and dist.is_main:
        console.file.flush()
        try:
            stream_sample(finished.model, data.tokenizer, sample_chars)
        except KeyboardInterrupt:
            print(file=sys.stdout)
            raise typer.Exit(INTERRUPT_EXIT) from None
