"""The ``tinyshake`` command and ``python -m tinyshake`` (torchrun uses this too): the app, loaded under guard.

Loading the app takes a fifth of a second. A Ctrl-C meanwhile must end as every
Ctrl-C does, with exit 130 and no traceback, from the app's very first import
on: so the import itself happens here, inside the guard, and not in the line
of the console script that calls :func:`main`.
"""

import signal


def main() -> None:
    """Load the command-line app and run the command line; a Ctrl-C while loading exits 130."""
    try:
        from tinyshake.cli import main as run_app
    except KeyboardInterrupt:
        # A second Ctrl-C would find the interpreter shutting down, which puts back the default handler: the process
        # would die by the signal (or print a traceback) instead of exiting 130. Ignored from here, as in the app.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise SystemExit(130) from None  # the app's INTERRUPT_EXIT, which is not loaded
    run_app()


if __name__ == "__main__":
    main()
