"""``tinyshake train``: train one stage of the ladder with live progress, then stream a sample."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from tinyshake import checkpoint, corpus, device, sampling, stages, train as core
from tinyshake.cli._output import handle_errors, make_console, use_rich
from tinyshake.cli.fetch import ensure_corpus
from tinyshake.errors import UsageError
from tinyshake.model import flops_per_token

CPU_FLOPS_GUESS = 60e9  # sustained training FLOP/s on a laptop CPU, for the gpt stage's warning only


class StopFlag:
    """The first Ctrl-C asks the loop to finish its step and save; a second one stops at once."""

    def __init__(self, console: Console) -> None:
        self.requested = False
        self.console = console

    def __call__(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.console.print("Stopping after this step and saving a checkpoint (Ctrl-C again to abort)...")


def _metrics_writer(path: Optional[Path]) -> Callable[[core.Evaluated], None]:
    if path is None:
        return lambda event: None

    def write(event: core.Evaluated) -> None:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": event.step, "train": event.train, "val": event.val,
                                     "elapsed": round(event.elapsed, 3)}) + "\n")

    return write


def lecture_line(event: core.Evaluated) -> str:
    """The lecture's log line, e.g. ``step 300: train loss 2.8110, val loss 2.8249``."""
    return f"step {event.step}: train loss {event.train:.4f}, val loss {event.val:.4f}"


class PlainView:
    """Non-TTY output: the lecture's lines and nothing else."""

    def __init__(self, console: Console, quiet: bool) -> None:
        self.console, self.quiet = console, quiet

    def __enter__(self) -> "PlainView":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def started(self, event: core.Started) -> None:
        for notice in event.notices:
            print(f"note: {notice}", file=sys.stderr)

    def stepped(self, event: core.Stepped) -> None:
        return None

    def evaluated(self, event: core.Evaluated) -> None:
        if not self.quiet:
            self.console.print(lecture_line(event))


class RichView:
    """TTY output: a progress bar with speed and a smoothed loss, and a loss table that grows."""

    def __init__(self, console: Console, config: core.TrainConfig, quiet: bool) -> None:
        self.console, self.config, self.quiet = console, config, quiet
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[its]:>6.1f} it/s"), TextColumn("{task.fields[tps]:>8,.0f} tok/s"),
            TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console,
        )
        self.table = Table(title=f"{config.stage} · run {config.run}", title_justify="left")
        for column in ("step", "train", "val", "Δ val", "elapsed"):
            self.table.add_column(column, justify="right")
        self.task = self.progress.add_task(config.stage, total=config.max_iters, its=0.0, tps=0.0, loss="-")
        self.live = Live(Group(self.table, self.progress), console=console, refresh_per_second=8)
        self.smooth: Optional[float] = None
        self.last_val: Optional[float] = None
        self.last_show = 0.0
        self.mark = (0, time.perf_counter())

    def __enter__(self) -> "RichView":
        if not self.quiet:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()

    def started(self, event: core.Started) -> None:
        for notice in event.notices:
            self.console.print(f"[yellow]note:[/] {notice}")
        self.console.print(f"Training [bold]{event.config.stage}[/] ({event.parameters:,} parameters) on {event.device}"
                           + (f", resuming at step {event.start_step}" if event.start_step else ""))
        self.progress.update(self.task, completed=event.start_step)
        self.mark = (event.start_step, time.perf_counter())

    def stepped(self, event: core.Stepped) -> None:
        now = time.perf_counter()
        if now - self.last_show < 0.25 and event.step < self.config.max_iters:
            return
        loss = event.loss.item()
        self.smooth = loss if self.smooth is None else 0.9 * self.smooth + 0.1 * loss
        steps, seconds = event.step - self.mark[0], now - self.mark[1]
        its = steps / seconds if seconds > 0 else 0.0
        self.progress.update(self.task, completed=event.step, its=its, loss=f"{self.smooth:.4f}",
                             tps=its * self.config.batch_size * self.config.block_size)
        self.last_show = now

    def evaluated(self, event: core.Evaluated) -> None:
        delta = "" if self.last_val is None else f"{event.val - self.last_val:+.4f}"
        self.table.add_row(str(event.step), f"{event.train:.4f}", f"{event.val:.4f}", delta, f"{event.elapsed:.1f}s")
        self.last_val = event.val
        self.mark = (event.step, time.perf_counter())  # evaluation time is not training speed


def _confirm_slow_run(config: core.TrainConfig, yes: bool, console: Console) -> None:
    """Warn before the gpt stage on a CPU: it takes hours. Ask on a terminal unless --yes."""
    if config.stage != "gpt" or device.resolve(config.device).device.type != "cpu":
        return
    tokens = config.batch_size * config.block_size * config.max_iters
    hours = flops_per_token(config.model) * tokens / CPU_FLOPS_GUESS / 3600
    console.print(f"Warning: the gpt stage on a CPU takes hours (roughly {hours:.0f} h here); "
                  "try --model mini, or a GPU.")
    if yes or not sys.stdin.isatty():
        return
    if not typer.confirm("Train it anyway?", default=False):
        raise typer.Exit(1)


