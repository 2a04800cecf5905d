"""What a training tells its front end: one event per thing that happened, in order.

:func:`tinyshake.training.train.train` yields them and re-exports them; any front end
(the CLI's views, the ladder, a script) shows them. They live apart from the
loop so that the pieces beside it (:mod:`tinyshake.training.run_state`) can make them too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Union

from tinyshake.units import bits_per_char

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from tinyshake.training import threads
    from tinyshake.training.plan import TrainConfig


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
    model: Optional[nn.Module] = None  # the model in training (not compiled or wrapped), for a front end to sample


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
class Evaluating:
    """An evaluation at ``step`` is under way: ``done`` of its ``total`` batches (train and val together) are scored."""

    step: int
    done: int
    total: int


@dataclass(frozen=True)
class Evaluated:
    step: int
    train: float  # the lecture's estimates: mean loss per token, in nats
    val: float
    elapsed: float
    final: bool = False  # the evaluation of the final weights, beyond the lecture's own lines
    chars_per_token: tuple[float, float] = (1.0, 1.0)  # of the train and val splits: 1 for the lecture's characters

    @property
    def train_bpc(self) -> float:
        """The train estimate in bits per character, the scale every run compares on."""
        return bits_per_char(self.train, self.chars_per_token[0])

    @property
    def val_bpc(self) -> float:
        return bits_per_char(self.val, self.chars_per_token[1])


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


Event = Union[Started, Stepped, Evaluating, Evaluated, Saved, Interrupted, Finished, Rethreaded]
