"""The app's frame: version, help, ``python -m``, completion options and ``tinyshake info``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import subprocess_env
from typer.testing import CliRunner

from tinyshake import __version__, corpus
from tinyshake.models import onednn
from tinyshake.training import device, machine
from tinyshake.cli import app


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag):
    result = invoke(flag)
    assert result.exit_code == 0
    assert result.output == f"tinyshake {__version__}\n"


@pytest.mark.parametrize("args", [["--help"], []], ids=["help", "no-arguments"])
def test_help_lists_commands_and_completion(args):
    result = invoke(*args)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Usage:" in result.output
    for word in ("fetch", "info", "--install-completion", "--show-completion", "--version"):
        assert word in result.output


def test_fetch_help_lists_its_options():
    result = invoke("fetch", "--help")
    assert result.exit_code == 0
    for option in ("--url", "--from", "--corpus", "--force", "--timeout", "--retries", "TINYSHAKE_CORPUS_URL"):
        assert option in result.output


def test_python_dash_m(home):
    proc = subprocess.run(
        [sys.executable, "-m", "tinyshake", "--version"],
        env=subprocess_env(home), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout == f"tinyshake {__version__}\n"


def test_info_with_nothing_cached(home):
    result = invoke("info")
    assert result.exit_code == 0, result.output
    assert f"home       {home} (from TINYSHAKE_HOME)" in result.output
    assert torch.__version__ in result.output
    assert f"device     {device.resolve('auto').device} (auto:" in result.output
    assert "none (run `tinyshake fetch`)" in result.output
    assert f"cpu        {machine.cpu_model()}" in result.output and "threads    " in result.output  # test_threads


def test_info_names_the_default_blas_where_onednn_is_missing(monkeypatch):
    monkeypatch.setattr(onednn, "_LINEAR", None)
    assert "float32 layers through the default BLAS (TINYSHAKE_ONEDNN=0, or no oneDNN in this build)" in invoke("info").output


def test_info_lists_verified_and_corrupt_corpora(cached, corpus_file):
    for _ in corpus.import_file(corpus_file, "mine"):
        pass
    corpus.text_path("mine").write_text("changed\n")
    result = invoke("info")
    assert result.exit_code == 0, result.output
    assert "tinyshakespeare (verified)" in result.output
    assert "mine (CORRUPT: import it again with `tinyshake fetch --from PATH --corpus mine --force`)" in result.output
    corpus.text_path("tinyshakespeare").write_text("changed\n")
    assert "tinyshakespeare (CORRUPT: run `tinyshake fetch --force` to fix it)" in invoke("info").output


# -- the entry point: -h, Typer's usage errors, dead outputs, Ctrl-C (issue #11) and no torch for help (#12) --------

from pathlib import Path  # noqa: E402

from test_train import TINYSHAKE  # noqa: E402

from tinyshake.cli import run  # noqa: E402

COMMANDS = sorted(c.name for c in app.registered_commands) + sorted(g.name for g in app.registered_groups)


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)], ids=["root", *COMMANDS])
def test_dash_h_is_help_everywhere(command):
    assert invoke(*command, "-h").output == invoke(*command, "--help").output
    assert invoke(*command, "-h").exit_code == 0


def test_typers_usage_errors_are_one_line_when_stderr_is_not_a_terminal(capsys):
    assert run(["train", "--batch-size", "abc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: Invalid value for '--batch-size'") and len(err.strip().splitlines()) == 1


def installed(home: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([TINYSHAKE, *args], env=subprocess_env(home), capture_output=True, text=True, timeout=120,
                          **kwargs)


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["runs"]], ids=["version", "help", "runs"])
def test_a_full_disk_is_one_line_and_exit_1(home, args):
    with open("/dev/full", "w") as full:
        done = subprocess.run([TINYSHAKE, *args], env=subprocess_env(home), stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["Error: cannot write the output: No space left on device"]


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["runs"]], ids=["version", "help", "runs"])
def test_a_closed_pipe_is_silent(home, args):
    read, write = os.pipe()
    proc = subprocess.Popen([TINYSHAKE, *args], env=subprocess_env(home), stdout=write, stderr=subprocess.PIPE,
                            text=True)
    os.close(write)
    os.close(read)  # the reader is gone before anything is written
    _, err = proc.communicate(timeout=120)
    assert err == "" and proc.returncode in (141, 1)


def test_help_and_version_import_no_torch(home):
    """What needs no tensors starts without torch: any module under tinyshake/cli importing it at the top fails this."""
    for args in (["--version"], ["--help"], ["train", "--help"], ["chat", "-h"], ["bench", "--help"], ["info", "-h"],
                 ["runs"], ["stages"], ["ladder", "--help"], ["plot", "--help"], ["fetch", "--help"]):
        done = subprocess.run([TINYSHAKE, *args], env=subprocess_env(home, PYTHONPROFILEIMPORTTIME="1"),
                              capture_output=True, text=True, timeout=120)
        imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
        assert done.returncode == 0 and "torch" not in imported, args


# -- Ctrl-C while train starts, and what a terminal gets (issue #11) ------------------------------------------------

import re  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402

from conftest import SGR, colours, default_sigint  # noqa: E402
from test_train import TINY_ARGS  # noqa: E402

from tinyshake.store import record

SHORT_RUN = ("train", *TINY_ARGS, "--max-iters", "40", "--eval-interval", "20", "--sample-chars", "0")


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.5])
def test_ctrl_c_while_train_starts_exits_130_and_leaves_no_run(cached, home, delay):
    """Imports, planning, loading the corpus, building the model, the first evaluation: no traceback, no run."""
    proc = subprocess.Popen([TINYSHAKE, "train", *TINY_ARGS, "--run", "early", "--eval-iters", "100000000"],
                            env=subprocess_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, (proc.returncode, out, err)
    assert not (home / "runs" / "early").exists() and record.list_runs() == []


def test_no_color_on_a_terminal_keeps_the_live_display_and_drops_only_colour(cached, home, terminal):
    coloured = terminal(home, *SHORT_RUN, "--run", "coloured")
    assert coloured.wait(300) == 0
    assert colours(coloured.output)  # the control: on a terminal Rich colours the bar and the table
    plain = terminal(home, *SHORT_RUN, "--run", "plain", NO_COLOR="1")
    assert plain.wait(300) == 0
    out = plain.output
    assert "\x1b[?25l" in out and re.search(r"\x1b\[\d*A", out)  # a live display: cursor hidden, redrawn in place
    assert "━" in out and re.search(r"┃ +step ┃ +train ┃ +val ┃", SGR.sub("", out))  # its bar and its loss table
    assert not colours(out), colours(out)


def test_term_dumb_on_a_terminal_and_a_pipe_give_plain_text(cached, home, terminal):
    dumb = terminal(home, *SHORT_RUN, "--run", "dumb", TERM="dumb")
    assert dumb.wait(300) == 0
    piped = subprocess.run([TINYSHAKE, *SHORT_RUN, "--run", "piped"], env=subprocess_env(home), capture_output=True,
                           text=True, timeout=300)
    assert piped.returncode == 0
    for out in (dumb.output, piped.stdout + piped.stderr):
        assert "\x1b" not in out and re.search(r"^step 20: train loss \d\.\d{4}, val loss \d\.\d{4}\r?$", out, re.M)


FAKE_TORCH = """
import os, signal, time
os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the import
for _ in range(50):
    time.sleep(0.001)  # Python runs on: a handler that raises would raise here
