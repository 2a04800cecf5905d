"""Training one stage of the ladder: a generator of events, so any front end can show it.

The loop is the lecture's loop, step for step: evaluate when the step calls
for it, draw a batch with ``torch.randint``, forward, ``zero_grad``, backward,
AdamW step. On the CPU with seed 1337 it draws the same random numbers in the
same order as the lecture's code, so it prints the lecture's losses.

What is faster than the lecture: a batch is one gather, and an evaluation runs
its ``eval_iters`` batches as a few large forward passes under
``torch.inference_mode`` (the same indices, drawn in the same order).

Under torchrun the same loop trains data-parallel (see :mod:`tinyshake.distributed`):
each rank draws its own batches (seed + rank), DistributedDataParallel averages
the gradients, evaluations are averaged over the ranks, every rank stops at the
same step, and rank 0 alone writes checkpoints. Every rank yields the events;
front ends show them on rank 0 only.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Union

import torch
import torch.nn as nn
from torch.nn import functional as F

from tinyshake import checkpoint, distributed, kernels, modern, optim, speed, threads, tuning
from tinyshake.corpus import Corpus
from tinyshake.errors import UsageError
from tinyshake.model import ModelConfig, count_parameters
from tinyshake.plan import (  # noqa: F401 - the settings a run executes, re-exported for scripts and tests
    DTYPES, OPTIMIZERS, Plan, TrainConfig, for_config, make_config, resume_config, validate, with_vocab,
)

EVAL_CHUNK_TOKENS = 1 << 12  # measured: chunks that stay in cache beat one huge pass on a CPU
NONFINITE_CHECK_EVERY = 32  # steps between loss checks on an accelerator (each check waits for the device)


class Diverged(UsageError):
    """The loss became NaN or infinite: the settings (usually the learning rate) cannot train this model."""


class OutOfMemory(UsageError):
    """The sizes asked for do not fit in this machine's (or GPU's) memory."""


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Started:
    config: TrainConfig
    parameters: int
    device: str
    start_step: int
    notices: list[str] = field(default_factory=list)
    rank: int = 0  # this process's place in a data-parallel job (0 of 1 when alone)
    world_size: int = 1
    threads: str = ""  # the CPU threads and why, e.g. "2 threads (2 cores, 1.8 free)"; empty when left alone


@dataclass(frozen=True)
class Rethreaded:
    """A look at the machine at an evaluation changed the thread count (another program started or ended)."""

    step: int
    choice: threads.Choice


@dataclass(frozen=True)
class Stepped:
    step: int  # steps completed
    loss: torch.Tensor  # this step's training loss, not synchronised: call .item() only when showing it
    elapsed: float
    trained: float = 0.0  # seconds of training alone (what --time-budget counts)


@dataclass(frozen=True)
class Evaluated:
    step: int
    train: float
    val: float
    elapsed: float
    final: bool = False  # the evaluation of the final weights, beyond the lecture's own lines


@dataclass(frozen=True)
class Saved:
    step: int
    path: str
    best: bool = False  # these weights are now the run's best


@dataclass(frozen=True)
class Interrupted:
    """Training stopped on request at ``step``; ``saved_step`` is the checkpoint on disk (``None``: nothing saved).

    A stop during an evaluation keeps the last saved state rather than saving
    after half an evaluation, so ``saved_step`` may be earlier than ``step``.
    """

    step: int
    path: Optional[str]
    saved_step: Optional[int]
    during_evaluation: bool = False


@dataclass(frozen=True)
class Finished:
    step: int
    best_val: Optional[float]
    elapsed: float
    path: str
    model: nn.Module
    best_step: Optional[int] = None
    final: Optional[Evaluated] = None  # the last evaluation: the one at the last step, or of the final weights
    budget_ended: bool = False  # the time budget, not max_iters, ended the run


Event = Union[Started, Stepped, Evaluated, Saved, Interrupted, Finished, Rethreaded]


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


@torch.inference_mode()
def estimate_loss(
    model: nn.Module,
    splits: dict[str, torch.Tensor],
    batch_size: int,
    block_size: int,
    eval_iters: int,
    dtype: str = "float32",
    should_stop: Optional[Callable[[], bool]] = None,
) -> dict[str, float]:
    """The lecture's estimate: the mean of ``eval_iters`` random-batch losses per split, in eval mode.

    The indices are drawn batch by batch in the lecture's order, a chunk of
    batches at a time, and each chunk runs as one forward pass; the forward
    passes draw no random numbers in eval mode, so the order of draws is the
    lecture's. As in the lecture, the batch losses go into one float32 tensor
    of ``eval_iters`` values (4 bytes a batch, allocated up front, so a size
    that cannot fit fails at once) whose mean is the estimate. ``should_stop``
    is asked before each chunk, so a long evaluation stops within one chunk
    (:class:`EvaluationStopped`).
    """
    was_training = model.training
    model.eval()
    out = {}
    per_chunk = max(1, EVAL_CHUNK_TOKENS // (batch_size * block_size))
    device = next(model.parameters()).device
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


def _diverged(step: int, what: str, config: TrainConfig, saved_step: Optional[int]) -> Diverged:
    """Stop a run whose loss is no longer a number, before a NaN model can be saved."""
    rates = f"--lr (now {config.learning_rate:g})"
    if config.optimizer == "muon":
        rates += f" or --muon-lr (now {config.muon_lr:g})"
    kept = f"; the checkpoint of step {saved_step} is kept" if saved_step is not None else "; nothing was saved"
    return Diverged(f"training diverged at step {step}: {what} is NaN or infinite; lower {rates} and train "
                    f"again{kept}")


# --------------------------------------------------------------------------- the loop


def _check_fits(config: TrainConfig, corpus: Corpus) -> None:
    shortest = min(len(corpus.train), len(corpus.val))
    if config.block_size >= shortest:
        raise UsageError(f"block_size ({config.block_size}) must be below the shortest split's length ({shortest})")


def _check_corpus(plan: Plan, corpus: Corpus) -> None:
    """``--resume`` goes on with the text the run was trained on, or not at all."""
    if plan.resume is None:
        return
    if plan.resume["vocab"] != corpus.tokenizer.chars:
        raise checkpoint.CheckpointError(f"run {plan.run!r} was trained on another vocabulary than corpus "
                                         f"{corpus.name!r}")
    stored = plan.resume.get("corpus")
    if not isinstance(stored, dict) or "sha256" not in stored or stored["sha256"] == corpus.sha256:
        return
    raise UsageError(f"run {plan.run!r} was trained on corpus {stored.get('name')!r} (SHA-256 "
                     f"{str(stored['sha256'])[:12]}…), but corpus {corpus.name!r} holds other text (SHA-256 "
                     f"{corpus.sha256[:12]}…); --resume needs the run's own corpus")


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


def _attention_for_training(model: ModelConfig, device: torch.device, dtype: str,
                            notices: list[str]) -> Callable[[], contextlib.AbstractContextManager]:
    """Fused attention, unless its dropout on this device differs from the lecture's (see :mod:`tinyshake.kernels`)."""
    if model.arch == "bigram":
        return contextlib.nullcontext
    return kernels.training_attention(model.dropout, model.n_head, model.head_size, model.block_size, device,
                                      getattr(torch, dtype), notices)


