"""Checks of values read back from JSON files that a user may edit or damage (run records, the tuning cache).

``json`` reads ``true`` as a bool, which is also an int, and reads ``Infinity``
and ``NaN`` as floats: neither is a count or a measurement.
"""

from __future__ import annotations

import math
from typing import Any


def count(value: Any) -> bool:
    """A whole number of at least 0, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def number(value: Any) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
