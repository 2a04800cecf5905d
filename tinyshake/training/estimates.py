"""What a planned run will cost, roughly, before it starts: to warn of a slow one and refuse an endless one or
one that cannot fit in memory.

The time estimates count the model's FLOPs at a guessed rate; the memory
estimate counts the tensors a training step keeps. Both are arithmetic, so they
are instant (nothing is measured or allocated before a run); they are chosen so
that the warnings are about right on a laptop CPU and the refusals err towards running.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Optional

from tinyshake.training import stages
from tinyshake.errors import UsageError

if TYPE_CHECKING:
    import torch

    from tinyshake.corpus import Corpus
    from tinyshake.models.model import ModelConfig
    from tinyshake.training.plan import Plan, TrainConfig

CPU_FLOPS_GUESS = 60e9  # sustained training FLOP/s on a laptop CPU, for the time estimates below
GPU_FLOPS_GUESS = 100e12  # more than any GPU sustains here: an estimate that only absurd evaluations exceed
LOSS_FLOPS_PER_LOGIT = 15  # softmax and cross-entropy per logit, training: what a bigram's step costs
ENDLESS_EVALUATION_SECONDS = 24 * 3600  # an evaluation estimated at more than a day is a typo, refused
ASK_ABOVE_SECONDS = 30 * 60  # a gpt run on a CPU this long asks before it starts (on a terminal)
FLOAT_BYTES = 4
STATE_COPIES = 4  # weights, gradients and AdamW's two moments (Muon keeps less)
WIDTHS_KEPT = 12  # n_embd-wide activations a block keeps per token for backward (the feed-forward's 4x among them)
SCORE_COPIES = 3  # attention scores, their softmax and its gradient, per head and pair of positions
LOGIT_COPIES = 3  # logits, their softmax and its gradient
MEMINFO = "/proc/meminfo"
GIB = 2**30


class OutOfMemory(UsageError):
    """The sizes asked for do not fit in this machine's (or GPU's) memory."""


def duration(seconds: float) -> str:
    """A rough duration for people: seconds, minutes, hours or days."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 72 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:,.0f} days"


@dataclass(frozen=True)
class SlowRun:
    """A gpt-sized run on a CPU: its estimated seconds, and how many of them its evaluations take."""

    seconds: float
    evaluation_seconds: float

    @property
    def worth_asking(self) -> bool:
        """Long enough that a person at a terminal is asked before it starts."""
        return self.seconds >= ASK_ABOVE_SECONDS


def steps_per_evaluation(config: TrainConfig) -> float:
    """One evaluation in training steps: 2 x eval_iters forwards (train and val), a third of a step each."""
    return 2 * config.eval_iters / 3


def evaluation_steps(config: TrainConfig, seconds_per_step: float) -> float:
    """A whole run's evaluations in training steps.

    Counted, never enumerated: ``max_iters`` may be astronomically large. A
    time budget's run evaluates at each tenth of it and at its end, besides
    the stage's own evaluation steps that it reaches.
    """
    if config.time_budget is None:
        evaluations = config.eval_steps().count() + (0 if config.eval_last else 1)  # stages without one get a final one
    else:
        evaluations = stages.BUDGET_EVALUATIONS + training_steps(config, seconds_per_step) / config.eval_interval
    return evaluations * steps_per_evaluation(config)


def training_steps(config: TrainConfig, seconds_per_step: float) -> float:
    """The steps a run trains: ``max_iters``, or as many as its time budget allows."""
    if config.time_budget is None:
        return config.max_iters
    return min(config.max_iters, config.time_budget / seconds_per_step)


def estimate_seconds(config: TrainConfig, seconds_per_step: float) -> float:
    """Rough wall time of a whole run from a measured step time, evaluations included."""
    return (training_steps(config, seconds_per_step) + evaluation_steps(config, seconds_per_step)) * seconds_per_step


def slow_run(plan: Plan) -> Optional[SlowRun]:
    """The estimate for a gpt-sized stage on a CPU, where its evaluations (2 x 200 batches each) can cost more
    than its training steps; None for every other run, which is quick enough not to warn about."""
    from tinyshake.models.model import flops_per_token

    config = plan.config
    if config.stage not in stages.GPU_SIZED or plan.device.device.type != "cpu":
        return None
    per_step = flops_per_token(config.model) * config.batch_size * config.block_size / CPU_FLOPS_GUESS
    return SlowRun(estimate_seconds(config, per_step), evaluation_steps(config, per_step) * per_step)


