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

import signal

from tinyshake.cli._signals import sigint_flag


def load() -> None:
    """Import torch with Ctrl-C held back; a command calls this before it first needs torch."""
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, None):
        import torch  # noqa: F401  (nothing to hold back, or a handler Python cannot put back)
        return
    with sigint_flag() as pressed:
        import torch  # noqa: F401
    if pressed():
        signal.raise_signal(signal.SIGINT)  # to the handler the command had: KeyboardInterrupt, for Python's own
