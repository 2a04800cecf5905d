"""Routes measured once per machine key, cached, reused, remeasured when the key changes or the file is damaged."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from tinyshake import bench
from tinyshake.models import onednn, speed
from tinyshake.training import sizing, threads, tuning
from tinyshake.cli import app


@pytest.fixture
def counted(monkeypatch):
    """measure() replaced by a counter (a real one runs below, at tiny shapes); returns the threads of each call."""
    calls = []

    def fake(threads: int) -> tuning.Routes:
        calls.append(threads)
        return tuning.Routes(onednn=False, small_attention=64, linear_margin={"mini": 0.8},
                             attention_margin={"64": 1.2}, measured="now", modern_step=0.12)
    monkeypatch.setattr(tuning, "measure", fake)
    tuning._measured.clear()
    yield calls
    tuning._measured.clear()  # the fake routes stay in this test


def test_the_cache_is_written_and_reused(counted):
    first = tuning.choose(1)
    assert first.source == "measured now" and tuning.cache_file().is_file()
    again = tuning.choose(1)
    assert again.source == "cached" and again.small_attention == 64 and len(counted) == 1


def test_another_thread_count_or_retune_measures_again(counted):
    tuning.choose(1)
    tuning.choose(2)
    tuning._measured.clear()
    tuning.choose(1, retune=True)
    assert len(counted) == 3
    assert len(json.loads(tuning.cache_file().read_text())["entries"]) == 2


@pytest.mark.parametrize("damage", ["{not json", '{"version": 1, "entries": {"x": 1}}', '{"version": 1, "entries": []}'])
def test_a_damaged_cache_is_measured_again(counted, damage):
    tuning.cache_file().parent.mkdir(parents=True)
    tuning.cache_file().write_text(damage)
    assert tuning.choose(1).source == "measured now"
    assert json.loads(tuning.cache_file().read_text())["version"] == tuning.CACHE_VERSION


GOOD_ENTRY = {"onednn": False, "small_attention": 64, "linear_margin": {"mini": 0.8},
              "attention_margin": {"64": 1.2}, "measured": "then", "crowded": 0.0, "modern_step": 0.1}


@pytest.mark.parametrize("field, value", [
    ("modern_step", "Infinity"), ("modern_step", "NaN"), ("modern_step", "5e-324"), ("modern_step", "1e9"),
    ("modern_step", "true"), ("linear_margin", '{"mini": "x"}'), ("attention_margin", '{"8": null}'),
    ("small_attention", "true"), ("crowded", '"busy"'), (None, '"fast"'), (None, "[1, 2]")])
def test_an_entry_with_a_field_no_measurement_writes_is_measured_again_and_info_still_answers(counted, field, value):
    """A hand-edited or damaged entry: json reads Infinity and NaN, and an entry may be any value at all."""
    entry = "{" + ", ".join(f'"{k}": {value if k == field else json.dumps(v)}' for k, v in GOOD_ENTRY.items()) + "}"
    key = tuning.machine_key(threads.plan().threads)
    tuning.cache_file().parent.mkdir(parents=True)
    tuning.cache_file().write_text(f'{{"version": {tuning.CACHE_VERSION}, "entries": {{{json.dumps(key)}: '
                                   f'{entry if field else value}}}}}')
    shown = CliRunner().invoke(app, ["info"])
    assert shown.exit_code == 0 and "not measured yet" in shown.output, shown.output
    assert tuning.cached(threads.plan().threads) is None
    assert tuning.choose(threads.plan().threads).modern_step == 0.12 and len(counted) == 1


def test_an_entry_as_measure_writes_it_is_used():
    """The check above refuses only damage: the good entry it damages is taken as it is."""
    tuning.cache_file().parent.mkdir(parents=True)
    tuning.cache_file().write_text(json.dumps({"version": tuning.CACHE_VERSION,
                                               "entries": {tuning.machine_key(1): GOOD_ENTRY}}))
    assert tuning.cached(1) is not None and tuning.cached(1).modern_step == 0.1


def test_a_measurement_crowded_by_other_programs_is_used_but_not_cached(monkeypatch):
    """A ratio timed while another program held the measurement's cores is this run's, not the machine's for good."""
    calls = []

    def crowded(threads: int) -> tuning.Routes:
        calls.append(threads)
        return tuning.Routes(onednn=False, small_attention=0, attention_margin={"8": 0.36}, measured="now",
                             crowded=1.4, modern_step=0.12)
    monkeypatch.setattr(tuning, "measure", crowded)
    tuning._measured.clear()
    routes = tuning.choose(1)
    assert routes.small_attention == 0 and "other programs took 1.4 of its cores; not cached" in routes.source
    assert tuning.cached(1) is None
    tuning._measured.clear()  # the next process
    tuning.choose(1)
    assert len(calls) == 2


