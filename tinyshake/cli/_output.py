"""How the CLI talks to people: Rich on a terminal, plain text everywhere else.

Three cases, decided here for every command:

- a terminal: Rich, with live progress and colour;
- a terminal with ``NO_COLOR`` set: the same Rich output (live bars and
  tables stay) without colour, as https://no-color.org asks;
- piped, redirected, ``TERM=dumb`` (or tests): plain text, no escape codes,
  and tables as aligned columns, one line a row, for ``grep``, ``awk`` and ``cut``.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import functools
import os
import re
import sys
from typing import Callable, TextIO, TypeVar

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tinyshake.errors import TinyshakeError

F = TypeVar("F", bound=Callable[..., object])
PLAIN_WIDTH = 160
MAX_SIZE = {"COLUMNS": 1000, "LINES": 1000}  # wider or taller is a typo; drawing it could take minutes and gigabytes
STREAMS = ("stdin", "stdout", "stderr")
CLOSED_AT_START: set[str] = set()  # the standard streams this process was started without (`>&-`, `<&-`)
ENCODE_ERRORS = "tinyshake-ascii"
# What the drawings use, in characters every encoding has: Rich swaps its own boxes, these are the app's.
ASCII_FOR = {"\u00b2": "^2", "\u00b7": ".", "\u00d7": "x", "\u2026": "...", "\u2014": "--", "\u2013": "-",
             "\u2500": "-", "\u2501": "=", "\u2502": "|", "\u2503": "|", "\u2524": "|", "\u2514": "+",
             "\u2588": "#", "\u23ce": "\\n", "\u21e5": "\\t", "\u2192": "->", "\u2265": ">=", "\u2264": "<="}


def _in_ascii(exc: UnicodeError) -> tuple[str, int]:
    """Codec error handler: a character the output's encoding lacks becomes its ASCII stand-in, else ``?``."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    return "".join(ASCII_FOR.get(char, "?") for char in exc.object[exc.start:exc.end]), exc.end


codecs.register_error(ENCODE_ERRORS, _in_ascii)


def _whole(value: str) -> int | None:
    """``value`` as a positive whole number, or None: ``"²"`` passes ``isdigit`` but not ``int``, so ASCII only."""
    value = value.strip()
    return int(value) if value.isascii() and value.isdigit() and int(value) > 0 else None


def clean_size_env() -> None:
    """Make ``COLUMNS`` and ``LINES`` values that Rich can read (it calls ``int`` on anything ``isdigit``).

    A value that is not a plain positive number is dropped, as if unset; one
    beyond :data:`MAX_SIZE` is lowered to it. Done before any console exists.
    """
    for name, cap in MAX_SIZE.items():
        value = os.environ.get(name)
        if value is None:
            continue
        number = _whole(value)
        if number is None:
            del os.environ[name]
        else:
            os.environ[name] = str(min(number, cap))


