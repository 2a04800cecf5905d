"""What tinyshake adds around the lecture's training loop, as small named pieces beside it.

:func:`tinyshake.training.train._loop` is the lecture's loop; each thing it does that
the lecture does not is one call on a piece here:

- :class:`Clocks`: wall time and training time, the time budget, the schedule's progress;
- :class:`NanWatch`: the NaN stop, without waiting for an accelerator every step;
- :class:`History`: the evaluations and the best weights, as a resume knows them;
- :class:`Checkpointer`: saves (every rank takes part, rank 0 writes), and what a stop keeps;
- :class:`Run`: one session's parts together, with its stop vote and learning-rate schedule.

Under torchrun every decision that ends or changes the run (a NaN, a stop
request, the budget) is a vote or a mean over the ranks (:mod:`tinyshake.training.distributed`),
so all ranks take the same path.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from tinyshake import checkpoint
from tinyshake.models import modern, optim
from tinyshake.training import distributed, stages
from tinyshake.errors import UsageError
from tinyshake.training.events import Evaluated, Interrupted, Saved
from tinyshake.training.plan import EvalSteps, TrainConfig
from tinyshake.store.record import Evaluation, RunRecord

NONFINITE_CHECK_EVERY = 32  # steps between loss checks on an accelerator (each check waits for the device)


class Diverged(UsageError):
    """The loss became NaN or infinite: the settings (usually the learning rate) cannot train this model."""


@dataclass
class Clocks:
    """The run's two clocks: wall time (earlier sessions included) and training time alone.

    Training time is what ``--time-budget`` counts and what the schedule follows
    under a budget. Under a budget each step's time is the mean over the ranks,
    so every rank ends at the same step.
    """

    before: float  # wall seconds of the sessions before this one
    trained: float  # seconds of training steps, earlier sessions included
    budget: Optional[float]
    max_iters: int
    began: float = 0.0
    marks: int = field(init=False)  # the tenths of the budget trained when an evaluation was last due

    def __post_init__(self) -> None:
        self.marks = self._tenths()

    def _tenths(self) -> int:
        """Whole tenths of the budget trained so far (0 without a budget), short of its end."""
        if not self.budget:
            return 0
        return min(int(self.trained / self.budget * stages.BUDGET_EVALUATIONS), stages.BUDGET_EVALUATIONS - 1)

    def budget_mark(self) -> bool:
        """Under a budget, training time has passed another tenth of it: an evaluation is due, once per tenth.

        A budget's run rarely reaches its stage's evaluation steps, so these spread
        its evaluations over the budget, and its loss chart is a curve, not a line.
        """
        tenths = self._tenths()
        due, self.marks = tenths > self.marks, max(tenths, self.marks)
        return due

    def start(self) -> None:
        """Start this session's wall clock (once the front end has shown :class:`~tinyshake.training.events.Started`)."""
        self.began = time.perf_counter()

    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.began

    def add_step(self, seconds: float) -> None:
        self.trained += distributed.mean(seconds) if self.budget is not None else seconds

    def progress(self, step: int) -> float:
        """How far the run is, 0 to 1: by training time under a budget, else by steps."""
        return self.trained / self.budget if self.budget else step / max(self.max_iters, 1)

    def budget_ended(self, step: int) -> bool:
        """The time budget is spent before ``max_iters``."""
        return self.budget is not None and self.trained >= self.budget and step < self.max_iters


@dataclass
class History:
    """The run's evaluations and its best: what a resume goes on from, and what each save records."""

    metrics: list[Evaluation]  # the lecture's evaluations, and a resumed run's final one (marked final)
    best_step: Optional[int]
    best_val: Optional[float]
    last: Optional[Evaluated]  # the last evaluation: at first a resumed run's last lecture evaluation
    eval_steps: EvalSteps  # the steps the stage evaluates at (counted, never listed: it may be astronomically long)
    evaluated: set[int] = field(default_factory=set)  # those a resumed run evaluated already

    @classmethod
    def of(cls, stored: Optional[RunRecord], config: TrainConfig) -> "History":
        """The history of a resumed run's record (``stored``), or an empty one for a new run."""
        if stored is None:
            return cls([], None, None, None, config.eval_steps())
        metrics = _with_final(stored)
        best_step, best_val = _stored_best(stored, metrics)
        lecture = [m for m in metrics if not m.final]  # a final evaluation is beyond the lecture's
        last = (Evaluated(lecture[-1].step, lecture[-1].train, lecture[-1].val, lecture[-1].elapsed)
                if lecture else None)
        return cls(metrics, best_step, best_val, last, config.eval_steps(), {m.step for m in lecture})

    def due(self, step: int) -> bool:
        """The lecture evaluates at ``step``, and this run has not evaluated there yet."""
        return step in self.eval_steps and step not in self.evaluated

    def add(self, event: Evaluated) -> tuple[Evaluation, bool]:
        """Record an evaluation; returns it and whether its weights are now the best."""
        row = Evaluation(event.step, event.val, event.train, event.elapsed)
        if not event.final:
            self.metrics.append(row)
        improved = self.best_val is None or event.val < self.best_val
        if improved:
            self.best_step, self.best_val = event.step, event.val
        self.last = event
        return row, improved


def _with_final(stored: RunRecord) -> list[Evaluation]:
    """A resumed run's evaluations, its final one included (marked final).

    A finished run's best may be the evaluation of its final weights, which is
    kept beside the lecture's rows; resumed, it joins them, so that the saves
    that follow know the best weights as one of this run's evaluations and keep them.
    """
    metrics = list(stored.metrics)
    if stored.final is not None and stored.final not in metrics:
        metrics.append(stored.final)
    return metrics


