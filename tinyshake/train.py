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
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, Iterator, Optional, Union

import torch
import torch.nn as nn
from torch.nn import functional as F

from tinyshake import checkpoint, distributed, kernels, optim, stages
from tinyshake.corpus import Corpus
from tinyshake.device import resolve
from tinyshake.errors import UsageError
from tinyshake.model import ModelConfig, build, count_parameters

DTYPES = ("float32", "bfloat16", "float16")
OPTIMIZERS = ("adamw", "muon")
EVAL_CHUNK_TOKENS = 1 << 12  # measured: chunks that stay in cache beat one huge pass on a CPU


@dataclass
class TrainConfig:
    """A stage's preset after the user's overrides: everything a run needs to be repeated."""

    stage: str
    run: str
    model: ModelConfig
    batch_size: int
    learning_rate: float
    max_iters: int
    eval_interval: int
    eval_iters: int = 200
    eval_last: bool = False
    seed: int = 1337
    device: str = "auto"
    dtype: str = "float32"
    compile: bool = False
    time_budget: Optional[float] = None  # seconds of training (evaluations excluded); the schedule follows it
    optimizer: str = "adamw"  # "adamw" (the lecture) or "muon" (hidden matrices; AdamW for the rest)
    muon_lr: float = 0.02
    warmup: float = 0.0  # fraction of the run spent warming the rate up from 0
    warmdown: float = 0.0  # fraction of the run at its end spent cooling the rate down to 0

    @property
    def block_size(self) -> int:
        return self.model.block_size

    def hyper(self) -> dict[str, Any]:
        """The hyperparameters as stored in a run's config.json."""
        data = asdict(self)
        data.pop("model")
        return data

    def eval_steps(self) -> set[int]:
        """Steps that evaluate before training: 0, every interval, and the last one from residual on."""
        steps = set(range(0, self.max_iters, self.eval_interval))
        if self.eval_last and self.max_iters > 0:
            steps.add(self.max_iters - 1)
        return steps


STAGE_KEYS = ("batch_size", "block_size", "learning_rate", "max_iters", "eval_interval",
              "n_embd", "n_head", "n_layer", "dropout")
# What a resumed run may change: how long and how it runs, never what it computes per step.
SESSION_KEYS = ("max_iters", "eval_interval", "eval_iters", "device", "dtype", "compile", "time_budget")
FIXED_KEYS = ("stage", "batch_size", "learning_rate", "seed", "block_size", "n_embd", "n_head", "n_layer", "dropout",
              "optimizer", "muon_lr", "warmup", "warmdown")


def make_config(stage_name: str, vocab_size: int = ModelConfig.vocab_size, run: Optional[str] = None,
                **overrides: Any) -> TrainConfig:
    """Merge a stage's preset with overrides (``None`` keeps the preset) and check that the sizes make sense.

    ``vocab_size`` may be left out while the corpus is not loaded yet, so bad
    flags are refused before anything is fetched; :func:`with_vocab` fills it in.
    """
    stage = stages.with_overrides(stages.get(stage_name), **{k: overrides.pop(k, None) for k in STAGE_KEYS})
    config = TrainConfig(
        stage=stage.name,
        run=run or stage.name,
        model=ModelConfig(vocab_size=vocab_size, block_size=stage.block_size, **stage.model),
        batch_size=stage.batch_size,
        learning_rate=stage.learning_rate,
        max_iters=stage.max_iters,
        eval_interval=stage.eval_interval,
        eval_last=stage.eval_last,
        **dict(stage.hyper, **{k: v for k, v in overrides.items() if v is not None}),
    )
    validate(config)
    return config


def with_vocab(config: TrainConfig, vocab_size: int) -> TrainConfig:
    """The same config for a corpus with ``vocab_size`` distinct characters."""
    return replace(config, model=replace(config.model, vocab_size=vocab_size))


