"""``tinyshake bench``: sizes that cannot fit are refused up front, and it says what it measures as it goes."""

from __future__ import annotations

import re

import pytest
from test_threads import busy_machine
from test_train import assert_one_line_error
from typer.testing import CliRunner

from tinyshake import bench, corpus
from tinyshake.cli import app

QUICK = ["--steps", "1", "--eval-iters", "1", "--threads", "1"]


@pytest.fixture
def no_peak(monkeypatch):
    """The 2048-cube matmul peak takes seconds on a busy machine; these tests do not read it."""
    monkeypatch.setattr(bench, "matmul_peak", lambda device, dtype=None: 100.0)


@pytest.mark.parametrize("size", ["5000000", "200000"])  # longer than the whole text, longer than the val split
def test_a_block_size_beyond_a_split_is_one_line_exit_2_before_measuring(cached, no_peak, size):
    assert int(size) > len(corpus.load().val)
    result = CliRunner().invoke(app, ["bench", "-s", "bigram", "--block-size", size, *QUICK])
    assert_one_line_error(result, f"--block-size ({size}) must be below the shortest split's length")


def test_a_line_of_progress_per_stage_on_stderr_and_the_table_on_stdout(cached, no_peak):
    result = CliRunner().invoke(app, ["bench", "-s", "bigram", "-s", "head", *QUICK])
    assert result.exit_code == 0, result.output
    progress = [line for line in result.stderr.splitlines() if line.startswith("bench: ")]
    per_stage = [line for line in progress if "/2)" in line]
    assert per_stage[0::2] == ["bench: measuring bigram (1/2): 1 steps, an evaluation, sampling...",
                               "bench: measuring head (2/2): 1 steps, an evaluation, sampling..."]
    assert [re.sub(r"[0-9.]+ ms", "N ms", line) for line in per_stage[1::2]] == [
        "bench: bigram: N ms/iter (1/2)", "bench: head: N ms/iter (2/2)"]
    assert "bench:" not in result.stdout and "1 thread (set by --threads)" in result.stdout


def test_a_busy_machine_says_so_in_one_line(cached, no_peak, monkeypatch):
    busy_machine(monkeypatch)
    result = CliRunner().invoke(app, ["bench", "-s", "bigram", "--steps", "1", "--eval-iters", "1"])
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if "busy" in line] == [
        "note: the machine is busy: other programs use 3.5 of 4 cores; using 1 thread, so steps may be slower than "
        "on a quiet day"]