def _stored_best(stored: RunRecord, metrics: list[Evaluation]) -> tuple[Optional[int], Optional[float]]:
    """The best (step, val) a resumed run already has: its record's, or the lowest of its evaluations."""
    if stored.best_val is not None and stored.best_step is not None:
        return stored.best_step, stored.best_val
    best = min(metrics, key=lambda m: m.val, default=None)
    return (best.step, best.val) if best else (None, None)


class Checkpointer:
    """The run's saves, and the last one: what a stop keeps and what a NaN message names.

    :meth:`save` is called on every rank, since each rank's random state is
    gathered into the checkpoint; rank 0 alone writes.
    """

    def __init__(self, config: TrainConfig, model: nn.Module, optimizer: optim.Combined, record: dict[str, Any],
                 dist: distributed.Dist, resumed_at: Optional[int], tokenizer: Optional[bytes] = None) -> None:
        self.config, self.model, self.optimizer, self.dist = config, model, optimizer, dist
        self.record = record  # what every save writes beside the step, history and clocks
        self.tokenizer = tokenizer  # a BPE run's tokenizer file, stored and sealed with every save
        self.saved_step = resumed_at
        self.saved_path: Optional[str] = str(checkpoint.run_dir(config.run)) if resumed_at is not None else None

    def save(self, step: int, history: History, clocks: Clocks, final: Optional[Evaluation] = None,
             best: bool = False) -> Saved:
        rng = checkpoint.rng_state()
        rng_ranks = distributed.gather(rng) if self.dist.enabled else None
        self.saved_step = step
        if not self.dist.is_main:
            self.saved_path = str(checkpoint.run_dir(self.config.run))
            return Saved(step, self.saved_path, best)
        state = {"step": step, "optimizer": self.optimizer.state_dict(), "rng": rng, "elapsed": clocks.elapsed()}
        if rng_ranks is not None:
            state["rng_ranks"] = rng_ranks
        extra = {"final": final.to_dict()} if final is not None else {}
        checkpoint.save(self.config.run, self.model, dict(
            self.record, step=step, metrics=[m.to_dict() for m in history.metrics], best_val=history.best_val,
            best_step=history.best_step, wall_time=clocks.elapsed(), train_seconds=clocks.trained, **extra),
            state, best=best, tokenizer=self.tokenizer)
        self.saved_path = str(checkpoint.run_dir(self.config.run))
        return Saved(step, self.saved_path, best)

    def interrupted(self, step: int, during_evaluation: bool = False) -> Interrupted:
        return Interrupted(step, self.saved_path, self.saved_step, during_evaluation)

    def diverged(self, step: int, what: str) -> Diverged:
        """Stop a run whose loss is no longer a number, before a NaN model can be saved."""
        config = self.config
        rates = f"--lr (now {config.learning_rate:g})"
        if config.optimizer == "muon":
            rates += f" or --muon-lr (now {config.muon_lr:g})"
        kept = (f"; the checkpoint of step {self.saved_step} is kept" if self.saved_step is not None
                else "; nothing was saved")
        return Diverged(f"training diverged at step {step}: {what} is NaN or infinite; lower {rates} and train "
                        f"again{kept}")


class NanWatch:
    """The NaN stop: a training loss that is no longer finite ends the run before its weights are saved.

    A flag on the device gathers every step's check; reading it waits for the
    device, so on an accelerator it is read every :data:`NONFINITE_CHECK_EVERY`
    steps (and before any save); on a CPU, where it costs nothing, every step.
    Reading is a vote over the ranks: one rank's NaN stops them all.
    """

    def __init__(self, device: torch.device, checkpoints: Checkpointer) -> None:
        self.pending = torch.zeros((), dtype=torch.bool, device=device)  # a non-finite loss since the last read
        self.every = 1 if device.type == "cpu" else NONFINITE_CHECK_EVERY
        self.checkpoints = checkpoints

    def see(self, step: int, loss: torch.Tensor) -> None:
        """Note step ``step``'s loss, and read the flag when it is time to."""
        self.pending |= ~torch.isfinite(loss.detach())
        if step % self.every == 0:
            self.check(step)

    def check(self, step: int) -> None:
        if distributed.any_true(bool(self.pending)):
            raise self.checkpoints.diverged(step, "the training loss")


@dataclass
class Run:
    """One training session's parts, as :func:`tinyshake.training.train._prepare` built them for the loop."""

    config: TrainConfig
    device: torch.device
    dtype: str
    model: nn.Module  # the weights that are saved
    forward: nn.Module  # the same model as it trains: wrapped for DDP, compiled
    optimizer: optim.Combined
    splits: dict[str, torch.Tensor]
    attention: Callable[[], contextlib.AbstractContextManager]  # the attention kernel the steps run under
    start: int  # the step this session begins at
    history: History
    checkpoints: Checkpointer
    clocks: Clocks
    nan: NanWatch
    should_stop: Callable[[], bool]
    chars_per_token: tuple[float, float]  # of the train and val splits, for bits per character

    def stop_requested(self) -> bool:
        """A stop request (Ctrl-C, SIGTERM) on any rank: every rank stops at the same place."""
        return distributed.any_true(self.should_stop())

    def schedule(self, step: int) -> None:
        """Warmup and warmdown, for the stages that have them: the learning rate follows the run's progress."""
        config = self.config
        if config.warmup > 0 or config.warmdown > 0:
            self.optimizer.scale_lr(modern.lr_factor(self.clocks.progress(step), config.warmup, config.warmdown))
