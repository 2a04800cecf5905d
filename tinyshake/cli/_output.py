"""How the CLI talks to people: Rich on a terminal, plain text everywhere else.

Plain text (no escape codes at all) is used when ``NO_COLOR`` is set, when
``TERM=dumb``, or when the stream is not a terminal (piped, redirected, tests).
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable, TextIO, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from tinyshake.errors import TinyshakeError

F = TypeVar("F", bound=Callable[..., object])
PLAIN_WIDTH = 160


def use_rich(stream: TextIO | None = None) -> bool:
    """True when ``stream`` (stdout by default) is a colour-capable terminal."""
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def make_console(stderr: bool = False) -> Console:
    """A Console that renders Rich on a terminal and emits no escape codes otherwise."""
    stream = sys.stderr if stderr else sys.stdout
    if use_rich(stream):
        return Console(file=stream, highlight=False)
    width = int(os.environ.get("COLUMNS", "0") or 0) or PLAIN_WIDTH  # tables must not be squeezed into 80 columns
    return Console(file=stream, force_terminal=False, color_system=None, highlight=False, soft_wrap=True, width=width)


def error_line(message: str) -> None:
    """Print one line ``Error: message`` to stderr."""
    message = " ".join(str(message).split())
    if use_rich(sys.stderr):
        line = Text.assemble(("Error:", "bold red"), " ", message)
        Console(file=sys.stderr, highlight=False).print(line, soft_wrap=True)
    else:
        print(f"Error: {message}", file=sys.stderr, flush=True)


def handle_errors(func: F) -> F:
    """Turn :class:`TinyshakeError` into a one-line message and its exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return func(*args, **kwargs)
        except TinyshakeError as exc:
            error_line(str(exc))
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]