def resume_config(record: dict[str, Any], **given: Any) -> TrainConfig:
    """A stored run's own settings, so ``--resume`` needs no flags to go on exactly as it started.

    Given values (``None`` means not given) may change how long and where the
    run goes on; one that would change the computation itself is refused, since
    the optimizer state and the step's losses belong to the stored settings.
    """
    try:
        model = ModelConfig.from_dict(record["model"])
        names = {f.name for f in fields(TrainConfig)} - {"model"}
        config = TrainConfig(model=model, **{k: v for k, v in record["hyper"].items() if k in names})
        validate(config)  # a value of the wrong type fails here with a TypeError
    except (KeyError, TypeError, AttributeError, UsageError):
        raise checkpoint.CheckpointError(f"the settings stored for run {record.get('name')!r} are unreadable; "
                                         "retrain it with --overwrite") from None
    stored = dict(config.hyper(), **asdict(model))
    for key in FIXED_KEYS:
        if given.get(key) is not None and given[key] != stored[key]:
            raise UsageError(f"run {config.run!r} was trained with {key} {stored[key]}; --resume keeps a run's "
                             "settings (leave that option out, or start a new run with --run NAME)")
    config = replace(config, **{k: given[k] for k in SESSION_KEYS if given.get(k) is not None})
    validate(config)  # the new values
    return config


def validate(config: TrainConfig) -> None:
    """Reject sizes that cannot train, with a one-line reason."""
    m = config.model
    positive = {"batch_size": config.batch_size, "block_size": m.block_size, "eval_interval": config.eval_interval,
                "eval_iters": config.eval_iters}
    if m.arch != "bigram":
        positive.update(n_embd=m.n_embd, n_head=m.n_head, n_layer=m.n_layer)
    for name, value in positive.items():
        if value <= 0:
            raise UsageError(f"{name} must be positive, got {value}")
    if config.max_iters < 0:
        raise UsageError(f"max_iters must be 0 or more, got {config.max_iters}")
    if not config.learning_rate > 0:
        raise UsageError(f"learning_rate must be positive, got {config.learning_rate}")
    if not 0 <= m.dropout < 1:
        raise UsageError(f"dropout must be in [0, 1), got {m.dropout}")
    if m.arch != "bigram" and m.n_embd % m.n_head:
        raise UsageError(f"n_embd ({m.n_embd}) must be divisible by n_head ({m.n_head})")
    if config.dtype not in DTYPES:
        raise UsageError(f"dtype must be one of {', '.join(DTYPES)}")
    if config.time_budget is not None and config.time_budget <= 0:
        raise UsageError("time budget must be positive")
    if config.optimizer not in OPTIMIZERS:
        raise UsageError(f"optimizer must be one of {', '.join(OPTIMIZERS)}")
    if not (0 <= config.warmup <= 1 and 0 <= config.warmdown <= 1):
        raise UsageError("warmup and warmdown are fractions of the run, between 0 and 1")


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


@dataclass(frozen=True)
class Stepped:
    step: int  # steps completed
    loss: torch.Tensor  # this step's training loss, not synchronised: call .item() only when showing it
    elapsed: float


@dataclass(frozen=True)
class Evaluated:
    step: int
    train: float
    val: float
    elapsed: float


@dataclass(frozen=True)
class Saved:
    step: int
    path: str


@dataclass(frozen=True)
class Interrupted:
    step: int
    path: str


@dataclass(frozen=True)
class Finished:
    step: int
    best_val: Optional[float]
    elapsed: float
    path: str
    model: nn.Module


Event = Union[Started, Stepped, Evaluated, Saved, Interrupted, Finished]


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


