"""``tinyshake train``: train one stage of the ladder with live progress, then stream a sample.

The core decides (:func:`tinyshake.training.plan.make_plan`), estimates
(:mod:`tinyshake.training.estimates`) and trains (:func:`tinyshake.training.train.train`); this
module parses the options, drives the training generator and hands its events
to a view (:mod:`tinyshake.cli._train_views`). It imports no torch at module
level, so ``tinyshake train --help`` answers at once.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.text import Text

from tinyshake import tokens
from tinyshake.training import estimates, stages
from tinyshake.cli import _torch
from tinyshake.cli import _train_views as views
from tinyshake.cli._confirm import confirm_slow_run
from tinyshake.cli._corpus import ensure_corpus
from tinyshake.cli._output import handle_errors, make_console, use_rich
from tinyshake.cli._signals import INTERRUPT_EXIT, StopFlag, handling
from tinyshake.errors import TinyshakeError, UsageError
from tinyshake.training.metrics import MetricsLog

if TYPE_CHECKING:
    from tinyshake import corpus
    from tinyshake.training import train as core
    from tinyshake.training.plan import Plan
    from tinyshake.tokens import Tokenizer


def stream_sample(model: Any, tokenizer: Tokenizer, chars: int, out: Any = None) -> None:
    """Stream ``chars`` sampled characters from a context of token 0, printing the context as the lecture does.

    A token is at least one character, so ``chars`` tokens always suffice; a BPE's last one is cut to fit.
    """
    from tinyshake import sampling

    out = out or sys.stdout
    context = [sampling.START_TOKEN]
    out.write(tokenizer.decode(context))
    written = 0
    for token in sampling.generate(model, context, sampling.SamplingSettings(max_new_tokens=chars)):
        piece = tokenizer.decode([token])[: chars - written]
        out.write(piece)
        out.flush()
        written += len(piece)
        if written == chars:
            break
    out.write("\n")
    out.flush()


def run_training(plan: Plan, data: corpus.Corpus, view: views.View, console: Console,
                 metrics: MetricsLog) -> tuple[core.Finished, int, StopFlag]:
    """Drive the core loop and render its events; return the Finished event, the parameter count and the flag.

    A stop signal once saves a checkpoint at the end of the step and exits with
    the shell's code for it; twice aborts at once, as does one during the
    build, or during a first step that no evaluation came before (see :class:`StopFlag`).
    """
    from tinyshake.training import train as core

    flag = StopFlag(view.stopping, at_once=True)  # until the model is built
    params, main = 0, True
    try:
        with handling(flag), view:
            for event in core.train(plan, data, should_stop=lambda: flag.requested):
                if isinstance(event, core.Started):  # built: an evaluation that comes first stops and saves
                    params, main = event.parameters, event.rank == 0
                    flag.at_once = event.start_step not in event.config.eval_steps()
                    view.started(event)
                elif isinstance(event, core.Stepped):
                    flag.at_once = False
                    view.stepped(event)
                elif isinstance(event, core.Evaluating):
                    view.evaluating(event)
                elif isinstance(event, core.Evaluated):
                    view.evaluated(event)
                    metrics.write(event)
                elif isinstance(event, core.Saved):
                    view.saved(event)
                elif isinstance(event, core.Rethreaded) and main:
                    view.note(views.rethreaded_line(event))
                elif isinstance(event, core.Interrupted):
                    flag.saved = True
                    view.__exit__()
                    if main:
                        raise views.interrupted(console, event, plan.run, flag.exit_code)
                    raise typer.Exit(flag.exit_code)
                elif isinstance(event, core.Finished):
                    flag.saved = True
                    return event, params, flag
    except KeyboardInterrupt:
        raise views.aborted(plan.run, flag.exit_code) from None
    raise TinyshakeError("training ended without finishing")  # pragma: no cover - the core always finishes


def _after_training(console: Console, plan: Plan, data: corpus.Corpus, rich: bool, quiet: bool,
                    sample_chars: int, finished: core.Finished, params: int, flag: StopFlag) -> None:
    """The summary, the budget's line and the sample; a stop signal during the last save skips the sample."""
    budget = plan.config.time_budget
    if rich:
        views.summary(console, finished, params, plan.run, budget)
    elif finished.budget_ended and budget and not quiet:
        print(f"note: {views.budget_line(finished, budget)}", file=sys.stderr)
    if flag.requested:
        console.print(f"Interrupted after the last step; checkpoint saved in {finished.path} (sample skipped)",
                      markup=False)
        raise typer.Exit(flag.exit_code)
    if sample_chars:
        if rich:
            console.print(Text(f"A sample of {sample_chars} characters, from a newline:", style="bold"))
        console.file.flush()
        try:
            stream_sample(finished.model, data.tokenizer, sample_chars)
        except KeyboardInterrupt:
            print(file=sys.stdout)
            raise typer.Exit(INTERRUPT_EXIT) from None
    following = views.next_line(plan.config.stage)
    if rich and following:  # a hint for the learner at the terminal; a pipe keeps the lecture's log
        console.print(Text(following, style="bold"))


