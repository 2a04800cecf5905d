"""Training one stage of the ladder: a generator of events, so any front end can show it.

The loop (:func:`_loop`) is the lecture's loop, step for step: evaluate when
the step calls for it, draw a batch with ``torch.randint``, forward,
``zero_grad``, backward, AdamW step. On the CPU with seed 1337 it draws the
same random numbers in the same order as the lecture's code, so it prints the
lecture's losses. What tinyshake adds (checkpoints, best weights, the time
budget, the NaN stop, stop requests) is a named piece in
:mod:`tinyshake.training.run_state`, called from the loop; the run's lock, the thread
count and the model are set up around it (:func:`train`, :func:`_prepare`,
:func:`_build`); the events it yields are in :mod:`tinyshake.training.events`.

What is faster than the lecture: a batch is one gather, and an evaluation runs
its ``eval_iters`` batches as a few large forward passes under
``torch.inference_mode`` (the same indices, drawn in the same order).

Under torchrun the same loop trains data-parallel (see :mod:`tinyshake.training.distributed`):
each rank draws its own batches (seed + rank), DistributedDataParallel averages
the gradients, evaluations are averaged over the ranks, every rank stops at the
same step, and rank 0 alone writes checkpoints. Every rank yields the events;
front ends show them on rank 0 only.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Callable, Generator, Iterator, Optional, Union

import torch
import torch.nn as nn
from torch.nn import functional as F

from tinyshake import checkpoint, tokens
from tinyshake.models import kernels, optim, speed
from tinyshake.store import runlock
from tinyshake.training import distributed, threads, tuning
from tinyshake.corpus import Corpus
from tinyshake.errors import UsageError
from tinyshake.training.estimates import OutOfMemory, check_fits
from tinyshake.training.events import (  # noqa: F401 - re-exported: front ends import the events from here
    Evaluated, Evaluating, Event, Finished, Interrupted, Rethreaded, Saved, Started, Stepped,
)
from tinyshake.models.model import ModelConfig, count_parameters
from tinyshake.training.plan import (  # noqa: F401 - the settings a run executes, re-exported for scripts and tests
    DEFAULT_BPE_VOCAB, DTYPES, OPTIMIZERS, Plan, TrainConfig, for_config, make_config, resume_config, validate,
    with_vocab,
)
from tinyshake.training.run_state import Checkpointer, Clocks, Diverged, History, NanWatch, Run  # noqa: F401 - Diverged too

EVAL_CHUNK_TOKENS = 1 << 12  # measured: chunks that stay in cache beat one huge pass on a CPU


# --------------------------------------------------------------------------- data


def draw_indices(data: torch.Tensor, batch_size: int, block_size: int) -> torch.Tensor:
    """The lecture's random window starts: ``torch.randint(len(data) - block_size, (batch_size,))``."""
    return torch.randint(len(data) - block_size, (batch_size,))


def windows(data: torch.Tensor, starts: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets for windows starting at ``starts``, as one gather each."""
    offsets = torch.arange(block_size + 1, device=data.device)
    rows = data[starts.to(data.device).unsqueeze(1) + offsets]
    return rows[:, :-1], rows[:, 1:]


def get_batch(data: torch.Tensor, batch_size: int, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    return windows(data, draw_indices(data, batch_size, block_size), block_size)


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, dtype))


class EvaluationStopped(Exception):
    """``estimate_loss`` was asked to stop between two chunks; its partial result is thrown away."""


def estimate_loss(*args: Any, **kwargs: Any) -> dict[str, float]:
    """The lecture's estimate without its progress: :func:`estimating`'s arguments, its result."""
    chunks = estimating(*args, **kwargs)
    try:
        while True:
            next(chunks)
    except StopIteration as end:
        return end.value


@torch.inference_mode()
def estimating(
    model: nn.Module,
    splits: dict[str, torch.Tensor],
    batch_size: int,
    block_size: int,
    eval_iters: int,
    dtype: str = "float32",
    should_stop: Optional[Callable[[], bool]] = None,
) -> Generator[tuple[int, int], None, dict[str, float]]:
    """The lecture's estimate: the mean of ``eval_iters`` random-batch losses per split, in eval mode.

    The indices are drawn batch by batch in the lecture's order, a chunk of
    batches at a time, and each chunk runs as one forward pass; the forward
    passes draw no random numbers in eval mode, so the order of draws is the
    lecture's. As in the lecture, the batch losses go into one float32 tensor
    of ``eval_iters`` values (4 bytes a batch, allocated up front, so a size
    that cannot fit fails at once) whose mean is the estimate. ``should_stop``
    is asked before each chunk, so a long evaluation stops within one chunk
    (:class:`EvaluationStopped`). After each chunk it yields the batches done and
    their total over all splits, so a front end can show an evaluation's progress;
    the estimate is its return value.
    """
    was_training = model.training
    model.eval()
    out = {}
    per_chunk = max(1, EVAL_CHUNK_TOKENS // (batch_size * block_size))
    device = next(model.parameters()).device
    done, total = 0, eval_iters * len(splits)
    try:
        for split, data in splits.items():
            losses = torch.empty(eval_iters, dtype=torch.float32, device=device)
            for first in range(0, eval_iters, per_chunk):
                if should_stop is not None and should_stop():
                    raise EvaluationStopped
                count = min(per_chunk, eval_iters - first)
                chunk = torch.cat([draw_indices(data, batch_size, block_size) for _ in range(count)])
                x, y = windows(data, chunk, block_size)
                with autocast(device, dtype):
                    logits, _ = model(x)
                token_losses = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
                losses[first: first + count] = token_losses.view(-1, batch_size * block_size).mean(dim=1)
                done += count
                yield done, total
            out[split] = losses.cpu().mean().item()
    finally:
        model.train(was_training)
    return out


# --------------------------------------------------------------------------- memory and divergence


def is_out_of_memory(exc: BaseException) -> bool:
    """True for the ways torch and Python say an allocation failed (CPU allocator, CUDA, MPS, Python)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        needle in text for needle in ("can't allocate memory", "out of memory", "not enough memory"))


