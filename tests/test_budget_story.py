"""A time budget's run tells its story (#21): evaluations at each tenth of the budget, a header that names it,
and ``runs`` / ``runs show`` calling it complete."""

from __future__ import annotations

from typer.testing import CliRunner

from tinyshake import corpus
from tinyshake.cli import app
from tinyshake.training import plan as planning
from tinyshake.training import stages
from tinyshake.training import train as core
from tinyshake.training.run_state import Clocks


def test_a_budget_is_due_an_evaluation_at_each_tenth_once():
    clocks = Clocks(before=0.0, trained=0.0, budget=10.0, max_iters=1000)
    due = []
    for tick in range(1, 101):  # 0.1 s of training a step
        clocks.trained = tick / 10
        due.append(clocks.budget_mark())
    assert [i + 1 for i, d in enumerate(due) if d] == [10, 20, 30, 40, 50, 60, 70, 80, 90]  # the end is the budget's


def test_without_a_budget_no_evaluation_is_added():
    clocks = Clocks(before=0.0, trained=0.0, budget=None, max_iters=1000)
    for tick in range(1, 50):
        clocks.trained = float(tick)
        assert not clocks.budget_mark()


def test_a_resumed_budget_goes_on_from_the_tenths_it_had():
    clocks = Clocks(before=0.0, trained=4.5, budget=10.0, max_iters=1000)
    clocks.trained = 4.9
    assert not clocks.budget_mark()
    clocks.trained = 5.0
    assert clocks.budget_mark()


def test_runs_call_a_budget_run_complete(cached):
    trained = CliRunner().invoke(app, ["train", "--model", "head", "--run", "timed", "--time-budget", "0.05",
                                       "--max-iters", "100000", "--eval-iters", "1", "--sample-chars", "0",
                                       "--device", "cpu"])
    assert trained.exit_code == 0, trained.output
    assert "time budget 0.05 s of training" in trained.stderr  # the header names it
    listed = CliRunner().invoke(app, ["runs"]).stdout
    row = next(line for line in listed.splitlines() if line.startswith("timed "))
    assert " in 0.05 s " in row and "/100000" not in row
    shown = CliRunner().invoke(app, ["runs", "show", "timed"]).stdout
    assert "complete, ended by its time budget (0.05 s of training)" in shown


def test_a_budget_run_stopped_early_shows_its_seconds_of_the_budget_not_a_step_count_it_never_asked_for(cached):
    """Without --max-iters a budget run's step count is a bound no run reaches: ``runs`` shows the seconds instead."""
    plan = planning.make_plan("head", run="early", device="cpu", time_budget=30.0, eval_iters=1)
    assert plan.config.max_iters == stages.UNTIL_BUDGET
    events = list(core.train(plan, corpus.load(plan.corpus), should_stop=lambda: True))  # one step, then stop
    assert isinstance(events[-1], core.Interrupted)
    listed = CliRunner().invoke(app, ["runs"]).stdout
    row = next(line for line in listed.splitlines() if line.startswith("early "))
    assert " 1 in 0/30 s " in row and str(stages.UNTIL_BUDGET) not in listed
    shown = CliRunner().invoke(app, ["runs", "show", "early"]).stdout
    assert "1 in 0/30 s" in shown and str(stages.UNTIL_BUDGET) not in shown