def _lock(plan: Plan) -> contextlib.AbstractContextManager:
    """The run's exclusive lock for the whole session (see :mod:`tinyshake.runlock`)."""
    from tinyshake import runlock

    return runlock.hold(plan.run, "train")


def _check_still_new(plan: Plan) -> None:
    """Under the lock: a run that another process created since planning is not replaced silently."""
    if plan.resume is None and not plan.overwrite and checkpoint.exists(plan.run):
        raise UsageError(f"run {plan.run!r} was created by another process meanwhile; use --run NAME for a new one")


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
    :class:`~tinyshake.distributed.WorkerFailed`.
    """
    if isinstance(plan, TrainConfig):
        plan = for_config(plan, corpus.name)
    config = plan.config if plan.resume is not None else with_vocab(plan.config, corpus.tokenizer.vocab_size)
    validate(config)
    _check_fits(config, corpus)
    _check_corpus(plan, corpus)
    owns_group = not distributed.active()
    dist = distributed.init(plan.device.device.type)
    try:
        with (_lock(plan) if dist.is_main else contextlib.nullcontext()), distributed.peer_failures(config.run):
            _check_still_new(plan)
            yield from _train(plan, config, corpus, should_stop, dist, distributed.device_for(dist, plan.device.device))
    finally:
        if owns_group:
            distributed.shutdown()  # _train's frame, and with it the DDP wrapper, is gone by now


def _history(stored: dict[str, Any]) -> list[dict[str, Any]]:
    """A resumed run's evaluations, its final one included (marked ``"final": true``), or [] for a new run.

    A finished run's best may be the evaluation of its final weights, which is
    kept beside the lecture's rows; resumed, it joins them, so that the saves
    that follow know the best weights as one of this run's evaluations and keep them.
    """
    metrics = list(stored.get("metrics", []))
    final = stored.get("final")
    if isinstance(final, dict) and dict(final, final=True) not in metrics:
        metrics.append(dict(final, final=True))
    return metrics


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


def _stored_best(stored: dict[str, Any], metrics: list[dict[str, Any]]) -> tuple[Optional[int], Optional[float]]:
    """The best (step, val) a resumed run already has: its record's, or the lowest of its evaluations."""
    if isinstance(stored.get("best_val"), (int, float)) and isinstance(stored.get("best_step"), int):
        return stored["best_step"], float(stored["best_val"])
    best = min(metrics, key=lambda m: m["val"], default=None)
    return (int(best["step"]), float(best["val"])) if best else (None, None)