def refuse_endless_evaluation(plan: Plan, yes: bool) -> None:
    """Refuse in one line an ``--eval-iters`` that would make each evaluation take more than a day.

    ``--eval-iters 1000000000`` on mini would evaluate for months before the
    first step. The estimate counts FLOPs at a rate above what the device
    sustains, so it errs short and only absurd values are refused; ``--yes``
    runs them anyway.
    """
    from tinyshake.models.model import flops_per_token
    from tinyshake.training.plan import TrainConfig

    config, lecture = plan.config, TrainConfig.eval_iters
    rate = CPU_FLOPS_GUESS if plan.device.device.type == "cpu" else GPU_FLOPS_GUESS
    per_token = flops_per_token(config.model) + LOSS_FLOPS_PER_LOGIT * config.model.vocab_size
    seconds = steps_per_evaluation(config) * per_token * config.batch_size * config.block_size / rate
    at_lecture = seconds * lecture / config.eval_iters  # the same evaluation at the lecture's count
    if yes or seconds <= ENDLESS_EVALUATION_SECONDS or at_lecture > ENDLESS_EVALUATION_SECONDS:
        return  # endless even at the lecture's count: the model's size is what to lower (checked as it is built)
    raise UsageError(f"each evaluation of {config.eval_iters:,} batches per split would take at least "
                     f"{duration(seconds)} on {plan.device.device.type}; lower --eval-iters (the lecture uses "
                     f"{lecture}), or pass --yes to run it anyway")


def training_bytes(config: TrainConfig) -> int:
    """The bytes a training step needs at least: the model, its gradients and optimizer state, a step's activations.

    A lower bound in float32 (autocast keeps float32 weights): the real peak is
    higher, so what this refuses can never have fit.
    """
    m: ModelConfig = config.model
    parameters = stages.shape_parameters(asdict(m), m.block_size, m.vocab_size)
    tokens = config.batch_size * m.block_size
    per_token = LOGIT_COPIES * m.vocab_size
    scores = 0
    if m.arch != "bigram":
        per_token += m.n_layer * WIDTHS_KEPT * m.n_embd
        scores = m.n_layer * config.batch_size * m.n_head * m.block_size * m.block_size * SCORE_COPIES // 2
    return FLOAT_BYTES * (STATE_COPIES * parameters + tokens * per_token + scores)


def free_memory(device: torch.device) -> Optional[int]:
    """Bytes free for a run on ``device``: the GPU's free memory, or the OS's MemAvailable; None where unknown."""
    if device.type == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open(MEMINFO, encoding="ascii") as handle:
            fields = dict(line.split(":", 1) for line in handle if ":" in line)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError, IndexError):
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return pages * size if pages > 0 and size > 0 else None


def check_fits(config: TrainConfig, corpus: Corpus, device: torch.device) -> None:
    """Refuse in one line, before anything is allocated, sizes that this corpus or this machine cannot train.

    The context must be shorter than either split; and :func:`training_bytes`
    must fit in the device's free memory, so that ``--n-layer 1000000`` or
    ``--batch-size 1000000000`` is refused at once instead of building for
    minutes, or swelling until the system kills the process.
    """
    shortest = min(len(corpus.train), len(corpus.val))
    if config.block_size >= shortest:
        raise UsageError(f"--block-size ({config.block_size}) must be below the shortest split's length ({shortest})")
    need, free = training_bytes(config), free_memory(device)
    if free is None or need <= free:
        return
    m = config.model
    bigram = m.arch == "bigram"
    shape = f"a {m.vocab_size}-character vocabulary" if bigram else f"n_embd {m.n_embd}, n_layer {m.n_layer}"
    raise OutOfMemory(f"not enough memory for the model and a training step ({shape}, batch_size "
                      f"{config.batch_size} × block_size {m.block_size}): at least {need / GIB:,.1f} GiB, and "
                      f"{device.type} has {free / GIB:,.1f} GiB free; lower {'' if bigram else '--n-embd, --n-layer, '}"
                      "--batch-size or --block-size")
