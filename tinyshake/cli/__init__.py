"""The command-line app: one module per command, each rendering what the core returns.

Importing this package must stay cheap: ``--help``, ``--version`` and every
command that needs no tensors answer without importing torch (it takes
seconds), so no module under ``tinyshake/cli/`` imports torch, or a core module
that does, at module level; the commands import them when they run.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from typing import Annotated, NoReturn, Optional, Sequence

import typer

from tinyshake import __version__
from tinyshake.cli import _output
from tinyshake.cli import bench as bench_cmd
from tinyshake.cli import chat as chat_cmd
from tinyshake.cli import demo as demo_cmd
from tinyshake.cli import eval as eval_cmd
from tinyshake.cli import fetch, info, runs, train
from tinyshake.cli import inspect as inspect_cmd
from tinyshake.cli import ladder as ladder_cmd
from tinyshake.cli import plot as plot_cmd
from tinyshake.cli import sample as sample_cmd
from tinyshake.cli import stages as stages_cmd
from tinyshake.cli._output import error_line, usage_error
from tinyshake.cli._signals import INTERRUPT_EXIT
from tinyshake.errors import TinyshakeError

PROG = "tinyshake"
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `... | head` where the reader left early
OUTPUT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)  # a write to stdout failed: no room, dead device

app = typer.Typer(
    name=PROG,
    help="Build a GPT from scratch on tiny Shakespeare: fetch the corpus, train the lecture's models, chat, and demos.",
    no_args_is_help=True,
    rich_markup_mode=None,  # click's help: hanging indents, and flags without a metavar, at any width
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
)


def _version(value: bool) -> None:
    if value:
        print(f"{PROG} {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", "-V", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = None,
) -> None:
    """Build a GPT from scratch on tiny Shakespeare, from the terminal."""


app.command("fetch")(fetch.fetch)
app.command("train")(train.train)
app.command("chat")(chat_cmd.chat)
app.command("sample")(sample_cmd.sample_cmd)
app.command("eval")(eval_cmd.eval_run)
app.add_typer(runs.app, name="runs")
app.command("demo")(demo_cmd.demo)
app.command("bench")(bench_cmd.bench_cmd)
app.command("info")(info.info)
app.add_typer(inspect_cmd.app, name="inspect")
app.command("stages")(stages_cmd.stages_cmd)
app.command("plot")(plot_cmd.plot)
app.command("ladder")(ladder_cmd.ladder)


def _invoke(argv: Optional[list[str]]) -> int:
    """Parse ``argv`` and run the command; returns its exit code.

    Typer's standalone mode is not used: it prints its own usage errors as a
    box even into a pipe, and ends a closed pipe with exit 1. Shell completion
    (click's documented ``_TINYSHAKE_COMPLETE`` variable) still goes through it.
    """
    command = typer.main.get_command(app)
    if f"_{PROG.upper()}_COMPLETE" in os.environ:
        command.main(args=argv, prog_name=PROG)  # answers the shell and exits
    try:
        with command.make_context(PROG, list(sys.argv[1:] if argv is None else argv)) as ctx:
            command.invoke(ctx)
    except typer.Exit as exc:  # --help, --version, and commands that end early
        return exc.exit_code
    except typer.Abort:  # end of input at one of Typer's prompts
        return 1
    except TinyshakeError as exc:  # from code outside a command's handle_errors (an option's callback)
        error_line(str(exc))
        return exc.exit_code
    except Exception as exc:
        if not usage_error(exc):
            raise
        return int(getattr(exc, "exit_code", 2))
    return 0


def _discard(stream: object) -> None:
    """Point ``stream`` at the null device, so that the flush at exit cannot fail a second time (Python's advice)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())  # type: ignore[attr-defined]
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real stream to replace
        pass


def _os_error(exc: OSError) -> str:
    """One line for an OSError that no command turned into its own message: most often a dead output."""
    if exc.filename:
        return f"{exc.strerror or exc}: {exc.filename}"
    if exc.errno in OUTPUT_ERRNOS:
        _discard(sys.stdout)
        return f"cannot write the output: {exc.strerror}"
    return exc.strerror or str(exc)


def run(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command line and return the exit code, for every command alike.

    2 is a usage error, 1 a failure, 130 Ctrl-C (also while the imports and
    the loading of the first seconds run), 141 a closed pipe (silently), and a
    dead output (a full disk, ``> /dev/full``, a closed stdout) is one line on
    stderr and 1, never a traceback. The environment is made safe first: closed
    standard streams, an output encoding that is not UTF, a ``COLUMNS`` that is
    not a number.
    """
    _output.reopen_closed_streams()
    _output.fit_encodings()
    _output.clean_size_env()
    if "stdout" in _output.CLOSED_AT_START:  # nowhere for the output to go: as `> /dev/full`, before any work
        error_line("cannot write the output: standard output is closed")
        return 1
    try:
        code = _invoke(None if argv is None else list(argv))
        sys.stdout.flush()  # output still buffered fails here, not in the interpreter's flush at exit
        return code
    except KeyboardInterrupt:
        return INTERRUPT_EXIT
    except BrokenPipeError:
        _discard(sys.stdout)
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        error_line(_os_error(exc))
        return 1


def main(argv: Optional[Sequence[str]] = None) -> NoReturn:
    """Console-script entry point (``tinyshake``, ``python -m tinyshake``).

    Once the command is over, a further Ctrl-C (a second one, pressed while the
    first is handled) can only interrupt the interpreter's shutdown, which
    prints a traceback: it is ignored from here on.
    """
    code = run(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _settle(sys.stdout)
    _settle(sys.stderr)
    raise SystemExit(code)


def _settle(stream: object) -> None:
    """Flush ``stream`` now; if it cannot take the output (``2>/dev/full``), send it to the null device.

    Otherwise the interpreter's own flush at exit fails again and replaces the
    command's exit code with 120.
    """
    try:
        stream.flush()  # type: ignore[attr-defined]
    except (OSError, ValueError, AttributeError):
        _discard(stream)
