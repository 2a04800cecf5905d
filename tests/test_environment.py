"""Issue #24, class 2: what the environment hands the process never ends in a traceback.

Closed standard descriptors, an output encoding that is not UTF-8, ``COLUMNS``/``LINES`` that are not numbers,
chart sizes without bound, a Ctrl-C while the app loads, and an error line that cannot be written: each goes
through the installed entry point, as a shell starts it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from conftest import default_sigint, subprocess_env, trained_home
from test_train import TINY_ARGS, TINYSHAKE


def installed(home: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    kwargs = {"env": subprocess_env(home), "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kwargs}
    return subprocess.run([TINYSHAKE, *args], timeout=120, **kwargs)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, corpus_file: Path) -> Path:
    """The tiny run ``r``, trained once for the module."""
    return trained_home(tmp_path_factory, corpus_file, {"r": [*TINY_ARGS, "--sample-chars", "30"]})


@pytest.fixture
def trained(cached: Path, home: Path, template: Path) -> Path:
    """This test's home: the tiny run ``r`` (to plot, list and show), and a corpus to train more runs on."""
    shutil.copytree(template / "runs", home / "runs")
    return home


def no_traceback(done: subprocess.CompletedProcess) -> str:
    err = done.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err and "Exception" not in err, err
    return err


# -- closed standard descriptors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["runs"], ["chat", "--prompt", "A"], ["--version"]], ids=["runs", "chat", "version"])
def test_a_closed_stdout_is_one_line_and_exit_1(trained, args):
    done = installed(trained, *args, preexec_fn=_close(1))
    err = no_traceback(done)
    assert done.returncode == 1 and err.splitlines() == ["Error: cannot write the output: standard output is closed"]


def test_chat_with_a_closed_stdin_says_what_to_give_and_exits_2(trained):
    done = installed(trained, "chat", preexec_fn=_close(0))
    err = no_traceback(done)
    assert done.returncode == 2 and err.splitlines() == [
        "Error: standard input is closed: give the text with --prompt, or pipe it in"]


@pytest.mark.parametrize("args, code", [(["runs"], 0), (["runs", "show", "nosuch"], 2)], ids=["ok", "error"])
def test_a_closed_stderr_keeps_the_exit_code(trained, args, code):
    done = installed(trained, *args, preexec_fn=_close(2))
    assert done.returncode == code and done.stderr == b""


def _close(fd: int) -> Callable[[], None]:
    """``preexec_fn`` that starts the child without descriptor ``fd``, as ``>&-`` / ``<&-`` do."""
    return lambda: os.close(fd)


@pytest.mark.parametrize("args", [["runs", "show", "nosuch"], ["plot", "nosuch"], ["train", "--batch-size", "0"]],
                         ids=["runs-show", "plot", "train"])
@pytest.mark.parametrize("stdout", ["pipe", "closed"])
def test_an_error_line_that_cannot_be_written_keeps_its_exit_code(home, args, stdout):
    """``2>/dev/full``: the line is lost, the exit code is not (it became 120, or 1 with stdout closed)."""
    with open("/dev/full", "w") as full:
        done = subprocess.run([TINYSHAKE, *args], env=subprocess_env(home), stdout=subprocess.PIPE, stderr=full,
                              timeout=120, preexec_fn=_close(1) if stdout == "closed" else None)
    assert done.returncode == (2 if stdout == "pipe" else 1)


# -- output encodings --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
@pytest.mark.parametrize("args", [["stages"], ["runs", "show", "r"], ["plot", "r"], ["runs"],
                                  ["inspect", "attention", "r"], ["inspect", "next", "r"]],
                         ids=["stages", "runs-show", "plot", "runs", "attention", "next"])
def test_an_output_encoding_that_is_not_utf8_gets_the_same_content_in_its_characters(trained, encoding, args):
    utf8 = installed(trained, *args, env=subprocess_env(trained, PYTHONIOENCODING="utf-8"))
    done = installed(trained, *args, env=subprocess_env(trained, PYTHONIOENCODING=encoding))
    no_traceback(done)
    assert done.returncode == 0 == utf8.returncode
    text = done.stdout.decode(encoding)  # every byte is one the encoding has
    assert len(text.splitlines()) == len(utf8.stdout.decode().splitlines())
    if args == ["stages"]:
        assert "ReLU^2" in text if encoding == "ascii" else "ReLU²" in text
    if args[0] in ("plot", "runs") and args != ["runs"]:
        assert " |" in text and "+---" in text  # the chart's axes, in ASCII


# -- COLUMNS, LINES and chart sizes ------------------------------------------------------------------------------


@pytest.mark.parametrize("columns, lines", [("\u00b2", "\u00b3"), ("12abc", "-5")])
@pytest.mark.parametrize("args", [["runs"], ["runs", "show", "r"], ["plot", "r"]], ids=["runs", "show", "plot"])
def test_columns_and_lines_that_are_not_numbers_are_ignored(trained, columns, lines, args):
    done = installed(trained, *args, env=subprocess_env(trained, COLUMNS=columns, LINES=lines))
    no_traceback(done)
    assert done.returncode == 0 and b"r" in done.stdout


def test_a_huge_columns_is_capped_when_piped(trained):
    done = installed(trained, "plot", "r", env=subprocess_env(trained, COLUMNS="99999999"))
    no_traceback(done)
    assert done.returncode == 0
    assert 80 < max(len(line) for line in done.stdout.decode().splitlines()) < 2000  # at most 1000 columns, and labels


@pytest.mark.parametrize("height", ["1001", "1000000", "100000000"])
def test_a_plot_height_beyond_any_screen_is_one_line_exit_2(trained, height):
    done = installed(trained, "plot", "r", "--height", height)
    err = no_traceback(done)
    assert done.returncode == 2 and len(err.splitlines()) == 1 and "--height" in err and done.stdout == b""


# -- Ctrl-C while the app loads ----------------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["tinyshake.__main__", "typing", "typer", "rich", "tinyshake.cli._output"])
def test_ctrl_c_at_any_import_of_the_app_exits_130_without_a_traceback(home, module):
    """The import log says when each module is in: Ctrl-C right then, from the package's first import on."""
    proc = subprocess.Popen([TINYSHAKE, "runs"], env=subprocess_env(home, PYTHONPROFILEIMPORTTIME="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    for line in proc.stderr:
        if line.rsplit("|", 1)[-1].strip() == module:
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, (proc.returncode, out, err[-2000:])
