"""Options that several commands share, defined once so that they read and behave alike."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer


class Weights(str, Enum):
    """Which of a run's saved weights to load (see :func:`tinyshake.checkpoint.load`)."""

    best = "best"
    last = "last"


WeightsOpt = Annotated[Weights, typer.Option(case_sensitive=False,
    help="The run's best weights (lowest val estimate during training) or its last saved ones.")]
