"""How long a planned run will take, roughly, before it starts: to warn of a slow one and refuse an endless one.

The estimates count the model's FLOPs at a guessed rate. Guessing keeps them
instant (nothing is measured before a run); the rates are chosen so that the
warnings are about right on a laptop CPU and the refusals err towards running.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from tinyshake import stages
from tinyshake.errors import UsageError

if TYPE_CHECKING:
    from tinyshake.plan import Plan

CPU_FLOPS_GUESS = 60e9  # sustained training FLOP/s on a laptop CPU, for the time estimates below
GPU_FLOPS_GUESS = 100e12  # more than any GPU sustains here: an estimate that only absurd evaluations exceed
LOSS_FLOPS_PER_LOGIT = 15  # softmax and cross-entropy per logit, training: what a bigram's step costs
ENDLESS_EVALUATION_SECONDS = 24 * 3600  # an evaluation estimated at more than a day is a typo, refused
ASK_ABOVE_SECONDS = 30 * 60  # a gpt run on a CPU this long asks before it starts (on a terminal)


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


def slow_run(plan: Plan) -> Optional[SlowRun]:
    """The estimate for a gpt-sized stage on a CPU, where its evaluations (2 x 200 batches each) can cost more
    than its training steps; None for every other run, which is quick enough not to warn about."""
    from tinyshake.model import flops_per_token
    from tinyshake.train import estimate_seconds, evaluation_steps

    config = plan.config
    if config.stage not in stages.GPU_SIZED or plan.device.device.type != "cpu":
        return None
    per_step = flops_per_token(config.model) * config.batch_size * config.block_size / CPU_FLOPS_GUESS
    return SlowRun(estimate_seconds(config, per_step), evaluation_steps(config) * per_step)


def refuse_endless_evaluation(plan: Plan, yes: bool) -> None:
    """Refuse in one line an ``--eval-iters`` that would make each evaluation take more than a day.

    ``--eval-iters 1000000000`` on mini would evaluate for months before the
    first step. The estimate counts FLOPs at a rate above what the device
    sustains, so it errs short and only absurd values are refused; ``--yes``
    runs them anyway.
    """
    from tinyshake.model import flops_per_token
    from tinyshake.plan import TrainConfig
    from tinyshake.train import steps_per_evaluation

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
