"""`tinyshake ladder`: each stage an ordinary run, planned and trained as `train` does; reuse, resume, overwrite."""

from __future__ import annotations

import math

import os
import pty
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import on_disk, subprocess_env
from test_train import TINYSHAKE, assert_one_line_error, snapshot
from tinyshake import checkpoint, corpus, ladder
from tinyshake.store import record
from tinyshake.training import stages
from tinyshake.cli import app
from tinyshake.training.plan import make_plan

TINY = dict(max_iters=20, eval_interval=10, eval_iters=2, device="cpu")  # the lecture's small stages, briefly
TINY_ARGS = ["--max-iters", "20", "--eval-interval", "10", "--eval-iters", "2", "--device", "cpu"]
TWO = ["bigram", "head"]
PLAIN_LINE = re.compile(r"^(\S+): ([\d,]+) parameters, val (\d\.\d{4})(?: on \d+ batches)? "
                        r"\(full split (\d\.\d{4}), (\d\.\d{4}) bits/char\), lecture (\S+), "
                        r"[\d.]+ s(, reused)? \| (.*)$")


def ladder_cli(*args: str, code: int = 0):
    result = CliRunner().invoke(app, ["ladder", *args])
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result


def plain_lines(stdout: str) -> list[re.Match]:
    lines = stdout.splitlines()
    matches = [PLAIN_LINE.match(line) for line in lines]
    assert all(matches), lines
    return matches  # type: ignore[return-value]


def run_tour(names, prefix="ladder", stop_at=lambda event: False):
    """The core tour, in-process, asked to stop (as Ctrl-C asks) once ``stop_at`` holds for an event."""
    events = []
    plans = ladder.plan_tour(names, prefix, **TINY)
    for event in ladder.tour(plans, corpus.load(corpus.DEFAULT_CORPUS), lambda: any(map(stop_at, events))):
        events.append(event)
    return events


def step_of(stage: str, step: int):
    """``stop_at`` for the moment ``stage`` has trained ``step`` steps."""
    from tinyshake.training import train as training

    return lambda e: (isinstance(e, ladder.StageProgress) and e.stage == stage and isinstance(e.event, training.Stepped)
                      and e.event.step == step)


def of(kind, events):
    return [e for e in events if isinstance(e, kind)]


# -- planning: one plan per stage, as train makes it ----------------------------------------------


def test_the_default_tour_is_bigram_through_layernorm_then_mini_each_a_ladder_run(home):
    plans = ladder.plan_tour([])
    assert [p.stage for p in plans] == ["bigram", "head", "multihead", "ffwd", "blocks", "residual", "layernorm",
                                        "mini"]
    assert [p.run for p in plans] == [f"ladder-{p.stage}" for p in plans]
    assert {p.action for p in plans} == {"train"}
    for p in plans:  # the lecture's settings: exactly what `train --model STAGE` plans
        assert p.plan.config == make_plan(p.stage, run=p.run).config


def test_prefix_names_the_runs_and_gpt_only_when_named(home):
    plans = ladder.plan_tour(["gpt", "bigram"], prefix="tour")
    assert [(p.stage, p.run) for p in plans] == [("gpt", "tour-gpt"), ("bigram", "tour-bigram")]