def test_measure_counts_only_the_load_on_the_cores_it_uses(monkeypatch):
    """On 2 CPUs, one thread measuring while others use a whole core is undisturbed; while they use both, it is not."""
    monkeypatch.setattr(tuning, "measure_linear", lambda generator: {})
    monkeypatch.setattr(tuning, "measure_attention", lambda generator: {8: 1.5})
    monkeypatch.setattr(tuning, "measure_modern_step", lambda: 0.25)
    monkeypatch.setattr(tuning, "allowed_cpus", lambda: [0, 1])
    for others, threads_used, trusted in ((1.0, 1, True), (2.0, 1, False), (0.2, 2, True), (0.9, 2, False)):
        ran = []
        monkeypatch.setattr(tuning, "others_during", lambda cpus, run: (run(), ran.append(cpus), others)[-1])
        routes = tuning.measure(threads_used)
        assert ran == [[0, 1]] * 2 and routes.small_attention == 8 and routes.modern_step == 0.25
        assert routes.trusted is trusted, (others, threads_used)


def test_the_environment_forces_the_linear_route(counted, monkeypatch):
    monkeypatch.setenv(onednn.ENV, "1")
    routes = tuning.forced(tuning.choose(1))
    assert routes.onednn == onednn.available() and "TINYSHAKE_ONEDNN=1" in routes.source


def test_apply_sets_the_models_routes(monkeypatch):
    monkeypatch.setattr(speed, "SMALL_ATTENTION", speed.SMALL_ATTENTION)
    monkeypatch.setattr(onednn, "_enabled", onednn._enabled)
    tuning.apply(tuning.Routes(onednn=False, small_attention=32))
    assert speed.SMALL_ATTENTION == 32 and not onednn.enabled()


def test_small_attention_is_the_longest_context_that_won_throughout():
    assert tuning.small_attention({8: 1.5, 32: 1.2, 64: 0.9, 128: 1.1}) == 32
    assert tuning.small_attention({8: 0.9, 32: 1.2}) == 0


def test_the_margin_is_the_median_of_interleaved_ratios_so_one_burst_does_not_decide(monkeypatch):
    clock = [0.0]
    other_costs = iter([0.0, 2.0, 2.0, 30.0, 2.0, 2.0])  # warm-up, then one turn hit by a burst of load
    monkeypatch.setattr(tuning.time, "perf_counter", lambda: clock[0])

    def candidate() -> None:
        clock[0] += 1.0

    def other() -> None:
        clock[0] += next(other_costs)
    monkeypatch.setattr(tuning, "TRIAL_BUDGET", 1e9)
    assert tuning.margin(candidate, other) == 2.0


def test_a_real_measurement_on_given_threads_leaves_the_count_as_it_was(monkeypatch):
    monkeypatch.setattr(tuning, "LINEAR_SHAPES", {"mini": [(256, 64, 256)]})
    monkeypatch.setattr(tuning, "ATTENTION_CONTEXTS", (8, 16))
    monkeypatch.setattr(tuning, "ATTENTION_TOKENS", 64)
    routes = tuning.measure(1)
    assert torch.get_num_threads() == 1
    assert set(routes.attention_margin) == {"8", "16"} and routes.small_attention in (0, 8, 16)
    assert set(routes.linear_margin) == ({"mini"} if onednn.available() else set())
    assert routes.onednn == (bool(routes.linear_margin) and routes.linear_margin["mini"] > 1)


def test_info_shows_the_routes_only_once_measured_and_never_measures(counted):
    threads_now = threads.plan().threads
    before = CliRunner().invoke(app, ["info"])
    assert before.exit_code == 0 and "not measured yet" in before.output and "bench --retune" in before.output
    assert counted == []
    tuning.choose(threads_now)
    after = CliRunner().invoke(app, ["info"]).output
    assert "float32 layers through the default BLAS (cached; the BLAS's time over oneDNN's: mini 0.80x)" in after
    assert "batched matmuls up to 64 positions" in after and "64: 1.20x" in after
    speed = sizing.REFERENCE_STEP / 0.12
    assert f"a modern step's forward and backward in 120 ms: {speed:.2f}x the speed of" in " ".join(after.split())


def test_a_cache_of_the_first_version_without_the_modern_step_is_measured_again(counted):
    tuning.cache_file().parent.mkdir(parents=True)
    entry = {"onednn": False, "small_attention": 64, "linear_margin": {}, "attention_margin": {}, "measured": "then"}
    tuning.cache_file().write_text(json.dumps({"version": 1, "entries": {tuning.machine_key(1): entry}}))
    assert tuning.cached(1) is None and tuning.choose(1).modern_step == 0.12 and counted == [1]


def test_the_modern_step_is_timed_on_a_stream_of_its_own():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    assert tuning.measure_modern_step() > 0
    assert torch.equal(torch.rand(3), expected)


def test_bench_uses_the_cache_and_retune_measures_again(cached, counted, monkeypatch):
    monkeypatch.setattr(bench, "matmul_peak", lambda device, dtype=None: 100.0)
    args = ["bench", "-s", "bigram", "--steps", "1", "--eval-iters", "1", "--threads", "1"]
    for extra, measured in (([], 1), ([], 1), (["--retune"], 2)):
        tuning._measured.clear()
        result = CliRunner().invoke(app, args + extra)
        assert result.exit_code == 0, result.output
        assert len(counted) == measured and "float32 layers through the default BLAS" in result.stdout
    assert "(measured now;" in result.stdout
