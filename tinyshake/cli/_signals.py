"""Stop signals for the commands that run long: ``train``, ``ladder`` and ``chat``.

One place decides which signals ask a command to stop, what exit code each
gives, how a handler writes to the terminal, and how the previous handlers come
back, so every command that can be stopped stops the same way. Work that must
not be cut mid-way (a reply between two characters, torch's import) holds
Ctrl-C back as a flag with :func:`sigint_flag`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any, Callable, Iterator, Optional

INTERRUPT_EXIT = 130  # what shells report for a process stopped by Ctrl-C (128 + SIGINT)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

Handler = Callable[[int, Any], None]


def say_now(text: str) -> None:
    """Write to stderr from a signal handler: one raw write, which cannot re-enter a buffered stream."""
    try:
        os.write(sys.stderr.fileno(), text.encode())
    except (OSError, ValueError):  # no real file descriptor (an in-process test runner): stay silent
        pass


def signal_name(signum: int) -> str:
    """How a stop message names the signal: ``Ctrl-C`` for SIGINT, else its name (``SIGTERM``)."""
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


class StopFlag:
    """Ctrl-C, SIGTERM or SIGHUP asks the loop to finish its step and save; a second one stops at once.

    Batch schedulers send SIGTERM (and a closed terminal SIGHUP) before they
    kill, so those save exactly like Ctrl-C. The exit code is the shell's for
    the first signal: 130, 143 or 129. Once that checkpoint is saved, more
    signals are ignored: all that is left is printing how to resume.
    ``on_stop`` is told the signal's name at the first one, from the handler.

    While ``at_once`` is set (the model is being built, or a first step runs
    that no evaluation came before), there is nothing worth finishing and
    saving, and a big build or step could take minutes: the first signal stops
    at once too (KeyboardInterrupt), saving nothing.
    """

    def __init__(self, on_stop: Callable[[str], None], at_once: bool = False) -> None:
        self.signum: Optional[int] = None
        self.saved = False
        self.at_once = at_once
        self.on_stop = on_stop

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)

    def __call__(self, signum: int, frame: Any) -> None:
        if self.saved:
            return
        if self.requested:
            raise KeyboardInterrupt
        self.signum = signum
        if self.at_once:
            raise KeyboardInterrupt
        self.on_stop(signal_name(signum))


@contextlib.contextmanager
def handling(handler: Handler, signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[bool]:
    """Send ``signals`` to ``handler`` inside the block, then put the previous handlers back.

    Yields whether the handler is in place: only the main thread may set
    handlers, so elsewhere (a command run from a thread) the signals stay with
    whoever runs us.
    """
    previous: Optional[dict[int, Any]]
    try:
        previous = {sig: signal.signal(sig, handler) for sig in signals}
    except ValueError:  # not the main thread (it fails at the first signal, so none is left changed)
        previous = None
    if previous is None:  # yielded outside the except clause, so the block's own errors do not chain to it
        yield False
        return
    try:
        yield True
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def sigint_flag() -> Iterator[Callable[[], bool]]:
    """While the block runs, Ctrl-C raises a flag instead of KeyboardInterrupt; the old handler is back after.

    The caller looks at the flag where stopping is safe: a reply stops between
    two characters, so the sampler's state and the conversation stay whole.
    Outside the main thread Ctrl-C stays with whoever runs us, and the flag
    never rises.
    """
    hits: list[int] = []
    with handling(lambda signum, frame: hits.append(signum), (signal.SIGINT,)):
        yield lambda: bool(hits)