FINISHED = True
"""
LOAD_FAKE_TORCH = """
import signal, sys
from tinyshake.cli import _torch
handler = signal.getsignal(signal.SIGINT)
try:
    _torch.load()
    print("not interrupted", end=" ")
except KeyboardInterrupt:
    print("interrupted", end=" ")
print(getattr(sys.modules["torch"], "FINISHED", False), signal.getsignal(signal.SIGINT) is handler)
"""


@pytest.mark.parametrize(("sigint", "outcome"), [("default", "interrupted"), ("ignored", "not interrupted")])
def test_ctrl_c_while_torch_loads_waits_for_the_import_to_finish(tmp_path, sigint, outcome):
    """Raised inside torch's import, a KeyboardInterrupt can pass through C++ that aborts the process (exit -6).

    A stand-in torch package presses Ctrl-C while it imports: the import finishes, the Ctrl-C comes right after
    (unless the command ignores Ctrl-C), and the command's own handler is back in place.
    """
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(FAKE_TORCH)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    ignore = "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\n" if sigint == "ignored" else ""
    done = subprocess.run([sys.executable, "-c", ignore + LOAD_FAKE_TORCH], env=env, capture_output=True, text=True,
                          timeout=60, preexec_fn=default_sigint)
    assert done.returncode == 0 and done.stdout == f"{outcome} True True\n", (done.stdout, done.stderr)


@pytest.mark.parametrize("command", [["chat", "-p", "ROMEO:"], ["train", *TINY_ARGS, "--run", "early"]],
                         ids=["chat", "train"])
def test_ctrl_c_while_torch_imports_numpy_is_not_lost(cached, home, command):
    """torch imports numpy from C++ and clears any error there: a Ctrl-C at that moment used to be lost.

    The moment is found by the import log: numpy's first submodule is in, numpy itself is not yet. Lost, the
    Ctrl-C would let chat go on to say there is no run (exit 2) and train go on training.
    """
    proc = subprocess.Popen([TINYSHAKE, *command], env=subprocess_env(home, PYTHONPROFILEIMPORTTIME="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    for line in proc.stderr:
        if "numpy" in line:
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, (proc.returncode, out, err[-2000:])
    assert not (home / "runs" / "early").exists()


# --------------------------------------------------------------------------- tables, piped

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from rich.text import Text  # noqa: E402

from tinyshake.cli._output import make_console, plain_table  # noqa: E402


def test_a_piped_table_is_aligned_columns_one_line_a_row_with_no_borders_or_padding():
    table = Table(title="settings")
    table.add_column("name")
    table.add_column("count", justify="right")
    table.add_row("a [b]x[/b]", "1")  # markup is resolved, as Rich shows it
    table.add_row("long name\nsecond line", "1,000")  # a cell over two lines stays on the row's line
    table.add_row(Text("t"), "")
    table.add_row(Text("漢字\tx"), "2")  # wide characters take two cells each; a tab is a space
    assert plain_table(Console(), table).plain.splitlines() == [
        "settings",
        "name                   count",
        "a x                        1",
        "long name second line  1,000",
        "t",
        "漢字 x                     2",
    ]


@pytest.mark.parametrize("columns", ["abc", "-5", "0", ""])
def test_a_columns_value_that_is_no_width_is_ignored(monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", columns)
    result = invoke("stages")
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert any(line.startswith("mini ") for line in result.stdout.splitlines())


def test_every_table_a_command_prints_to_a_pipe_comes_out_plain(home, capsys):
    console = make_console()  # pytest's captured stdout is no terminal
    table = Table("stage", "what it adds")
    table.add_row("mini", "the gpt stage, small enough for a laptop CPU " * 5)
    console.print(table)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].startswith("mini   the gpt stage") and lines[1] == lines[1].rstrip()
    assert not any(set(line) & set("│┃━─┏┗") for line in lines)


def test_info_says_where_the_home_comes_from(monkeypatch):
    from tinyshake.store import paths

    assert paths.home_source() == "from TINYSHAKE_HOME"
    monkeypatch.delenv("TINYSHAKE_HOME")
    assert paths.home_source() == "the user data folder; set TINYSHAKE_HOME to move it"


def test_a_value_not_among_the_choices_is_one_plain_line(home):
    result = installed(home, "eval", "--weights", "worst")  # a choice in another case is the choice (#21)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == ["Error: Invalid value for '--weights': 'worst' is not one of 'best', 'last'."]


@pytest.mark.parametrize("columns", [80, 120])
def test_every_help_fits_a_terminal_without_splitting_a_hyphenated_word(home, terminal, columns):
    """Click wraps help text at hyphens too: a stage name such as mini-bpe must not come out as 'mini-' and 'bpe'."""
    for command in [[], *([c] for c in COMMANDS)]:
        term = terminal(home, *command, "--help", columns=columns)
        assert term.wait() == 0, term.output
        lines = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", term.output).replace("\r", "").splitlines()
        assert max(len(line) for line in lines) <= columns, (command, term.output)
        split = [line for line in lines if re.search(r"[A-Za-z0-9]-$", line)]
        assert split == [], (command, split)