def _check_run_name(config: core.TrainConfig, resume: bool, overwrite: bool) -> None:
    if resume and not checkpoint.exists(config.run):
        raise UsageError(f"there is no run {config.run!r} to resume; start it without --resume")
    if checkpoint.exists(config.run) and not (resume or overwrite):
        record = checkpoint.read_record(config.run)
        raise UsageError(f"run {config.run!r} already exists (step {record.get('step')}); use --resume to continue "
                         "it, --overwrite to replace it, or --run NAME for a new one")


def stream_sample(model: Any, tokenizer: corpus.CharTokenizer, chars: int, out: Any = None) -> None:
    """Stream ``chars`` sampled characters from a context of token 0, printing the context as the lecture does."""
    out = out or sys.stdout
    out.write(tokenizer.decode([0]))
    for token in sampling.generate(model, [0], sampling.SamplingSettings(max_new_tokens=chars)):
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
        table.add_row(key, value)
    console.print(table)


def run_training(config: core.TrainConfig, data: corpus.Corpus, resume: bool, console: Console, quiet: bool,
                 metrics: Optional[Path]) -> Iterator[core.Finished]:
    """Drive the core loop, render its events, and hand back the Finished event (or exit 130 on Ctrl-C)."""
    write_metrics = _metrics_writer(metrics)
    view = RichView(console, config, quiet) if use_rich() else PlainView(console, quiet)
    flag = StopFlag(console)
    previous = signal.signal(signal.SIGINT, flag)
    params = 0
    try:
        with view:
            for event in core.train(config, data, resume=resume, should_stop=lambda: flag.requested):
                if isinstance(event, core.Started):
                    params = event.parameters
                    view.started(event)
                elif isinstance(event, core.Stepped):
                    view.stepped(event)
                elif isinstance(event, core.Evaluated):
                    view.evaluated(event)
                    write_metrics(event)
                elif isinstance(event, core.Interrupted):
                    view.__exit__()
                    console.print(f"Interrupted at step {event.step}; checkpoint saved in {event.path}")
                    console.print(f"Resume with: tinyshake train --model {config.stage} --run {config.run} --resume")
                    raise typer.Exit(130)
                elif isinstance(event, core.Finished):
                    yield event
    finally:
        signal.signal(signal.SIGINT, previous)
    if use_rich() and not quiet:
        _summary(console, event, params, config.run)  # type: ignore[arg-type]


@handle_errors
def train(
    model: Annotated[str, typer.Option("--model", "-m", help=f"Stage: {', '.join(stages.STAGES)}.")] = stages.DEFAULT_STAGE,
    run: Annotated[Optional[str], typer.Option(help="Run name (default: the stage's name).")] = None,
    corpus_name: Annotated[str, typer.Option("--corpus", help="Cached corpus to train on.")] = corpus.DEFAULT_CORPUS,
    batch_size: Annotated[Optional[int], typer.Option(help="Sequences per batch.")] = None,
    block_size: Annotated[Optional[int], typer.Option(help="Context length.")] = None,
    n_embd: Annotated[Optional[int], typer.Option(help="Embedding width.")] = None,
    n_head: Annotated[Optional[int], typer.Option(help="Attention heads.")] = None,
    n_layer: Annotated[Optional[int], typer.Option(help="Blocks.")] = None,
    dropout: Annotated[Optional[float], typer.Option(help="Dropout probability.")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="AdamW learning rate.")] = None,
    max_iters: Annotated[Optional[int], typer.Option(help="Training steps.")] = None,
    eval_interval: Annotated[Optional[int], typer.Option(help="Steps between evaluations.")] = None,
    eval_iters: Annotated[int, typer.Option(help="Random batches per split in each evaluation.")] = 200,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 1337,
    device_name: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32, or bfloat16/float16 autocast.")] = "float32",
    compile_model: Annotated[bool, typer.Option("--compile", help="Use torch.compile.")] = False,
    time_budget: Annotated[Optional[float], typer.Option(help="Stop training after this many seconds.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run of the same name.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Don't ask before a very long run.")] = False,
    sample_chars: Annotated[int, typer.Option(help="Characters to sample at the end (0 to skip).", min=0)] = 500,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the sample.")] = False,
    metrics: Annotated[Optional[Path], typer.Option(help="Append every evaluation to this file as JSON lines.")] = None,
) -> None:
    """Train a stage of the lecture's model ladder, save a checkpoint, and stream a sample."""
    console = make_console()
    stages.get(model)
    ensure_corpus(corpus_name, console)
    data = corpus.load(corpus_name)
    config = core.make_config(
        model, data.tokenizer.vocab_size, run=run, batch_size=batch_size, block_size=block_size, n_embd=n_embd,
        n_head=n_head, n_layer=n_layer, dropout=dropout, learning_rate=lr, max_iters=max_iters,
        eval_interval=eval_interval, eval_iters=eval_iters, seed=seed, device=device_name, dtype=dtype,
        compile=compile_model, time_budget=time_budget,
    )
    device.resolve(config.device)
    _check_run_name(config, resume, overwrite)
    _confirm_slow_run(config, yes, console)
    for finished in run_training(config, data, resume, console, quiet, metrics):
        if sample_chars:
            console.file.flush()
            stream_sample(finished.model, data.tokenizer, sample_chars)