def _train(plan: Plan, config: TrainConfig, corpus: Corpus, should_stop: Callable[[], bool],
           dist: distributed.Dist, device: torch.device) -> Iterator[Event]:
    notices = list(plan.notices)
    dtype = plan.dtype
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    torch.manual_seed(config.seed)
    with _building(config.model):
        model = speed.build(config.model, config.plain).to(device)
        optimizer = optim.make(model, config.optimizer, config.learning_rate, config.muon_lr, config.plain)
    if dist.enabled:
        torch.manual_seed(config.seed + dist.rank)  # own batches per rank; DDP gives every rank rank 0's weights
    stored: dict[str, Any] = dict(plan.resume or {})
    start, elapsed_before = _restore(plan, config, model, optimizer, dist) if plan.resume else (0, 0.0)
    metrics = _history(stored)
    best_step, best_val = _stored_best(stored, metrics)
    saved_step: Optional[int] = start if plan.resume else None
    saved_path: Optional[str] = str(checkpoint.run_dir(config.run)) if plan.resume else None
    _use_cpu(plan)  # the model fits and the state loaded: from here on the run trains
    attention = _attention_for_training(config.model, device, dtype, notices) if not config.plain \
        else contextlib.nullcontext  # the lecture's heads drop attention weights with nn.Dropout
    forward = _maybe_compile(distributed.wrap(model, dist, device), config, device, notices, attention)
    splits = {"train": corpus.train.to(device), "val": corpus.val.to(device)}
    record = {
        "name": config.run, "stage": config.stage, "model": config.model.to_dict(), "hyper": config.hyper(),
        "vocab": corpus.tokenizer.chars, "corpus": {"name": corpus.name, "sha256": corpus.sha256},
        "parameters": count_parameters(model), "max_iters": config.max_iters, "created": stored.get("created"),
        "dtype": dtype, "threads": torch.get_num_threads(),  # what this session used: auto resolved, the CPU's count
    }
    yield Started(config, record["parameters"], str(device), start, notices, dist.rank, dist.world_size,
                  plan.threads.describe() if plan.threads is not None else "")

    clock = time.perf_counter()
    trained = float(stored.get("train_seconds", 0.0))  # training time alone: what --time-budget counts
    scheduled = config.warmup > 0 or config.warmdown > 0
    check_every = 1 if device.type == "cpu" else NONFINITE_CHECK_EVERY  # on a CPU the check costs nothing

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - clock

    def progress(step: int) -> float:
        return trained / config.time_budget if config.time_budget else step / max(config.max_iters, 1)

    def stop_vote() -> bool:
        return distributed.any_true(should_stop())  # every rank stops at the same place

    def save(step: int, final: Optional[dict[str, Any]] = None, best: bool = False) -> Saved:
        """Called on every rank (each rank's RNG state is gathered); rank 0 alone writes."""
        nonlocal saved_step, saved_path
        rng = checkpoint.rng_state()
        rng_ranks = distributed.gather(rng) if dist.enabled else None
        saved_step = step
        if not dist.is_main:
            saved_path = str(checkpoint.run_dir(config.run))
            return Saved(step, saved_path, best)
        state = {"step": step, "optimizer": optimizer.state_dict(), "rng": rng, "elapsed": elapsed()}
        if rng_ranks is not None:
            state["rng_ranks"] = rng_ranks
        extra = {"final": final} if final is not None else {}
        saved_path = str(checkpoint.save(config.run, model, dict(
            record, step=step, metrics=metrics, best_val=best_val, best_step=best_step, wall_time=elapsed(),
            train_seconds=trained, **extra), state, best=best))
        return Saved(step, saved_path, best)

    def evaluate(step: int, final: bool = False) -> Iterator[Event]:
        """One estimate, shown and saved; the final one draws from a fork of the random streams.

        Forking keeps the final evaluation from moving the stream that the
        sample (and a later ``--resume``) draws from, so both stay the lecture's.
        """
        nonlocal best_step, best_val
        rng = torch.random.fork_rng(devices=[]) if final else contextlib.nullcontext()
        with rng, _memory_for(f"an evaluation of {config.eval_iters:,} batches at batch_size {config.batch_size} × "
                              f"block_size {config.block_size}", "--eval-iters, --batch-size or --block-size"):
            losses = estimate_loss(forward, splits, config.batch_size, config.block_size, config.eval_iters, dtype,
                                   should_stop=stop_vote)
        losses = {split: distributed.mean(loss) for split, loss in losses.items()}  # over every rank's batches
        if not all(math.isfinite(value) for value in losses.values()):
            raise _diverged(step, "the evaluated loss", config, saved_step)
        event = Evaluated(step, losses["train"], losses["val"], elapsed(), final)
        rethreaded = threads.refresh()  # between evaluation and training: a look costs 50 ms, not a step's rhythm
        if rethreaded is not None:
            record["threads"] = rethreaded.threads
            yield Rethreaded(step, rethreaded)
        row = {"step": step, "train": event.train, "val": event.val, "elapsed": event.elapsed}
        if not final:
            metrics.append(row)
        improved = best_val is None or event.val < best_val
        if improved:
            best_step, best_val = step, event.val
        yield event
        yield save(step, final=row if final else None, best=improved)
        return event

    def interrupted(step: int, during_evaluation: bool = False) -> Interrupted:
        return Interrupted(step, saved_path, saved_step, during_evaluation)

    step = start
    lecture = [m for m in metrics if not m.get("final")]  # a final evaluation is beyond the lecture's
    evaluated = {int(m["step"]) for m in lecture}
    eval_steps = config.eval_steps()
    last = (Evaluated(int(lecture[-1]["step"]), lecture[-1]["train"], lecture[-1]["val"], lecture[-1]["elapsed"])
            if lecture else None)  # a resumed run's last lecture evaluation
    finishing = False
    pending = torch.zeros((), dtype=torch.bool, device=device)  # a non-finite loss seen since the last check
    try:
        while step < config.max_iters:
            if step in eval_steps and step not in evaluated:
                last = yield from evaluate(step)
            began = time.perf_counter()
            if scheduled:
                optimizer.scale_lr(modern.lr_factor(progress(step), config.warmup, config.warmdown))
            with _memory_for(f"a training step at batch_size {config.batch_size} × block_size {config.block_size}",
                             "--batch-size or --block-size"):
                xb, yb = get_batch(splits["train"], config.batch_size, config.block_size)
                with autocast(device, dtype), attention():
                    _, loss = forward(xb, yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            step += 1
            pending |= ~torch.isfinite(loss.detach())
            if step % check_every == 0 and distributed.any_true(bool(pending)):
                raise _diverged(step, "the training loss", config, saved_step)
            spent = time.perf_counter() - began
            # one clock for all ranks, so the budget and the schedule decide the same on each
            trained += distributed.mean(spent) if config.time_budget is not None else spent
            yield Stepped(step, loss.detach(), elapsed(), trained)
            if stop_vote():
                if distributed.any_true(bool(pending)):
                    raise _diverged(step, "the training loss", config, saved_step)
                yield save(step)
                yield interrupted(step)
                return
            if config.time_budget is not None and trained >= config.time_budget and step < config.max_iters:
                last = yield from evaluate(step)  # show where the budget ended
                yield Finished(step, best_val, elapsed(), str(saved_path), model, best_step, last, budget_ended=True)
                return
        if distributed.any_true(bool(pending)):
            raise _diverged(step, "the training loss", config, saved_step)
        finishing = True
        if last is None or last.step < step - 1:  # the last lecture evaluation was not at the last step
            last = yield from evaluate(step, final=True)
        else:
            yield save(step)
    except EvaluationStopped:
        if finishing:  # the final evaluation ran on forked random streams: the trained state is whole
            yield save(step)
        yield interrupted(step, during_evaluation=not finishing)
        return
    yield Finished(step, best_val, elapsed(), str(saved_path), model, best_step, last)


def _restore(plan: Plan, config: TrainConfig, model: nn.Module, optimizer: optim.Combined,
             dist: distributed.Dist = distributed.Dist()) -> tuple[int, float]:
    """Load a run's latest weights, optimizer and RNG so training goes on exactly where it stopped.

    The plan read the record before this process held the run's lock; the
    checkpoint loaded here, under the lock, must be that same one. Returns the
    step to go on from and the wall time already spent.
    """
    record = plan.resume or {}
    if ModelConfig.from_dict(record["model"]) != config.model:  # fields added since then take their defaults
        raise checkpoint.CheckpointError(f"run {config.run!r} has another model shape; resume with its own settings")
    loaded = checkpoint.load(config.run, next(model.parameters()).device, weights="last")
    if loaded.record.get("sha256") != record.get("sha256"):
        raise UsageError(f"run {config.run!r} changed on disk while this command started; run it again")
    model.load_state_dict(loaded.model.state_dict())
    state = checkpoint.load_state(config.run, loaded.record)
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


def steps_per_evaluation(config: TrainConfig) -> float:
    """One evaluation in training steps: 2 x eval_iters forwards (train and val), a third of a step each."""
    return 2 * config.eval_iters / 3


def evaluation_steps(config: TrainConfig) -> float:
    """A whole run's evaluations in training steps.

    Counted, never enumerated: ``max_iters`` may be astronomically large.
    """
    evaluations = config.eval_steps().count() + (0 if config.eval_last else 1)  # stages without one get a final one
    return evaluations * steps_per_evaluation(config)


def estimate_seconds(config: TrainConfig, seconds_per_step: float) -> float:
    """Rough wall time of a whole run from a measured step time, evaluations included."""
    return (config.max_iters + evaluation_steps(config)) * seconds_per_step
