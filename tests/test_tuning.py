"""Routes measured once per machine key, cached, reused, remeasured when the key changes or the file is damaged."""

from __future__ import annotations

import json

import pytest

from tinyshake import model, onednn, tuning


@pytest.fixture
def counted(monkeypatch):
    """measure() replaced by a counter (the real one is timed below once); returns the call count list."""
    calls = []

    def fake(threads: int) -> tuning.Routes:
        calls.append(threads)
        return tuning.Routes(onednn=False, small_attention=64, linear_margin={"mini": 0.8},
                             attention_margin={"64": 1.2}, measured="now")
    monkeypatch.setattr(tuning, "measure", fake)
    tuning._measured.clear()
    return calls


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


def test_the_environment_forces_the_linear_route(counted, monkeypatch):
    monkeypatch.setenv(onednn.ENV, "1")
    routes = tuning.forced(tuning.choose(1))
    assert routes.onednn == onednn.available() and "TINYSHAKE_ONEDNN=1" in routes.source


def test_apply_sets_the_models_routes(monkeypatch):
    monkeypatch.setattr(model, "SMALL_ATTENTION", model.SMALL_ATTENTION)
    monkeypatch.setattr(onednn, "_enabled", onednn._enabled)
    tuning.apply(tuning.Routes(onednn=False, small_attention=32))
    assert model.SMALL_ATTENTION == 32 and not onednn.enabled()


def test_small_attention_is_the_longest_context_that_won_throughout():
    assert tuning.small_attention({8: 1.5, 32: 1.2, 64: 0.9, 128: 1.1}) == 32
    assert tuning.small_attention({8: 0.9, 32: 1.2}) == 0
