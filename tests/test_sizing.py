"""``train --time-budget`` without ``--model`` sizes the model: the measured frontier's stage, scaled by this machine."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tinyshake.cli import app
from tinyshake.store import record
from tinyshake.training import sizing, stages, tuning
from tinyshake.training.plan import make_plan

REFERENCE = sizing.REFERENCE_STEP


def test_the_frontier_names_modern_recipe_stages_in_order_of_budget():
    seconds = [point.seconds for point in sizing.FRONTIER]
    assert seconds == sorted(seconds) and len(set(seconds)) == len(seconds)
    for point in sizing.FRONTIER:
        stage = stages.get(point.stage)
        assert stage.hyper["optimizer"] == "muon" and stage.model["pos"] == "rope", point.stage


@pytest.mark.parametrize("point", sizing.FRONTIER, ids=lambda p: f"{p.seconds:g}s")
def test_on_the_reference_machine_each_measured_budget_takes_its_winner(point):
    assert sizing.choose(point.seconds, REFERENCE).point == point


def test_a_budget_takes_the_nearest_measured_budget_on_a_log_scale():
    first, second = sizing.FRONTIER[0], sizing.FRONTIER[1]
    between = (first.seconds * second.seconds) ** 0.5
    assert sizing.choose(between * 0.95, REFERENCE).point == first
    assert sizing.choose(between * 1.05, REFERENCE).point == second
    assert sizing.choose(0.5, REFERENCE).point == first
    assert sizing.choose(86_400, REFERENCE).point == sizing.FRONTIER[-1]


def test_a_faster_machine_takes_the_model_of_a_longer_budget():
    """Twice the reference's speed: its half budget buys what the reference's whole one does."""
    for point in sizing.FRONTIER:
        assert sizing.choose(point.seconds / 2, REFERENCE / 2).point == point
        assert sizing.choose(point.seconds * 3, REFERENCE * 3).point == point


def test_budgets_at_the_ends_of_what_a_float_holds_still_choose():
    assert sizing.choose(1e308, REFERENCE / 4).point == sizing.FRONTIER[-1]
    assert sizing.choose(5e-324, REFERENCE * 4).point == sizing.FRONTIER[0]
    assert "1e+300 s here train like 1.8e+300 s there" in sizing.choose(1e300, REFERENCE / 1.8).describe()
    beyond = sizing.choose(1.7e308, REFERENCE / 1.2).describe()  # here x speed is past a float's range
    assert "this machine runs at 1.20x its speed;" in beyond and "inf" not in beyond


def test_a_gpu_takes_the_longest_budgets_stage():
    on_gpu = sizing.choose(sizing.FRONTIER[0].seconds, None)
    assert on_gpu.point == sizing.FRONTIER[-1] and "GPU" in on_gpu.describe()


def test_the_description_says_what_was_chosen_and_why():
    point = sizing.FRONTIER[-1]
    text = sizing.choose(point.seconds, REFERENCE).describe()
    stage = stages.get(point.stage)
    assert f"stage {point.stage} ({stage.model['n_embd']} wide, {stage.model['n_layer']} layers" in text
    assert f"learned most in {point.seconds:g} s (full val {point.val:.2f}) on {sizing.REFERENCE_MACHINE}" in text
    assert "x its speed" not in text
    faster = sizing.choose(point.seconds / 2, REFERENCE / 2).describe()
    assert f"runs at 2.00x its speed, so {point.seconds / 2:g} s here train like {point.seconds:.0f} s there" in faster


@pytest.fixture
def machine_speed(monkeypatch):
    """This machine measured at the reference's speed, so tests choose as the reference does."""
    routes = tuning.Routes(onednn=False, small_attention=64, modern_step=REFERENCE)
    monkeypatch.setattr(tuning, "decide", lambda threads, retune=False: routes)


def test_a_plan_with_a_budget_and_no_stage_takes_the_sized_stage(machine_speed):
    point = sizing.FRONTIER[-1]
    plan = make_plan(None, time_budget=point.seconds, device="cpu")
    assert plan.config.stage == plan.run == point.stage and plan.sized is not None
    assert plan.sized.describe() in plan.notices


def test_an_explicit_stage_keeps_its_shape_and_no_budget_keeps_the_default(machine_speed):
    plan = make_plan("modern", time_budget=sizing.FRONTIER[0].seconds, device="cpu")
    assert plan.config.stage == "modern" and plan.config.model.n_embd == 128 and plan.sized is None
    assert make_plan(None, device="cpu").config.stage == stages.DEFAULT_STAGE


def test_a_bad_budget_is_refused_before_anything_is_measured(monkeypatch):
    monkeypatch.setattr(tuning, "decide", lambda *a, **k: pytest.fail("measured"))
    result = CliRunner().invoke(app, ["train", "--time-budget", "-3"])
    assert result.exit_code == 2 and "--time-budget must be a positive finite number" in result.output


def test_train_says_in_its_header_which_stage_the_budget_chose(cached, machine_speed):
    point = sizing.FRONTIER[0]
    result = CliRunner().invoke(app, ["train", "--time-budget", str(point.seconds), "--max-iters", "2",
                                      "--eval-iters", "1", "--sample-chars", "0"])
    assert result.exit_code == 0, result.output
    assert f"note: --time-budget {point.seconds:g} without --model: stage {point.stage}" in result.output
    assert f"Training run {point.stage}: {point.stage} (" in result.output


def test_a_budget_without_max_iters_trains_until_the_budget_and_the_header_shows_no_step_count(cached):
    result = CliRunner().invoke(app, ["train", "--model", "bigram", "--time-budget", "0.3", "--eval-iters", "1",
                                      "--sample-chars", "0"])
    assert result.exit_code == 0, result.output
    assert "time budget 0.3 s of training" in result.output and "steps 3000" not in result.output
    stored = record.read_record("bigram")
    assert stored.step > 0 and stored.max_iters == stages.UNTIL_BUDGET and stored.train_seconds >= 0.3


def test_under_torchrun_a_budget_without_a_stage_is_refused_before_anything_is_measured(monkeypatch):
    monkeypatch.setattr(tuning, "decide", lambda *a, **k: pytest.fail("measured"))
    result = CliRunner().invoke(app, ["train", "--time-budget", "60"], env={"RANK": "0", "WORLD_SIZE": "2"})
    assert result.exit_code == 2 and "under torchrun, give --model with --time-budget" in result.output


def test_bad_flags_beside_a_budget_are_refused_before_the_speed_is_measured(monkeypatch):
    monkeypatch.setattr(tuning, "decide", lambda *a, **k: pytest.fail("measured"))
    result = CliRunner().invoke(app, ["train", "--time-budget", "60", "--lr", "-1"])
    assert result.exit_code == 2 and "--lr" in result.output


def test_resume_with_a_budget_and_no_stage_goes_on_with_the_sized_run(cached, machine_speed):
    point = sizing.FRONTIER[0]
    args = ["train", "--time-budget", "0.5", "--eval-iters", "1", "--sample-chars", "0"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    trained = record.read_record(point.stage).train_seconds
    again = CliRunner().invoke(app, [*args[:1], "--time-budget", "1", *args[3:], "--resume"])
    assert again.exit_code == 0, again.output
    assert record.read_record(point.stage).train_seconds > trained and not record.exists(f"{point.stage}-2")
