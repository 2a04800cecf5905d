"""``train --time-budget`` without ``--model``: the model that learns most in that many seconds on this machine.

In a few seconds of training a small model that takes many steps learns more
than a large one that takes few; in minutes, the other way round. Which shape
wins at which budget was measured, not guessed: ``tests/bench_frontier.py``
trained candidate shapes (the ``modern`` recipe at other widths, depths,
contexts, batches and rates) for 10 s, 20 s, 60 s and 300 s on one machine, and
:data:`FRONTIER` keeps the winner at each budget as a named stage (where two
shapes were within noise of each other, the one that also won a neighbouring
budget, so that fewer stages do).

Another machine does more or less in a second. Its speed is the time of one
``modern`` step (:func:`tinyshake.training.tuning.measure_modern_step`, measured
once with the CPU routes and cached); a machine twice as fast as the reference
trains in 30 s what the reference trains in 60 s, so its 30 s take the
reference's 60 s model. A GPU is many times faster than any of these CPUs,
so there the frontier's choice for its longest budget is taken.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from tinyshake.training import stages


@dataclass(frozen=True)
class Point:
    """The best stage measured at one budget on the reference machine, and the full val it reached."""

    seconds: float
    stage: str
    val: float


# tests/bench_frontier.py on the reference machine, 2026-12-07 (see the README's frontier table)
FRONTIER = (
    Point(10.0, "modern-small", 1.8504),
    Point(20.0, "modern-small", 1.7256),
    Point(60.0, "modern-small", 1.5965),
    Point(300.0, "modern-long", 1.4980),  # modern 1.5101, 192 wide 1.5101, 6 layers of 192 1.5195
)
REFERENCE_MACHINE = "an AMD EPYC (family 25, model 17) on 2 threads"
REFERENCE_STEP = 0.094  # seconds of a modern forward and backward there, as train measures it (tuning's modern_step)


@dataclass(frozen=True)
class Sizing:
    """The stage chosen for a time budget, and why."""

    budget: float  # seconds of training asked for
    speed: Optional[float]  # this machine's speed over the reference machine's; None on a GPU
    point: Point  # the frontier's point the budget is nearest to, on the reference machine's clock

    @property
    def stage(self) -> str:
        return self.point.stage

    def describe(self) -> str:
        """One line for the run's header: what was chosen, and the measurement behind it."""
        stage = stages.get(self.stage)
        m = stage.model
        shape = f"{m['n_embd']} wide, {m['n_layer']} layers, context {stage.block_size}, batch {stage.batch_size}"
        head = f"--time-budget {self.budget:g} without --model: stage {self.stage} ({shape})"
        if self.speed is None:
            return (f"{head}, the frontier's choice for its longest budget, since a GPU is many times faster than the "
                    "CPU it was measured on; --model chooses another")
        there = self.budget * self.speed  # beyond a float's range for a budget of 1e308 s: then the speed alone
        pace = "" if math.isclose(self.speed, 1.0, rel_tol=0.05) else \
            f"; this machine runs at {self.speed:.2f}x its speed" + \
            (f", so {self.budget:g} s here train like {there:.3g} s there" if math.isfinite(there) else "")
        return (f"{head}, the shape that learned most in {self.point.seconds:g} s (full val {self.point.val:.2f}) on "
                f"{REFERENCE_MACHINE}{pace}; --model chooses another")


def choose(budget: float, modern_step: Optional[float]) -> Sizing:
    """The frontier's stage for ``budget`` seconds here, where one modern step takes ``modern_step`` seconds
    (None on a GPU: the longest budget's stage).

    The budget is converted to the reference machine's seconds and matched to
    the nearest measured budget on a log scale (10 s and 20 s are as far apart as
    30 s and 60 s), and beyond the ends to the end. The comparison is of
    logarithms, so no budget a user can type overflows it.
    """
    if modern_step is None:
        return Sizing(budget, None, FRONTIER[-1])
    speed = REFERENCE_STEP / modern_step
    there = math.log(budget) + math.log(speed)  # the budget on the reference machine's clock, as a logarithm
    point = min(FRONTIER, key=lambda p: abs(math.log(p.seconds) - there))
    return Sizing(budget, speed, point)
