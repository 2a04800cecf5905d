"""Importing torch from a command, so that a Ctrl-C meanwhile ends the command (exit 130) like any other.

torch imports numpy from C++ while it loads and clears whatever error that
import raises, a KeyboardInterrupt included: a Ctrl-C in those moments was
lost, and ``chat`` or ``train`` went on as if nothing had been pressed.
Imported from Python first, numpy lets the KeyboardInterrupt through, and
torch then finds it loaded.
"""

from __future__ import annotations

import contextlib


def load() -> None:
    """Import numpy (where it is installed), then torch; a command calls this before it first needs torch."""
    with contextlib.suppress(ImportError):
        import numpy  # noqa: F401
    import torch  # noqa: F401