@handle_errors
def train(
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help=f"Stage to train: `tinyshake stages` shows what each adds, its settings and the "
                              f"lecture's val (default {stages.DEFAULT_STAGE}, or the stage that a --time-budget "
                              "is best spent on).")] = None,
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
        help="Random batches per split in each evaluation (default 200; 20 with --time-budget).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (default 1337).")] = None,
    device_name: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or mps (default auto).")] = None,
    dtype: Annotated[Optional[str], typer.Option(
        help="float32 (the lecture's stages' default), bfloat16/float16 autocast, or auto (modern's default): "
             "bfloat16 where the CPU or GPU multiplies it natively, else float32.")] = None,
    compile_model: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="Use torch.compile.")] = None,
    time_budget: Annotated[Optional[float], typer.Option(
        help="Seconds of training (evaluations excluded); a warmup/warmdown schedule ends exactly then. Without "
             "--model it also picks the stage that learns most in that time on this machine.")] = None,
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
    plain: Annotated[bool, typer.Option(
        "--plain", help="Train the lecture's code exactly as written (tinyshake/models/model.py and its AdamW), without "
                        "the speed layer: slower, the same losses to float rounding.")] = False,
    tokenizer: Annotated[Optional[str], typer.Option(
        help="char (the lecture's, the default) or bpe (the sequel's: byte-pair merges of the characters, "
             "learned from the train split).")] = None,
    vocab_size: Annotated[Optional[int], typer.Option(
        help="The BPE's size, from the corpus's characters up to 65,536 (default 512).")] = None,
) -> None:
    """Train a stage of the lecture's model ladder, save a checkpoint, and stream a sample."""
    settings = dict(batch_size=batch_size, block_size=block_size, n_embd=n_embd, n_head=n_head, n_layer=n_layer,
                    dropout=dropout, learning_rate=lr, max_iters=max_iters, eval_interval=eval_interval,
                    eval_iters=eval_iters, seed=seed, device=device_name, dtype=dtype, compile=compile_model,
                    time_budget=time_budget, optimizer=optimizer, muon_lr=muon_lr, warmup=warmup, warmdown=warmdown,
                    threads_requested=threads, plain=plain or None, tokenizer=tokenizer, bpe_vocab=vocab_size)
    try:
        _train(model, run, corpus_name, resume, overwrite, yes, sample_chars, quiet, metrics, nproc, settings)
    except KeyboardInterrupt:  # before training's own handler is in place: importing, fetching, loading
        print("\nInterrupted before training started; nothing was written", file=sys.stderr)
        raise typer.Exit(INTERRUPT_EXIT) from None


def _train(stage: Optional[str], run: Optional[str], corpus_name: Optional[str], resume: bool, overwrite: bool,
           yes: bool, sample_chars: int, quiet: bool, metrics: Optional[Path], nproc: Optional[int],
           settings: dict[str, Any]) -> None:
    """Plan, check, fetch, then train here or launch torchrun: every refusal comes before anything is written."""
    _torch.load()  # first: a Ctrl-C while torch loads must end the command
    from tinyshake import corpus
    from tinyshake.training import distributed
    from tinyshake.training import train as core
    from tinyshake.training.plan import make_plan

    console = make_console()
    dist = distributed.Dist.from_env()
    if nproc is not None and dist.enabled:
        raise UsageError("--nproc starts torchrun itself; leave it out when running under torchrun")
    if dist.enabled and stage is None and settings["time_budget"] is not None:
        raise UsageError("under torchrun, give --model with --time-budget: each process would size the model on its "
                         "own (--nproc N sizes it once for all)")
    plan = make_plan(stage, run, corpus_name, resume, overwrite, **settings)
    if plan.complete:
        views.report_complete(plan)
        return
    if nproc is not None and nproc > 1:
        distributed.check_launch(nproc, plan.device.device)
    estimates.refuse_endless_evaluation(plan, yes)  # on every rank alike, before anything is written
    log = MetricsLog(metrics if dist.is_main else None, resume)
    if dist.is_main:
        confirm_slow_run(plan, yes or dist.enabled)  # workers under torchrun cannot ask
    ensure_corpus(plan.corpus, make_console(stderr=True))  # fetch progress must not mix with the log on stdout
    if nproc is not None and nproc > 1:  # everything is checked and fetched: now the workers do the rest
        sized = ["--model", plan.config.stage] if plan.sized is not None else []  # every worker trains one shape
        if plan.sized is not None:  # a notice, as every plan's notices are, --quiet or not
            print(f"note: {plan.sized.describe()}", file=sys.stderr, flush=True)
        code = distributed.launch(nproc, sys.argv[1:] + sized)
        if code == distributed.INTERRUPTED:
            raise typer.Exit(INTERRUPT_EXIT)
        distributed.check_exit(code, plan.run)
        return
    data = corpus.load(plan.corpus)
    if plan.config.tokenizer == tokens.BPE and plan.resume is None:
        tokens.check_vocab_size(plan.config.bpe_vocab or 0, data.tokenizer.vocab_size)  # before the note
        if not quiet and dist.is_main:
            print(f"note: learning a BPE of {plan.config.bpe_vocab:,} tokens from the train split of corpus "
                  f"{plan.corpus!r}", file=sys.stderr, flush=True)
    data = core.tokenized(plan, data)
    rich = use_rich() and not quiet and dist.is_main
    stored = plan.resume
    earlier = [(row, stored.bits_per_char(row.val)) for row in stored.evaluations()] if stored is not None else []
    view: views.View = views.RichView(console, plan.config, data.tokenizer, earlier) if rich else \
        views.PlainView(console, quiet)
    if not dist.is_main:
        view = views.SilentView(console)  # rank 0 alone shows the run
    finished, params, flag = run_training(plan, data, view, console, log)
    if dist.is_main:
        _after_training(console, plan, data, rich, quiet, sample_chars, finished, params, flag)
