"""The ``tinyshake`` command and ``python -m tinyshake`` (torchrun uses this too): the app, loaded under guard.

Loading the app takes a fifth of a second. A Ctrl-C meanwhile must end as every
Ctrl-C does, with exit 130 and no traceback, from the app's very first import
on, and also in the lines of the console script that run before :func:`main`.
So from this module's first line until the app is loaded, Ctrl-C exits at once;
the app then handles it as a KeyboardInterrupt, as everywhere else.
"""

import signal  # nothing else before the handler is in place: each import is a moment a Ctrl-C could come

INTERRUPT_EXIT = 130  # what shells report for a process stopped by Ctrl-C; the app's own constant is not loaded yet


def _exit_interrupted(signum: int, frame: object) -> None:
    # A second Ctrl-C would find the interpreter shutting down, which puts back the default handler: the process
    # would die by the signal (or print a traceback) instead of exiting 130. Ignored from here, as in the app.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise SystemExit(INTERRUPT_EXIT)


if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # a Ctrl-C that was ignored stays ignored
    signal.signal(signal.SIGINT, _exit_interrupted)


def main() -> None:
    """Load the command-line app, then hand Ctrl-C back to Python and run the command line."""
    from tinyshake.cli import main as run_app

    if signal.getsignal(signal.SIGINT) is _exit_interrupted:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    run_app()


if __name__ == "__main__":
    main()
