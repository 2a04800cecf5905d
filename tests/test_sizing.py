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


def test_an_unmeasured_speed_counts_as_the_reference_and_a_gpu_takes_the_longest_budgets_stage():
    assert sizing.choose(sizing.FRONTIER[0].seconds, 0.0).point == sizing.FRONTIER[0]
    on_gpu = sizing.choose(sizing.FRONTIER[0].seconds, None)
    assert on_gpu.point == sizing.FRONTIER[-1] and "GPU" in on_gpu.describe()


def test_the_description_says_what_was_chosen_and_why():
    point = sizing.FRONTIER[-1]
    text = sizing.choose(point.seconds, REFERENCE).describe()
    stage = stages.get(point.stage)
    assert f"stage {point.stage} ({stage.model['n_embd']} wide, {stage.model['n_layer']} layers" in text
    assert f"learned most in {point.seconds:g} s on {sizing.REFERENCE_MACHINE}" in text and "x its speed" not in text
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


def test_the_measured_modern_step_is_cached_with_the_routes():
    routes = tuning.choose(1)
    assert routes.modern_step > 0
    assert tuning.cached(1) is None or tuning.cached(1).modern_step == routes.modern_step