@contextlib.contextmanager
def _memory_for(what: str, lower: str) -> Iterator[None]:
    """Turn an allocation failure inside the block into one line: what ran out, and what to lower."""
    try:
        yield
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        raise OutOfMemory(f"not enough memory for {what}; lower {lower}") from None


def _building(model: ModelConfig) -> contextlib.AbstractContextManager:
    if model.arch == "bigram":
        return _memory_for(f"the model (a {model.vocab_size}-character vocabulary)", "the corpus's vocabulary")
    return _memory_for(f"the model (n_embd {model.n_embd}, n_layer {model.n_layer}, block_size {model.block_size})",
                       "--n-embd, --n-layer or --block-size")


# --------------------------------------------------------------------------- the lecture's loop


def _loop(run: Run) -> Iterator[Event]:
    """The lecture's training loop, step for step; what tinyshake adds is a named call on ``run``.

    With seed 1337 on the CPU it draws the lecture's random numbers in its order, so it prints its losses.
    """
    config, model, optimizer = run.config, run.forward, run.optimizer
    step = run.start
    try:
        while step < config.max_iters:
            # every once in a while evaluate the loss on train and val sets
            if run.clocks.budget_mark() | run.history.due(step):  # both asked: a tenth is used once
                yield from _evaluate(run, step)
            began = time.perf_counter()
            run.schedule(step)
            with _step_memory(config):
                # sample a batch of data
                xb, yb = get_batch(run.splits["train"], config.batch_size, config.block_size)
                # evaluate the loss
                with autocast(run.device, run.dtype), run.attention():
                    logits, loss = model(xb, yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            step += 1
            run.nan.see(step, loss)
            run.clocks.add_step(time.perf_counter() - began)
            yield Stepped(step, loss.detach(), run.clocks.elapsed(), run.clocks.trained)
            if run.stop_requested():
                run.nan.check(step)
                yield run.checkpoints.save(step, run.history, run.clocks)
                yield run.checkpoints.interrupted(step)
                return
            if run.clocks.budget_ended(step):
                yield from _evaluate(run, step)  # show where the budget ended
                yield _finished(run, step, budget_ended=True)
                return
        yield from _finish(run, step)
    except EvaluationStopped:  # a stop during an evaluation keeps the last save rather than half an evaluation
        yield run.checkpoints.interrupted(step, during_evaluation=True)


def _step_memory(config: TrainConfig) -> contextlib.AbstractContextManager:
    return _memory_for(f"a training step at batch_size {config.batch_size} × block_size {config.block_size}",
                       "--batch-size or --block-size")


def _evaluate(run: Run, step: int, final: bool = False) -> Iterator[Event]:
    """One estimate, shown and saved; the final one draws from a fork of the random streams.

    Forking keeps the final evaluation from moving the stream that the
    sample (and a later ``--resume``) draws from, so both stay the lecture's.
    Between evaluation and training the machine is looked at again (50 ms, not
    a step's rhythm) in case another program changed the threads worth using.
    """
    config = run.config
    rng = torch.random.fork_rng(devices=[]) if final else contextlib.nullcontext()
    with rng, _memory_for(f"an evaluation of {config.eval_iters:,} batches at batch_size {config.batch_size} × "
                          f"block_size {config.block_size}", "--eval-iters, --batch-size or --block-size"):
        chunks = estimating(run.forward, run.splits, config.batch_size, config.block_size, config.eval_iters,
                            run.dtype, should_stop=run.stop_requested)
        losses = yield from _evaluating(step, chunks)
    losses = {split: distributed.mean(loss) for split, loss in losses.items()}  # over every rank's batches
    if not all(math.isfinite(value) for value in losses.values()):
        raise run.checkpoints.diverged(step, "the evaluated loss")
    event = Evaluated(step, losses["train"], losses["val"], run.clocks.elapsed(), final, run.chars_per_token)
    rethreaded = threads.refresh()
    if rethreaded is not None:
        run.checkpoints.record["threads"] = rethreaded.threads
        yield Rethreaded(step, rethreaded)
    row, improved = run.history.add(event)
    yield event
    yield run.checkpoints.save(step, run.history, run.clocks, final=row if final else None, best=improved)


def _evaluating(step: int, chunks: Generator[tuple[int, int], None, dict[str, float]]
                ) -> Generator[Evaluating, None, dict[str, float]]:
    """An estimate's progress as events, so that a front end shows it; returns the estimate."""
    while True:
        try:
            done, total = next(chunks)
        except StopIteration as end:
            return end.value
        yield Evaluating(step, done, total)


def _finish(run: Run, step: int) -> Iterator[Event]:
    """After the last step: the final weights evaluated (unless the lecture's last evaluation was of them), saved.

    The final evaluation runs on forked random streams, so a stop during it
    leaves the trained state whole: it is saved.
    """
    run.nan.check(step)
    last = run.history.last
    if last is None or last.step < step - 1:  # the last lecture evaluation was not at the last step
        try:
            yield from _evaluate(run, step, final=True)
        except EvaluationStopped:
            yield run.checkpoints.save(step, run.history, run.clocks)
            yield run.checkpoints.interrupted(step)
            return
    else:
        yield run.checkpoints.save(step, run.history, run.clocks)
    yield _finished(run, step)


def _finished(run: Run, step: int, budget_ended: bool = False) -> Finished:
    history = run.history
    return Finished(step, history.best_val, run.clocks.elapsed(), str(run.checkpoints.saved_path), run.model,
                    history.best_step, history.last, budget_ended)


# --------------------------------------------------------------------------- a session around the loop


def train(
    plan: Union[Plan, TrainConfig],
    corpus: Corpus,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[Event]:
    """Execute ``plan`` on ``corpus``, yielding events; checkpoints go to ``<home>/runs/<run>/``.

    The run's lock is held from the first event to the last (rank 0 of a
    data-parallel job holds it for all ranks). A bare :class:`TrainConfig` is
    planned as a new run that may replace its namesake (:func:`for_config`).
    Under torchrun this process joins the job first and leaves it when the
    generator ends; if another rank dies, this one stops with a one-line
    :class:`~tinyshake.training.distributed.WorkerFailed`.
    """
    if isinstance(plan, TrainConfig):
        plan = for_config(plan, corpus.name)
    config = plan.config if plan.resume is not None else with_vocab(plan.config, corpus.tokenizer.vocab_size)
    validate(config)
    check_fits(config, corpus, plan.device.device)
    _check_corpus(plan, corpus)
    owns_group = not distributed.active()
    dist = distributed.init(plan.device.device.type)
    try:
        lock = runlock.hold(plan.run, "train") if dist.is_main else contextlib.nullcontext()
        with lock, distributed.peer_failures(config.run):
            _check_still_new(plan)
            yield from _train(plan, config, corpus, should_stop, dist, distributed.device_for(dist, plan.device.device))
    finally:
        if owns_group:
            distributed.shutdown()  # _train's frame, and with it the DDP wrapper, is gone by now


def tokenized(plan: Plan, corpus: Corpus) -> Corpus:
    """``corpus`` (as :func:`tinyshake.corpus.load` gives it, in characters) in the tokens the plan's run reads.

    A new BPE run learns its merges from the train split alone; a resumed one reads its own back, sealed by its
    record. The lecture's character runs read the corpus as it is.
    """
    config = plan.config
    if config.tokenizer == tokens.CHAR:
        return corpus
    if plan.resume is not None:
        return corpus.with_tokenizer(tokens.of_record(plan.resume))
    return corpus.with_bpe(config.bpe_vocab or DEFAULT_BPE_VOCAB)


def _check_still_new(plan: Plan) -> None:
    """Under the lock: a run that another process created since planning is not replaced silently."""
    if plan.resume is None and not plan.overwrite and checkpoint.exists(plan.run):
        raise UsageError(f"run {plan.run!r} was created by another process meanwhile; use --run NAME for a new one")


def _check_corpus(plan: Plan, corpus: Corpus) -> None:
    """``--resume`` goes on with the text the run was trained on, or not at all."""
    if plan.resume is None:
        return
    if list(plan.resume.vocab) != corpus.tokenizer.chars:
        raise checkpoint.CheckpointError(f"run {plan.run!r} was trained on another vocabulary than corpus "
                                         f"{corpus.name!r}")
    stored = plan.resume.corpus
    if stored is None or stored.sha256 == corpus.sha256:
        return
    raise UsageError(f"run {plan.run!r} was trained on corpus {stored.name!r} (SHA-256 "
                     f"{stored.sha256[:12]}…), but corpus {corpus.name!r} holds other text (SHA-256 "
                     f"{corpus.sha256[:12]}…); --resume needs the run's own corpus")


def _train(plan: Plan, config: TrainConfig, corpus: Corpus, should_stop: Callable[[], bool],
           dist: distributed.Dist, device: torch.device) -> Iterator[Event]:
    run, started = _prepare(plan, config, corpus, should_stop, dist, device)
    yield started
    run.clocks.start()
    yield from _loop(run)


def _prepare(plan: Plan, config: TrainConfig, corpus: Corpus, should_stop: Callable[[], bool],
             dist: distributed.Dist, device: torch.device) -> tuple[Run, Started]:
    """Everything before the first step, in the order that keeps the lecture's random draws.

    The model is built from the seed; under torchrun each rank then reseeds
    for its own batches (DDP gives every rank rank 0's weights); a resumed
    run's state is loaded last, since loading draws from the random stream.
    """
    notices = list(plan.notices)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(config.seed)
    model, optimizer = _build(config, device)
    if dist.enabled:
        torch.manual_seed(config.seed + dist.rank)
    start, elapsed_before = _restore(plan, config, model, optimizer, dist) if plan.resume else (0, 0.0)
    _use_cpu(plan)  # the model fits and the state loaded: from here on the run trains
    attention = _attention_for_training(config, device, plan.dtype, notices)
    forward = _maybe_compile(distributed.wrap(model, dist, device), config, device, notices, attention)
    splits = {"train": corpus.train.to(device), "val": corpus.val.to(device)}
    record = _record(config, corpus, model, plan.resume, plan.dtype)
    stored_tokenizer = corpus.tokenizer.to_json() if corpus.tokenizer.kind == tokens.BPE else None
    checkpoints = Checkpointer(config, model, optimizer, record, dist, start if plan.resume else None,
                               stored_tokenizer)
    clocks = Clocks(elapsed_before, plan.trained_seconds, config.time_budget, config.max_iters)
    run = Run(config, device, plan.dtype, model, forward, optimizer, splits, attention, start,
              History.of(plan.resume, config), checkpoints, clocks, NanWatch(device, checkpoints), should_stop,
              (corpus.chars_per_token("train"), corpus.chars_per_token("val")))
    return run, Started(config, record["parameters"], str(device), start, notices, dist.rank, dist.world_size,
                        plan.threads.describe() if plan.threads is not None else "", model)


def _build(config: TrainConfig, device: torch.device) -> tuple[nn.Module, optim.Combined]:
    """The model and its optimizer, drawn from the random stream as it stands: the one place a run makes them.

    The lecture's modules (tinyshake/models/model.py) with the speed layer swapped in, or as written with ``--plain``.
    """
    with _building(config.model):
        model = speed.build(config.model, config.plain).to(device)
        optimizer = optim.make(model, config.optimizer, config.learning_rate, config.muon_lr, config.plain)
    return model, optimizer


def _record(config: TrainConfig, corpus: Corpus, model: nn.Module, stored: Optional[checkpoint.RunRecord],
            dtype: str) -> dict[str, Any]:
    """What every save records of this session beside its step, history and clocks."""
    return {
        "name": config.run, "stage": config.stage, "model": config.model.to_dict(), "hyper": config.hyper(),
        "vocab": corpus.tokenizer.chars, "corpus": {"name": corpus.name, "sha256": corpus.sha256},
        "tokenizer": corpus.tokenizer.kind,
        "chars_per_token": {split: corpus.chars_per_token(split) for split in ("train", "val")},
        "parameters": count_parameters(model), "max_iters": config.max_iters,
        "created": stored.created if stored is not None else None,
        "dtype": dtype, "threads": torch.get_num_threads(),  # what this session used: auto resolved, the CPU's count
        "device": str(next(model.parameters()).device),
    }


def _use_cpu(plan: Plan) -> None:
    """Apply the plan's thread count, and on a CPU the routes measured for it (cached after the first time).

    A plan built by hand (:func:`for_config`) has no thread choice and leaves
    both as they are. This runs once the model is built and its state loaded,
    so a run refused before then writes no tuning cache and registers nowhere;
    it runs before the attention check and compiling, which use the routes.
    """
    if plan.threads is None:
        return
    threads.configure(plan.threads)
    if plan.device.device.type == "cpu":
        tuning.tune(plan.threads.threads)


def _attention_for_training(config: TrainConfig, device: torch.device, dtype: str,
                            notices: list[str]) -> Callable[[], contextlib.AbstractContextManager]:
    """Fused attention, unless its dropout on this device differs from the lecture's (see :mod:`tinyshake.models.kernels`).

    The lecture's own heads (``--plain``) drop their weights with ``nn.Dropout``: nothing to check.
    """
    model = config.model
    if model.arch == "bigram" or config.plain:
        return contextlib.nullcontext
    return kernels.training_attention(model.dropout, model.n_head, model.head_size, model.block_size, device,
                                      getattr(torch, dtype), notices)


def _maybe_compile(model: nn.Module, config: TrainConfig, device: torch.device, notices: list[str],
                   attention: Callable[[], contextlib.AbstractContextManager]) -> nn.Module:
    """``torch.compile`` the model, or fall back to eager with a one-line notice where it cannot work.

    Compilation happens lazily at the first call, so a missing compiler only shows
    there: one training step on a batch of zeros finds out now. It runs on a fork
    of the random streams and its gradients are dropped, so the run is unchanged.
    It runs in the training steps' ``attention`` context, because the graph keeps
    the attention kernel chosen while it was traced.
    """
    if not config.compile:
        return model
    try:
        compiled = torch.compile(model)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), attention():
            zeros = torch.zeros(config.batch_size, config.block_size, dtype=torch.long, device=device)
            compiled(zeros, zeros)[1].backward()
    except Exception as exc:  # no C++ compiler or no Triton on this platform, among others
        notices.append(f"torch.compile is unavailable here ({type(exc).__name__}); running eagerly")
        compiled = model
    for p in model.parameters():  # in place: the gradients may be views into one flat buffer (optim.flatten_)
        if p.grad is not None:
            p.grad.zero_()
    return compiled  # type: ignore[return-value]


def _restore(plan: Plan, config: TrainConfig, model: nn.Module, optimizer: optim.Combined,
             dist: distributed.Dist = distributed.Dist()) -> tuple[int, float]:
    """Load a run's latest weights, optimizer and RNG so training goes on exactly where it stopped.

    The plan read the record before this process held the run's lock; the
    checkpoint loaded here, under the lock, must be that same one. Returns the
    step to go on from and the wall time already spent.
    """
    record = plan.resume
    assert record is not None, "only a resumed run is restored"
    if ModelConfig.from_dict(dict(record.model)) != config.model:  # fields added since then take their defaults
        raise checkpoint.CheckpointError(f"run {config.run!r} has another model shape; resume with its own settings")
    loaded = checkpoint.load(config.run, next(model.parameters()).device, weights="last")
    if loaded.record.files != record.files:
        raise UsageError(f"run {config.run!r} changed on disk while this command started; run it again")
    model.load_state_dict(loaded.model.state_dict())
    state = checkpoint.load_state(loaded.record)
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:  # another optimizer's state
        raise checkpoint.CheckpointError(f"the optimizer state of run {config.run!r} does not fit: "
                                         f"{checkpoint.first_line(exc)}") from None
    # last: loading the weights above drew from the random stream
    ranks = state.get("rng_ranks")
    if dist.enabled and isinstance(ranks, list) and len(ranks) == dist.world_size:
        checkpoint.set_rng_state(ranks[dist.rank])  # each rank goes on with its own batches
    elif dist.enabled:  # another number of processes than before: fresh streams, still one per rank
        torch.manual_seed(config.seed + dist.rank + dist.world_size * int(state["step"]))
    else:
        checkpoint.set_rng_state(state["rng"])
    return int(state["step"]), float(state.get("elapsed", 0.0))
