"""Importing torch from a command, so that a Ctrl-C meanwhile ends the command (exit 130) like any other.

A KeyboardInterrupt must not be raised inside torch's import. torch runs
Python from C++ as it loads (numpy's import among it): there, a
KeyboardInterrupt was either cleared, so that the Ctrl-C was lost and ``chat``
or ``train`` went on as if nothing had been pressed, or thrown through C++
code that cannot pass it on, which aborts the process (``terminate called
after throwing an instance of 'pybind11::error_already_set'``, exit -6). So a
Ctrl-C during the import only raises a flag, and is delivered as soon as torch
is in.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import ContextManager

from tinyshake.cli._output import make_console, use_rich
from tinyshake.cli._signals import sigint_flag


def _saying() -> ContextManager:
    """On a terminal, a spinner on stderr while torch loads (seconds of a blank screen otherwise); gone after."""
    if "torch" in sys.modules or not use_rich(sys.stderr):
        return contextlib.nullcontext()
    return make_console(stderr=True).status("Loading PyTorch…", spinner="dots")


def load() -> None:
    """Import torch with Ctrl-C held back, saying so on a terminal; a command calls this before it first needs torch."""
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, None):
        with _saying():
            import torch  # noqa: F401  (nothing to hold back, or a handler Python cannot put back)
        return
    with sigint_flag() as pressed, _saying():
        import torch  # noqa: F401
    if pressed():
        signal.raise_signal(signal.SIGINT)  # to the handler the command had: KeyboardInterrupt, for Python's own
