"""Issue #24, class 3: sizes that cannot fit are refused before anything is allocated, and a stop signal during the
build or the first step ends the process at once, saving nothing."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from conftest import default_sigint, subprocess_env
from test_train import TINY_ARGS, TINYSHAKE, assert_one_line_error, snapshot, train_cli
from tinyshake.training import estimates, plan as planning, stages
from tinyshake.models.model import build, count_parameters


@pytest.mark.parametrize("args", [["--n-layer", "1000000"], ["--batch-size", "1000000000"],
                                  ["--model", "bigram", "--batch-size", "100000000"],
                                  ["--block-size", "100000", "--n-head", "1"]],
                         ids=["layers", "batch", "bigram-batch", "block"])
def test_sizes_that_cannot_fit_in_memory_are_refused_before_anything_is_built(cached, home, monkeypatch, args):
    built = []
    monkeypatch.setattr("tinyshake.models.speed.build", lambda *a, **k: built.append(a))  # would take minutes or gigabytes
    before = snapshot(home)
    line = assert_one_line_error(train_cli(*TINY_ARGS, "--run", "big", *args, code=2),
                                 "not enough memory for the model and a training step", "GiB free", "--batch-size")
    assert built == [] and snapshot(home) == before, line


def test_the_memory_estimate_counts_at_least_the_model_and_its_adamw_state():
    """The refusal errs towards running: the estimate is below what a step really holds, never above."""
    for name in stages.STAGES:
        config = planning.make_config(name, vocab_size=65)
        parameters = count_parameters(build(config.model))
        assert 16 * parameters <= estimates.training_bytes(config) < 16 * parameters + 4 * 2**30


def test_bench_refuses_what_cannot_fit_through_the_same_check(cached, home):
    from typer.testing import CliRunner

    from tinyshake.cli import app

    result = CliRunner().invoke(app, ["bench", "--stage", "mini", "--n-layer", "1000000", "--steps", "1"])
    assert_one_line_error(result, "not enough memory for the model and a training step")


def _stop_while_building(home, sig: int) -> subprocess.CompletedProcess:
    """Start a deep model that takes many seconds to build, and send ``sig`` once the build has started."""
    proc = subprocess.Popen([TINYSHAKE, "train", "--model", "mini", "--run", "deep", "--n-layer", "3000",
                             "--n-embd", "8", "--n-head", "1", "--batch-size", "1", "--block-size", "4",
                             "--max-iters", "1", "--sample-chars", "0", "--device", "cpu"],
                            env=subprocess_env(home, PYTHONPROFILEIMPORTTIME="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    for line in proc.stderr:  # the training module is imported just before the run starts: the build comes next
        if line.rsplit("|", 1)[-1].strip() == "tinyshake.training.train":
            break
    time.sleep(0.5)
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=60)  # before: the build went on, then the first step, then a save
    finally:
        proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["term", "int"])
def test_a_stop_signal_during_the_build_ends_at_once_and_saves_nothing(cached, home, sig, code):
    done = _stop_while_building(home, sig)
    assert done.returncode == code and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "Aborted" in done.stderr and "stopping after this step" not in done.stderr
    assert not (home / "runs" / "deep").exists()


def test_a_stop_flag_set_to_stop_at_once_raises_at_the_first_signal_and_keeps_its_exit_code():
    from tinyshake.cli._signals import StopFlag

    told: list[str] = []
    flag = StopFlag(told.append, at_once=True)
    with pytest.raises(KeyboardInterrupt):
        flag(signal.SIGTERM, None)
    assert flag.requested and flag.exit_code == 143 and told == []