def utf_output(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (stdout by default) encodes all of Unicode: UTF-8, UTF-16 and the like."""
    encoding = getattr(stream or sys.stdout, "encoding", None) or "utf-8"
    return codecs.lookup(encoding).name.startswith("utf")


def fit_encodings() -> None:
    """On an output that is not UTF (``PYTHONIOENCODING=ascii``, ``latin-1``), print stand-ins, never fail.

    Every write then passes :data:`ASCII_FOR` for what the encoding lacks, so the
    same content comes out (``^2`` for ``²``, ``|`` for ``│``) instead of a UnicodeEncodeError.
    """
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and not utf_output(stream):
            reconfigure(errors=ENCODE_ERRORS)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def reopen_closed_streams() -> None:
    """Give a standard stream the process was started without (``>&-``) the null device, and note it.

    Python sets such a stream to None, and the first print or ``isatty`` on it
    raised a traceback. Its descriptor gets the null device too, so that no
    file opened later (a checkpoint) takes its number and receives the output.
    The command decides what a closed stream means (see :data:`CLOSED_AT_START`).
    """
    for fd, name in enumerate(STREAMS):
        if getattr(sys, name) is not None or _is_open(fd):
            continue
        null = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))
        CLOSED_AT_START.add(name)


def no_color() -> bool:
    """``NO_COLOR`` set to anything but the empty string: no colour, but terminal features stay."""
    return os.environ.get("NO_COLOR", "") != ""


def use_rich(stream: TextIO | None = None) -> bool:
    """True when ``stream`` (stdout by default) is a terminal that can show Rich's live displays.

    ``NO_COLOR`` does not change this (it takes the colour away, see
    :func:`make_console`); ``TERM=dumb`` and anything that is not a terminal do.
    """
    stream = stream or sys.stdout
    if os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class _Console(Console):
    """Rich's Console, except that a closed pipe ends the command as every other write to one does.

    Rich's own answer (stdout to the null device, then exit 1) would make
    ``tinyshake runs | head -c1`` end differently from ``tinyshake --version | head -c1``;
    the entry point ends both (see :func:`tinyshake.cli.run`).
    """

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError(errno.EPIPE, "the reader of the output has gone")


class _PlainConsole(_Console):
    """The console for pipes and files: every table printed is laid out by :func:`plain_table`."""

    def print(self, *objects: object, **kwargs: object) -> None:  # type: ignore[override]
        super().print(*(plain_table(self, o) if isinstance(o, Table) else o for o in objects),
                      **kwargs)  # type: ignore[arg-type]


def _cell_text(console: Console, cell: object) -> str:
    """A table cell (a string with Rich markup, a Text or another renderable) as one line of plain text."""
    if isinstance(cell, Text):
        text = cell.plain
    elif isinstance(cell, str):
        text = console.render_str(cell).plain
    else:
        lines = console.render_lines(cell, console.options, pad=False)  # type: ignore[arg-type]
        text = "\n".join("".join(segment.text for segment in line) for line in lines)
    return re.sub(r"\s*[\r\n\t]+\s*", " ", text).strip()


def _pad(cell: str, width: int, justify: str) -> str:
    """``cell`` padded to ``width`` terminal cells (a CJK character or an emoji takes two)."""
    gap = " " * (width - cell_len(cell))
    return gap + cell if justify == "right" else cell + gap


def plain_table(console: Console, table: Table) -> Text:
    """``table`` as plain text: its title, then the header and each row on one line, columns aligned by spaces.

    Rich's own tables draw borders and wrap long cells over several lines, so a
    row of ``tinyshake stages`` piped into ``grep`` came out in pieces; here no
    line is wrapped and none ends in padding, as ``docker ps`` or ``ollama list`` print.
    """
    columns = table.columns
    lines = [list(row) for row in zip(*([_cell_text(console, c) for c in column.cells] for column in columns))]
    for show, part in ((table.show_header, "header"), (table.show_footer, "footer")):
        names = [_cell_text(console, getattr(column, part)) for column in columns]
        if show and any(names):
            lines.insert(0 if part == "header" else len(lines), names)
    widths = [max((cell_len(line[i]) for line in lines), default=0) for i in range(len(columns))]
    out = [_cell_text(console, table.title)] if table.title else []
    for line in lines:
        out.append("  ".join(_pad(cell, width, column.justify)
                             for cell, width, column in zip(line, widths, columns)).rstrip())
    if table.caption:
        out.append(_cell_text(console, table.caption))
    return Text("\n".join(out))


def footnote(console: Console, table: Table, note: str) -> None:
    """A note under ``table``: its caption on a terminal; piped, a line on stderr, so stdout keeps a line a row."""
    if console.is_terminal:
        table.caption = "\n".join(filter(None, [str(table.caption or ""), note]))
        table.caption_justify = "left"
    else:
        print(note, file=sys.stderr)


def columns_env() -> int | None:
    """The width that ``COLUMNS`` sets (at most :data:`MAX_SIZE`), or None where it is unset or not a width."""
    number = _whole(os.environ.get("COLUMNS", ""))
    return None if number is None else min(number, MAX_SIZE["COLUMNS"])


def make_console(stderr: bool = False) -> Console:
    """A Console that renders Rich on a terminal (uncoloured with ``NO_COLOR``) and no escape codes otherwise."""
    stream = sys.stderr if stderr else sys.stdout
    if use_rich(stream):
        return _Console(file=stream, highlight=False, no_color=no_color())
    width = columns_env() or PLAIN_WIDTH  # text must not be squeezed into 80 columns
    return _PlainConsole(file=stream, force_terminal=False, color_system=None, highlight=False, soft_wrap=True,
                         width=width)


def error_line(message: str) -> None:
    """Print one line ``Error: message`` to stderr (and nothing, not a traceback, if stderr itself is dead)."""
    message = " ".join(str(message).split())
    with contextlib.suppress(OSError):
        if use_rich(sys.stderr):
            line = Text.assemble(("Error:", "bold red"), " ", message)
            make_console(stderr=True).print(line, soft_wrap=True)
        else:
            print(f"Error: {message}", file=sys.stderr, flush=True)


def usage_error(exc: BaseException) -> bool:
    """Show an error of Typer's command-line parser (a bad value, an unknown option); False for other errors.

    Typer's own rendering is a six-line box wherever stderr goes. Piped, it is
    one ``Error:`` line like every other error here; on a terminal, the usage,
    a hint and the message in a panel. Typer's parser errors are known by what
    they carry (a message and an exit code), because Typer keeps their classes private.
    """
    format_message = getattr(exc, "format_message", None)
    if not callable(format_message) or not isinstance(getattr(exc, "exit_code", None), int):
        return False
    message = format_message().replace(": Value error, ", ": ")  # pydantic's prefix, which Typer passes on
    ctx = getattr(exc, "ctx", None)
    if not message:  # a bare command group: its help was already printed
        return True
    if not use_rich(sys.stderr):
        error_line(message)
        return True
    console = make_console(stderr=True)
    with contextlib.suppress(OSError):
        if ctx is not None:
            console.print(Text(ctx.get_usage()), Text(f"Try '{ctx.command_path} --help' for help.", style="dim"))
        console.print(Panel(Text(message), title="Error", title_align="left", border_style="red"))
    return True


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
