"""No silent wait (#21): torch's loading is said, every evaluation reports its batches, eval has a bar, and a
finished ladder stage is reused without being measured again."""

from __future__ import annotations

import pytest

from tinyshake import corpus, ladder
from tinyshake.training import train as core
from tinyshake.evaluate import split_loss
from tinyshake.models.model import build
from tinyshake.training.plan import make_config

from test_terminal_fit import screen_lines


def test_every_evaluation_reports_its_batches_the_step_0_and_final_ones_included(cached):
    config = make_config("head", 65, max_iters=4, eval_interval=2, eval_iters=5, batch_size=4, device="cpu")
    events = list(core.train(config, corpus.load()))
    evaluated = [e for e in events if isinstance(e, core.Evaluated)]
    assert [e.step for e in evaluated] == [0, 2, 4] and evaluated[-1].final
    for event in evaluated:
        before = events[:events.index(event)]
        since = before[max(i for i, e in enumerate(before) if not isinstance(e, core.Evaluating)) + 1:]
        assert since and all(e.step == event.step and e.total == 10 for e in since)
        done = [e.done for e in since]
        assert done == sorted(done) and done[-1] == 10  # train's 5 batches, then val's 5


def test_a_whole_split_reports_the_positions_it_has_scored(cached):
    loaded = corpus.load()
    data = loaded.val[:5000]
    config = make_config("bigram", 65)
    seen: list[tuple[int, int]] = []
    result = split_loss(build(config.model), data, 8, loaded.tokenizer, lambda done, total: seen.append((done, total)))
    assert seen[-1] == (result.positions, result.positions) == (4999, 4999)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_command_that_loads_torch_says_so_on_a_terminal(terminal, home):
    term = terminal(home, "demo", "bow", columns=80)
    assert term.wait() == 0
    lines = screen_lines(term.output)
    assert any("Loading PyTorch" in line for line in lines)
    assert lines.index(next(l for l in lines if "Loading PyTorch" in l)) < lines.index(
        next(l for l in lines if "bow" in l))


def test_a_finished_stage_is_reused_without_measuring_it_again(cached, monkeypatch):
    settings = dict(max_iters=4, eval_interval=2, eval_iters=1, device="cpu")
    data = corpus.load()
    first = [e for e in ladder.tour(ladder.plan_tour(["bigram"], **settings), data)
             if isinstance(e, ladder.StageResult)]

    def measured_again(*args, **kwargs):
        raise AssertionError("a reused stage was measured again")

    monkeypatch.setattr(ladder, "split_loss", measured_again)
    plans = ladder.plan_tour(["bigram"], **settings)
    assert plans[0].action == "reuse"
    again = [e for e in ladder.tour(plans, data) if isinstance(e, ladder.StageResult)]
    assert (again[0].full_val, again[0].sample, again[0].reused) == (first[0].full_val, first[0].sample, True)


def test_a_stage_trained_again_is_measured_again(cached):
    settings = dict(max_iters=4, eval_interval=2, eval_iters=1, device="cpu")
    data = corpus.load()
    list(ladder.tour(ladder.plan_tour(["bigram"], **settings), data))
    retrained = ladder.plan_tour(["bigram"], overwrite=True, **{**settings, "seed": 7})
    result = [e for e in ladder.tour(retrained, data) if isinstance(e, ladder.StageResult)][0]
    reused = [e for e in ladder.tour(ladder.plan_tour(["bigram"], **{**settings, "seed": 7}), data)
              if isinstance(e, ladder.StageResult)][0]
    assert reused.reused and reused.full_val == pytest.approx(result.full_val)