def test_quick_takes_a_tenth_of_the_steps_and_of_each_evaluation(home):
    for p in ladder.plan_tour(["bigram", "mini"], quick=True):
        preset = stages.get(p.stage)
        assert (p.plan.config.max_iters, p.plan.config.eval_interval, p.plan.config.eval_iters) == (
            preset.max_iters // 10, preset.eval_interval // 10, 20)


def test_the_gpt_stages_plans_get_trains_cpu_warning(home, capsys):
    from tinyshake.cli._confirm import confirm_slow_run

    for stage in ladder.plan_tour(["gpt", "gpt-video", "mini"], device="cpu"):
        confirm_slow_run(stage.plan, yes=False)  # stdin is no terminal here: it warns and does not ask
        warned = capsys.readouterr().err
        assert warned.startswith("Warning: the gpt stage is slow on a CPU") == (stage.stage != "mini"), stage.stage


@pytest.mark.parametrize("names, words", [(["nope"], "unknown stage 'nope'"), (["head", "head"], "named twice")])
def test_bad_stage_lists_are_one_line_errors(home, names, words):
    assert_one_line_error(ladder_cli(*names, code=2), words)


# -- the tour: runs other commands read, reused, resumed, retrained -------------------------------


def test_piped_tour_prints_one_plain_line_per_stage_and_leaves_ordinary_runs(cached, home):
    result = ladder_cli(*TWO, *TINY_ARGS, "--prefix", "p")
    assert "\x1b" not in result.stdout and "\x1b" not in result.stderr
    lines = plain_lines(result.stdout)
    assert [m[1] for m in lines] == TWO
    assert [m[6] for m in lines] == ["2.49", "2.40"]  # the lecture's val beside each
    assert all(float(m[5]) == pytest.approx(float(m[4]) / math.log(2), abs=2e-4) for m in lines)  # characters
    assert result.stderr.splitlines() == ["bigram: training run p-bigram", "head: training run p-head"]
    for stage, line in zip(TWO, lines):
        stored = on_disk(f"p-{stage}")
        assert (stored["stage"], stored["step"]) == (stage, 20)
        assert line[2] == f"{stored['parameters']:,}"
        assert float(line[3]) == pytest.approx(stored["final"]["val"], abs=5e-5)  # the final weights' estimate
    runs = CliRunner().invoke(app, ["runs"])
    assert "p-bigram" in runs.stdout and "p-head" in runs.stdout
    assert not checkpoint.exists("ladder-bigram")


def test_a_finished_stage_is_reused_and_overwrite_trains_it_again(cached, home):
    first = plain_lines(ladder_cli(*TWO, *TINY_ARGS).stdout)
    before = snapshot(home / "runs")
    again = ladder_cli(*TWO, *TINY_ARGS)
    assert snapshot(home / "runs") == before  # nothing trained, nothing written
    assert again.stderr.splitlines() == ["bigram: reusing run ladder-bigram", "head: reusing run ladder-head"]
    reused = plain_lines(again.stdout)
    assert all(m[7] == ", reused" for m in reused)
    assert [(m[3], m[4], m[8]) for m in reused] == [(m[3], m[4], m[8]) for m in first]  # same val, full val, sample
    created = record.read_record("ladder-head").created
    fresh = ladder_cli("head", *TINY_ARGS, "--overwrite")
    assert fresh.stderr.splitlines() == ["head: training run ladder-head"]
    assert plain_lines(fresh.stdout)[0][7] is None
    assert record.read_record("ladder-head").created != created


def test_a_stage_trained_with_other_settings_is_refused_before_anything_trains(cached, home):
    ladder_cli("head", *TINY_ARGS)
    before = snapshot(home / "runs")
    result = ladder_cli("bigram", "head", *TINY_ARGS[:-4], "--eval-iters", "3", "--device", "cpu", code=2)
    assert_one_line_error(result, "run 'ladder-head' was trained with other settings", "eval_iters 2, not 3",
                          "--overwrite", "--prefix")
    assert snapshot(home / "runs") == before and not checkpoint.exists("ladder-bigram")


def test_a_run_of_the_stage_trained_by_train_with_other_settings_is_refused(cached, home):
    made = CliRunner().invoke(app, ["train", "--model", "head", "--run", "ladder-head", "--batch-size", "4",
                                    *TINY_ARGS, "--sample-chars", "0"])
    assert made.exit_code == 0, made.output
    assert_one_line_error(ladder_cli("head", *TINY_ARGS, code=2), "batch_size 4, not 32")


def test_an_interrupted_stage_keeps_its_checkpoint_and_resumes_to_the_uninterrupted_result(cached, home):
    stopped = run_tour(TWO, stop_at=step_of("head", 7))
    end = stopped[-1]
    assert isinstance(end, ladder.StageInterrupted)
    assert (end.stage, end.run, end.step, end.saved_step) == ("head", "ladder-head", 7, 7)
    assert record.read_record("ladder-head").step == 7
    assert [r.stage for r in of(ladder.StageResult, stopped)] == ["bigram"]
    assert [p.action for p in ladder.plan_tour(TWO, **TINY)] == ["reuse", "resume"]
    resumed = run_tour(TWO)
    assert [(s.stage, s.action) for s in of(ladder.StageStarted, resumed)] == [("bigram", "reuse"),
                                                                              ("head", "resume")]
    straight = run_tour(["head"], prefix="straight")
    def losses(run):
        stored = on_disk(run)
        return [(m["step"], m["train"], m["val"]) for m in stored["metrics"] + [stored["final"]]]

    assert losses("ladder-head") == losses("straight-head")  # resumed exactly: same random stream, same state
    assert of(ladder.StageResult, resumed)[-1].full_val == pytest.approx(of(ladder.StageResult, straight)[0].full_val)


def test_a_stop_between_stages_starts_nothing_more(cached, home):
    events = run_tour(TWO, stop_at=lambda e: isinstance(e, ladder.StageResult))  # as bigram's result arrives
    assert [r.stage for r in of(ladder.StageResult, events)] == ["bigram"]
    end = events[-1]
    assert isinstance(end, ladder.StageInterrupted) and (end.stage, end.step, end.saved_step) == ("head", 0, None)
    assert not checkpoint.exists("ladder-head")


def on_terminal(home: Path, *args: str, **env: str) -> tuple[int, str]:
    """Run the installed entry point on a pseudo-terminal 200 columns wide; its exit code and all it wrote."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: never back into pytest
        try:
            os.execve(TINYSHAKE, [TINYSHAKE, *args],
                      subprocess_env(home, COLUMNS="200", LINES="40", TERM="xterm-256color", **env))
        finally:
            os._exit(127)
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # the child has gone: Linux reports EIO
            break
        if not data:
            break
        chunks.append(data)
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")


# -- signals and exit codes, through the installed entry point ------------------------------------

LONG = ["--max-iters", "100000000", "--eval-interval", "50000000", "--eval-iters", "1", "--device", "cpu"]


def _stop_after_a_while(home: Path) -> tuple[int, str, str]:
    """Start a long bigram tour, Ctrl-C it once it is training, and return its exit code, stdout and stderr."""
    proc = subprocess.Popen([TINYSHAKE, "ladder", "bigram", *LONG], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=subprocess_env(home, OMP_NUM_THREADS="1"))
    try:
        said = proc.stderr.readline()
        while not checkpoint.exists("ladder-bigram"):  # its step-0 checkpoint: training is under way
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return proc.returncode, out, said + err


def test_ctrl_c_stops_the_stage_with_its_checkpoint_and_the_same_command_resumes_it(cached, home):
    code, out, err = _stop_after_a_while(home)
    assert code == 130, err
    assert err.startswith("bigram: training run ladder-bigram\nCtrl-C: stopping after this step")
    step = record.read_record("ladder-bigram").step
    assert step > 0
    assert out == (f"Stopped bigram at step {step}; its checkpoint of step {step} is kept in run ladder-bigram. "
                   "Run the same command again to go on.\n")
    code, out, err = _stop_after_a_while(home)
    assert code == 130 and err.startswith("bigram: resuming run ladder-bigram\n"), err
    assert record.read_record("ladder-bigram").step > step
    assert "Traceback" not in err


def test_on_a_terminal_the_final_table_shows_the_full_split_val_and_each_sample(cached, home):
    piped = plain_lines(ladder_cli(*TWO, *TINY_ARGS).stdout)  # trains; the terminal run below reuses
    code, screen = on_terminal(home, "ladder", *TWO, *TINY_ARGS)
    assert code == 0, screen
    assert "\x1b[" in screen  # drawn by Rich
    table = screen[screen.index("The lecture's ladder"):]
    plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", table)
    for header in ("what it adds", "estimate", "full val", "bits/char", "lecture", "sample (first line)"):
        assert header in plain
    lines = plain.splitlines()
    for match in piped:
        at = next(i for i, line in enumerate(lines) if line.startswith(f"│ {match[1]} "))
        row = lines[at]
        assert match[4] in row and match[8][:10] in row and " ".join(stages.get(match[1]).adds.split()[:2]) in row
        assert match[5] in lines[at + 1]  # bits per character, under the full split's val
    assert "tinyshake plot 'ladder-*'" in plain


@pytest.mark.parametrize("width, params, seconds", [(80, 209_729, 231.6), (100, 10_788_929, 12345.6),
                                                    (140, 10_788_929, 12345.6)])
def test_the_final_table_fits_the_terminal_with_every_number_and_the_samples(width, params, seconds):
    from rich.console import Console

    from tinyshake.cli.ladder import results_table

    results = [ladder.StageResult(name, f"ladder-{name}", stages.get(name).adds, params, 1.8234, 1.8301, 2.6403,
                                  stages.get(name).published_val, seconds, "ROMEO: what say you to the king", False)
               for name in ("bigram", "layernorm", "mini")]
    console = Console(width=width, record=True, file=open(os.devnull, "w"))
    console.print(results_table(results, final=True, console=console))
    text = console.export_text()
    # Rich crops what does not fit, so whole numbers and the last column's words show that nothing was cut
    assert text.count(f"{params:,}") == 3 and text.count(f"{seconds:.1f}s") == 3 and text.count("1.8301") == 3
    assert text.count("2.6403") == 3  # bits per character, beside the full split's val
    assert "line)" in text and text.count("king") == 3
    assert ("logits" in text) == (width >= 100)  # what each adds, where there is room


@pytest.mark.parametrize("action, full", [("reuse", True), ("train", False), ("resume", False)])
def test_a_reused_stage_shows_a_full_bar_not_zero_steps(action, full):
    from rich.console import Console

    from tinyshake.cli.ladder import LiveTour
    from tinyshake.training.plan import make_config

    view = LiveTour(Console(file=open(os.devnull, "w")))
    config = make_config("bigram", 65)
    view.started(ladder.StageStarted(0, 2, "bigram", "ladder-bigram", action, config))
    task = view.progress.tasks[0]
    assert task.total == config.max_iters and (task.completed == config.max_iters) == full
