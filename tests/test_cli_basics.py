"""The app's frame: version, help, ``python -m``, completion options and ``tinyshake info``."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import subprocess_env
from typer.testing import CliRunner

from tinyshake import __version__, corpus, device, onednn
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
        env=subprocess_env(home), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout == f"tinyshake {__version__}\n"


def test_info_with_nothing_cached(home):
    result = invoke("info")
    assert result.exit_code == 0, result.output
    assert str(home) in result.output
    assert torch.__version__ in result.output
    assert f"device     {device.resolve('auto').device} (auto:" in result.output
    assert "none (run `tinyshake fetch`)" in result.output
    route = "oneDNN" if onednn.available() else "the default BLAS"
    assert f"cpu        {torch.get_num_threads()} threads; float32 layers through {route}" in result.output


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
    assert "mine (CORRUPT" in result.output
