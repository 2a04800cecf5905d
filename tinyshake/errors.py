"""Errors a user can cause. The CLI prints their message as one line, never a traceback."""


class TinyshakeError(Exception):
    """A failure with a message meant for the user; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(TinyshakeError):
    """Bad input from the user (an unknown stage, a size of zero, ...): exit code 2."""

    exit_code = 2