@torch.inference_mode()
def estimate_loss(
    model: nn.Module,
    splits: dict[str, torch.Tensor],
    batch_size: int,
    block_size: int,
    eval_iters: int,
    dtype: str = "float32",
) -> dict[str, float]:
    """The lecture's estimate: the mean of ``eval_iters`` random-batch losses per split, in eval mode.

    The indices are drawn batch by batch in the lecture's order; the forward
    passes then run in chunks of many batches at once.
    """
    was_training = model.training
    model.eval()
    out = {}
    per_chunk = max(1, EVAL_CHUNK_TOKENS // (batch_size * block_size))
    device = next(model.parameters()).device
    for split, data in splits.items():
        starts = torch.cat([draw_indices(data, batch_size, block_size) for _ in range(eval_iters)])
        losses = []
        for first in range(0, eval_iters, per_chunk):
            chunk = starts[first * batch_size:(first + per_chunk) * batch_size]
            x, y = windows(data, chunk, block_size)
            with autocast(device, dtype):
                logits, _ = model(x)
            token_losses = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
            losses.append(token_losses.view(-1, batch_size * block_size).mean(dim=1))
        out[split] = torch.cat(losses).cpu().mean().item()
    model.train(was_training)
    return out


# --------------------------------------------------------------------------- the loop


def _check_fits(config: TrainConfig, corpus: Corpus) -> None:
    shortest = min(len(corpus.train), len(corpus.val))
    if config.block_size >= shortest:
        raise UsageError(f"block_size ({config.block_size}) must be below the shortest split's length ({shortest})")


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


def _resolve_dtype(device: torch.device, dtype: str, notices: list[str]) -> str:
    if dtype == "float32":
        return dtype
    if device.type == "mps" and dtype == "bfloat16":
        notices.append("bfloat16 autocast is not supported on MPS here; using float32")
        return "float32"
    if device.type == "cpu" and dtype == "float16":
        notices.append("float16 autocast is slow or missing on CPUs; using bfloat16")
        return "bfloat16"
    return dtype


def train(
    config: TrainConfig,
    corpus: Corpus,
    resume: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[Event]:
    """Train ``config`` on ``corpus``, yielding events; checkpoints go to ``<home>/runs/<run>/``.

    Under torchrun this process joins the job first and leaves it when the
    generator ends; if another rank dies, this one stops with a one-line
    :class:`~tinyshake.distributed.WorkerFailed`.
    """
    validate(config)
    _check_fits(config, corpus)
    choice = resolve(config.device)
    owns_group = not distributed.active()
    dist = distributed.init(choice.device.type)
    try:
        with distributed.peer_failures(config.run):
            yield from _train(config, corpus, resume, should_stop, dist, distributed.device_for(dist, choice.device))
    finally:
        if owns_group:
            distributed.shutdown()  # _train's frame, and with it the DDP wrapper, is gone by now


def _train(config: TrainConfig, corpus: Corpus, resume: bool, should_stop: Callable[[], bool],
           dist: distributed.Dist, device: torch.device) -> Iterator[Event]:
    notices: list[str] = []
    dtype = _resolve_dtype(device, config.dtype, notices)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    torch.manual_seed(config.seed)
    model = build(config.model).to(device)
    optimizer = optim.make(model, config.optimizer, config.learning_rate, config.muon_lr)
    if dist.enabled:
        torch.manual_seed(config.seed + dist.rank)  # own batches per rank; DDP gives every rank rank 0's weights
    start, stored, elapsed_before = _restore(config, corpus, model, optimizer, dist) if resume else (0, {}, 0.0)
    metrics: list[dict[str, float]] = list(stored.get("metrics", []))
    attention = _attention_for_training(config.model, device, dtype, notices)
    forward = _maybe_compile(distributed.wrap(model, dist, device), config, device, notices, attention)
    splits = {"train": corpus.train.to(device), "val": corpus.val.to(device)}
    record = {
        "name": config.run, "stage": config.stage, "model": config.model.to_dict(), "hyper": config.hyper(),
        "vocab": corpus.tokenizer.chars, "corpus": {"name": corpus.name, "sha256": corpus.sha256},
        "parameters": count_parameters(model), "max_iters": config.max_iters, "created": stored.get("created"),
    }
    yield Started(config, record["parameters"], str(device), start, notices, dist.rank, dist.world_size)

    clock = time.perf_counter()
    trained = float(stored.get("train_seconds", 0.0))  # training time alone: what --time-budget counts
    scheduled = config.warmup > 0 or config.warmdown > 0

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - clock

    def progress(step: int) -> float:
        return trained / config.time_budget if config.time_budget else step / max(config.max_iters, 1)

    def save(step: int) -> str:
        """Called on every rank (each rank's RNG state is gathered); rank 0 alone writes."""
        rng = checkpoint.rng_state()
        rng_ranks = distributed.gather(rng) if dist.enabled else None
        if not dist.is_main:
            return str(checkpoint.run_dir(config.run))
        best = min((m["val"] for m in metrics), default=None)
        state = {"step": step, "optimizer": optimizer.state_dict(), "rng": rng, "elapsed": elapsed()}
        if rng_ranks is not None:
            state["rng_ranks"] = rng_ranks
        folder = checkpoint.save(config.run, model, dict(record, step=step, metrics=metrics, best_val=best,
                                                         wall_time=elapsed(), train_seconds=trained), state)
        return str(folder)

    evaluated = {int(m["step"]) for m in metrics}
    eval_steps = config.eval_steps()

    def evaluate(step: int) -> Iterator[Event]:
        losses = estimate_loss(forward, splits, config.batch_size, config.block_size, config.eval_iters, dtype)
        losses = {split: distributed.mean(loss) for split, loss in losses.items()}  # over every rank's batches
        metrics.append({"step": step, "train": losses["train"], "val": losses["val"], "elapsed": elapsed()})
        yield Evaluated(step, losses["train"], losses["val"], elapsed())
        yield Saved(step, save(step))

    step = start
    while step < config.max_iters:
        if step in eval_steps and step not in evaluated:
            yield from evaluate(step)
        began = time.perf_counter()
        if scheduled:
            optimizer.scale_lr(optim.lr_factor(progress(step), config.warmup, config.warmdown))
        xb, yb = get_batch(splits["train"], config.batch_size, config.block_size)
        with autocast(device, dtype), attention():
            _, loss = forward(xb, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        spent = time.perf_counter() - began
        # one clock for all ranks, so the budget and the schedule decide the same on each
        trained += distributed.mean(spent) if config.time_budget is not None else spent
        yield Stepped(step, loss.detach(), elapsed())
        if distributed.any_true(should_stop()):  # every rank stops at the same step
            yield Interrupted(step, save(step))
            return
        if config.time_budget is not None and trained >= config.time_budget and step < config.max_iters:
            yield from evaluate(step)  # show where the budget ended
            break
    best = min((m["val"] for m in metrics), default=None)
    yield Finished(step, best, elapsed(), save(step), model)


def _restore(config: TrainConfig, corpus: Corpus, model: nn.Module, optimizer: optim.Combined,
             dist: distributed.Dist = distributed.Dist()) -> tuple[int, dict[str, Any], float]:
    """Load a run's weights, optimizer and RNG so training goes on exactly where it stopped.

    Returns the step to go on from, the stored record (its metrics and creation
    time carry over) and the wall time already spent.
    """
    record = checkpoint.read_record(config.run)
    if record["vocab"] != corpus.tokenizer.chars:
        raise checkpoint.CheckpointError(f"run {config.run!r} was trained on another vocabulary than corpus {corpus.name!r}")
    if ModelConfig.from_dict(record["model"]) != config.model:  # fields added since then take their defaults
        raise checkpoint.CheckpointError(f"run {config.run!r} has another model shape; resume with its own settings")
    loaded = checkpoint.load(config.run, next(model.parameters()).device)
    model.load_state_dict(loaded.model.state_dict())
    state = checkpoint.load_state(config.run, record)
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
    return int(state["step"]), record, float(state.get("elapsed", 0.0))


def estimate_seconds(config: TrainConfig, seconds_per_step: float) -> float:
    """Rough wall time of a whole run from a measured step time (evaluations cost about 2 x eval_iters forwards)."""
    evals = len(config.eval_steps())
    return config.max_iters * seconds_per_step + evals * 2 * config.eval_iters * seconds_per_step / 3

