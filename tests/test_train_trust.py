"""Runs you can trust (issue #11): one owner, signals that save, checked values, one plan, final evaluations."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import time

import pytest
from typer.testing import CliRunner

from conftest import on_disk, subprocess_env
from test_train import (TINY_ARGS, TINYSHAKE, assert_one_line_error, eval_lines, import_tiny_corpus, snapshot,
                        tiny_run, train_cli)
from tinyshake import checkpoint
from tinyshake.store import record
from tinyshake.training import device, plan as planning
from tinyshake.cli import app

LONG = ["--max-iters", "100000000", "--eval-interval", "50000000"]


def start(home, *args: str) -> subprocess.Popen:
    env = subprocess_env(home, OMP_NUM_THREADS="1")
    return subprocess.Popen([TINYSHAKE, "train", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def wait_for_line(stream, prefix: str) -> str:
    while True:
        line = stream.readline()
        assert line, f"the process ended before printing {prefix!r}"
        if line.startswith(prefix):
            return line


# -- B: one owner per run ------------------------------------------------------------------------


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_a_second_training_of_a_run_in_use_is_refused_and_changes_nothing(cached, home, overwrite):
    first = start(home, *TINY_ARGS, "--run", "same", *LONG)
    try:
        wait_for_line(first.stdout, "step 0: ")
        while not checkpoint.exists("same"):  # its step-0 checkpoint is written just after the line
            time.sleep(0.05)
        before = snapshot(home / "runs" / "same")
        second = subprocess.run([TINYSHAKE, "train", *TINY_ARGS, "--run", "same", *overwrite, "--max-iters", "3"],
                                capture_output=True, text=True, env=subprocess_env(home, OMP_NUM_THREADS="1"),
                                timeout=120)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.splitlines()
        assert len(lines) == 1 and f"run 'same' is in use by process {first.pid}" in lines[0], lines
        assert snapshot(home / "runs" / "same") == before
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 130


# -- D: signals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["term", "hup"])
def test_sigterm_and_sighup_save_like_ctrl_c(cached, home, sig, code):
    proc = start(home, *TINY_ARGS, "--run", "sig", *LONG)
    try:
        wait_for_line(proc.stdout, "step 0: ")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, out + err
    assert f"{signal.Signals(sig).name}: stopping after this step" in err and "Traceback" not in err
    step = int(re.search(r"^Interrupted at step (\d+); checkpoint saved", out, re.M).group(1))
    assert "Resume with: tinyshake train --run sig --resume" in out
    assert checkpoint.read_record("sig").step == step


def test_ctrl_c_during_a_long_evaluation_stops_and_keeps_the_last_checkpoint(cached, home):
    tiny_run("ev", "--max-iters", "5", "--eval-interval", "5")  # evaluates at 0 and its final weights at 5
    before = snapshot(home / "runs" / "ev")
    proc = start(home, "--run", "ev", "--resume", "--max-iters", "20", "--eval-iters", "100000000")
    try:
        wait_for_line(proc.stderr, "Training run ev")  # the evaluation at step 5 takes hours from here
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, out + err
    assert "Interrupted during the evaluation at step 5; the checkpoint of step 5" in out and "Traceback" not in err
    assert snapshot(home / "runs" / "ev") == before


def test_ctrl_c_before_the_first_checkpoint_leaves_no_run(cached, home):
    proc = start(home, *TINY_ARGS, "--run", "early", "--eval-iters", "100000000")
    try:
        wait_for_line(proc.stderr, "Training run early")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err
    assert "nothing was saved" in out
    assert not (home / "runs" / "early").exists()


def test_ctrl_c_during_the_final_save_skips_the_sample(cached, monkeypatch):
    real_save = checkpoint.save

    def save_then_ctrl_c(name, model, record, state, best=False, tokenizer=None):
        folder = real_save(name, model, record, state, best=best, tokenizer=tokenizer)
        if record["step"] == 6:
            signal.raise_signal(signal.SIGINT)  # lands in train's own handler, as a real Ctrl-C would
        return folder

    monkeypatch.setattr(checkpoint, "save", save_then_ctrl_c)
    result = train_cli(*TINY_ARGS, "--run", "late", "--max-iters", "6", "--eval-interval", "3", code=130)
    assert "sample skipped" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("Interrupted after the last step")
    assert checkpoint.read_record("late").step == 6


# -- E: values ---------------------------------------------------------------------------------------


BAD_VALUES = {
    "lr-inf": (["--lr", "inf"], "--lr must be a positive finite number"),
    "muon-lr-nan": (["--optimizer", "muon", "--muon-lr", "nan"], "--muon-lr must be a positive finite number"),
    "muon-lr-negative": (["--optimizer", "muon", "--muon-lr", "-1"], "--muon-lr must be a positive finite number"),
    "muon-lr-inf": (["--optimizer", "muon", "--muon-lr", "inf"], "--muon-lr must be a positive finite number"),
    "muon-lr-with-adamw": (["--muon-lr", "-1"], "--muon-lr must be a positive finite number"),
    "time-budget-nan": (["--time-budget", "nan"], "--time-budget must be a positive finite number"),
    "seed-huge": (["--seed", "99999999999999999999"], "seed must be between 0 and"),
    "batch-size-huge": (["--batch-size", "9223372036854775808"], "--batch-size 9223372036854775808 is too large"),
    "device-index": (["--device", "cpu:abc"], "invalid device 'cpu:abc'"),
    "model-empty": (["--model", ""], "unknown stage ''"),
    "run-empty": (["--run", ""], "invalid run name ''"),
    "model-too-big": (["--n-embd", "100000000", "--n-head", "1"], "not enough memory for the model"),
}


@pytest.mark.parametrize("args, words", list(BAD_VALUES.values()), ids=list(BAD_VALUES))
def test_absurd_values_are_one_line_exit_2_and_change_nothing(cached, home, monkeypatch, args, words):
    monkeypatch.setattr(device, "cuda_available", lambda: False)
    before = snapshot(home)
    base = [a for a in TINY_ARGS if a not in ("--model", "mini")] if "--model" in args else TINY_ARGS
    base = [a for i, a in enumerate(base) if not (a == "--n-embd" or (i and base[i - 1] == "--n-embd"))] \
        if "--n-embd" in args else base
    assert_one_line_error(train_cli(*base, *args, "--max-iters", "1", code=2), words)
    after = {k: v for k, v in snapshot(home).items() if not k.startswith("runs/.locks/")}  # a released lock's file
    assert after == before


def test_a_loss_that_turns_nan_stops_at_that_step_and_saves_no_nan_model(cached):
    result = train_cli(*TINY_ARGS, "--run", "nan", "--lr", "1e30", "--max-iters", "200", "--eval-interval", "100",
                       code=2)
    line = result.stderr.splitlines()[-1]
    assert re.match(r"Error: training diverged at step \d+: the training loss is NaN or infinite; lower --lr", line)
    loaded = checkpoint.load("nan", weights="last")  # the step-0 checkpoint: finite weights
    assert loaded.record.step == 0
    assert all(t.isfinite().all() for t in loaded.model.state_dict().values())


def test_nothing_grows_with_max_iters():
    config = planning.make_config("mini", max_iters=2**70, eval_interval=100, time_budget=1.0)
    steps = config.eval_steps()
    assert 100 in steps and 2**70 - 1 in steps and 101 not in steps and 2**70 not in steps
    assert 0 not in steps  # a budget's run starts training at once
    assert steps.count() == 2**70 // 100 + 1  # 100, 200, ... below 2**70, and the last step
    unbudgeted = planning.make_config("mini", max_iters=2**70, eval_interval=100).eval_steps()
    assert 0 in unbudgeted and unbudgeted.count() == 2**70 // 100 + 1 + 1  # and step 0, as the lecture does
    from tinyshake.training import estimates

    # the budget's one step, and ten evaluations of 2 x 20 batches (a third of a step each), not 2**70 steps
    assert estimates.estimate_seconds(config, 1.0) == pytest.approx(1 + (10 + 1 / 100) * 2 * 20 / 3)
    assert estimates.estimate_seconds(planning.make_config("mini", max_iters=2**70, eval_interval=100), 1.0) > 2**70


def test_a_huge_max_iters_with_a_time_budget_trains_for_the_budget(cached):
    result = train_cli(*TINY_ARGS, "--run", "huge", "--max-iters", "1180591620717411303424", "--time-budget", "1",
                       "--sample-chars", "0")
    assert re.search(r"the time budget \(1 s of training\) ended the run at step \d+", result.stderr)
    assert checkpoint.read_record("huge").max_iters == 1180591620717411303424


# -- F: metrics path, resume corpus, finished runs --------------------------------------------------------


@pytest.mark.parametrize("where", ["runs/m.jsonl", "runs/x/config.json", "corpus/tinyshakespeare/input.txt"])
def test_metrics_inside_the_data_home_is_refused(cached, home, where):
    tiny_run("x", "--max-iters", "2", "--eval-interval", "2")
    before = snapshot(home)
    assert_one_line_error(train_cli(*TINY_ARGS, "--run", "y", "--metrics", str(home / where), code=2),
                          "inside tinyshake's data folder")
    assert snapshot(home) == before


def test_resume_refuses_a_corpus_with_the_same_characters_but_other_text(cached, home, tmp_path):
    import_tiny_corpus(tmp_path)
    tiny_run("t", "--corpus", "tiny", "--max-iters", "3", "--eval-interval", "2")
    other = tmp_path / "other.txt"  # the same characters in another order: the vocabulary alone cannot tell
    other.write_text((tmp_path / "tiny.txt").read_text(encoding="utf-8")[::-1], encoding="utf-8")
    assert CliRunner().invoke(app, ["fetch", "--from", str(other), "--corpus", "other"]).exit_code == 0
    before = snapshot(home / "runs")
    assert_one_line_error(train_cli("--run", "t", "--resume", "--corpus", "other", "--max-iters", "5", code=2),
                          "was trained on corpus 'tiny'", "--resume needs the run's own corpus")
    assert snapshot(home / "runs") == before


def test_resume_of_a_finished_run_says_it_is_complete_and_exits_0(cached, home):
    tiny_run("done", "--max-iters", "4", "--eval-interval", "2")
    before = snapshot(home)
    result = train_cli("--run", "done", "--resume")
    assert result.stdout == ""
    assert "run 'done' is complete: it has trained 4 of 4 steps" in result.stderr and "--max-iters 8" in result.stderr
    assert snapshot(home) == before


def test_resume_of_a_run_its_time_budget_ended_says_it_is_complete_and_a_larger_budget_goes_on(cached, home):
    tiny_run("timed", "--max-iters", "100000", "--eval-interval", "100000", "--time-budget", "0.2")
    stored = on_disk("timed")
    assert stored["train_seconds"] >= 0.2 and stored["step"] < 100000
    before = snapshot(home)
    result = train_cli("--run", "timed", "--resume")
    assert result.stdout == "" and snapshot(home) == before  # not one more step
    assert (f"run 'timed' is complete: it has trained {stored['train_seconds']:.1f} s, its time budget being 0.2 s, "
            f"and stopped at step {stored['step']}" in result.stderr)
    more = re.search(r"--time-budget (\S+)\)", result.stderr)
    assert more and float(more[1]) > stored["train_seconds"]  # the hint goes on, whatever the budget was
    train_cli("--run", "timed", "--resume", "--time-budget", more[1], "--sample-chars", "0")
    assert record.read_record("timed").step > stored["step"]


# -- G: re-running a stage -----------------------------------------------------------------------------------


def test_rerunning_a_stage_takes_the_next_free_name_but_an_explicit_name_is_refused(cached, home):
    args = [*TINY_ARGS, "--max-iters", "2", "--eval-interval", "2", "--sample-chars", "0"]
    train_cli(*args)
    second = train_cli(*args)
    third = train_cli(*args)
    assert "run 'mini' exists, so this run is 'mini-2'" in second.stderr
    assert "this run is 'mini-3'" in third.stderr
    assert eval_lines(second.stdout) == second.stdout.splitlines()  # the notice stays off stdout
    assert {checkpoint.read_record(n).name for n in ("mini", "mini-2", "mini-3")} == {"mini", "mini-2", "mini-3"}
    before = snapshot(home)
    assert_one_line_error(train_cli(*args, "--run", "mini-2", code=2), "run 'mini-2' already exists")
    assert snapshot(home) == before


# -- C: best and final --------------------------------------------------------------------------------------------


def test_a_run_evaluates_its_final_weights_and_reports_them(cached, tmp_path):
    metrics = tmp_path / "m.jsonl"
    result = train_cli("--model", "head", "--device", "cpu", "--max-iters", "40", "--eval-interval", "30",
                       "--eval-iters", "2", "--sample-chars", "0", "--metrics", str(metrics))
    assert [int(line.split()[1].rstrip(":")) for line in eval_lines(result.stdout)] == [0, 30]
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 30, 40] and rows[-1]["final"] is True
    record = checkpoint.read_record("head")
    assert record.final.step == 40 and record.final.val == rows[-1]["val"]
    vals = {r["step"]: r["val"] for r in rows}
    assert record.best_step == min(vals, key=vals.get) and record.best_val == min(vals.values())
    assert "best" in record.files


# -- A: one plan -------------------------------------------------------------------------------------------------


def test_resume_resolves_the_device_once_and_plans_from_one_record(cached, monkeypatch):
    tiny_run("once", "--max-iters", "2", "--eval-interval", "2")
    calls = {"resolve": 0, "read_record": 0}
    real_resolve, real_read = device.resolve, checkpoint.read_record

    def counting_resolve(*args, **kwargs):
        calls["resolve"] += 1
        return real_resolve(*args, **kwargs)

    def counting_read(*args, **kwargs):
        calls["read_record"] += 1
        return real_read(*args, **kwargs)

    monkeypatch.setattr(planning, "resolve", counting_resolve)
    monkeypatch.setattr(device, "resolve", counting_resolve)
    monkeypatch.setattr(checkpoint, "read_record", counting_read)
    loads = []
    real_load = checkpoint.load
    monkeypatch.setattr(checkpoint, "load", lambda *a, **k: loads.append(k.get("weights")) or real_load(*a, **k))
    plan = planning.make_plan(run="once", resume=True, max_iters=4)
    assert calls == {"resolve": 1, "read_record": 1} and plan.start_step == 2 and plan.corpus == "tinyshakespeare"
    train_cli("--run", "once", "--resume", "--max-iters", "4", "--sample-chars", "0")
    assert calls["resolve"] == 2  # this test's plan, and the command's one
    assert loads == ["last"]  # --resume goes on from the latest state, loaded once under the lock


def test_the_bar_of_a_time_budget_ends_full_even_when_the_last_step_comes_quickly():
    import torch
    from rich.console import Console

    from tinyshake.cli._train_views import RichView
    from tinyshake.training.train import Stepped

    config = dataclasses.replace(planning.make_config("head", 65), time_budget=5.0)
    view = RichView(Console(file=open(os.devnull, "w")), config)
    for step, trained in ((1, 4.9), (2, 4.95), (3, 5.01)):  # well within the bar's quarter-second rhythm
        view.stepped(Stepped(step, torch.tensor(2.0), trained, trained))
    task = view.progress.tasks[0]
    assert task.total == 5.0 and task.completed == 5.0
