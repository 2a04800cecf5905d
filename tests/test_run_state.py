"""The pieces beside the training loop, one at a time (the loop's own tests are in test_train*.py)."""

from __future__ import annotations

import pytest
import torch

from tinyshake.training import distributed
from tinyshake.training.events import Evaluated
from tinyshake.training.plan import make_config
from tinyshake.store.record import Evaluation, RunRecord
from tinyshake.training.run_state import Checkpointer, Clocks, Diverged, History, NanWatch


def config(**overrides):
    return make_config("bigram", vocab_size=65, run="pieces", **overrides)


def test_the_budget_ends_a_run_on_training_time_and_never_after_max_iters():
    clocks = Clocks(before=5.0, trained=9.0, budget=10.0, max_iters=100)
    assert not clocks.budget_ended(50) and clocks.progress(50) == pytest.approx(0.9)  # by time, not steps
    clocks.add_step(1.0)
    assert clocks.budget_ended(50) and not clocks.budget_ended(100)  # at max_iters the run ends as planned
    unbudgeted = Clocks(before=0.0, trained=0.0, budget=None, max_iters=100)
    unbudgeted.add_step(1e9)
    assert not unbudgeted.budget_ended(1) and unbudgeted.progress(25) == 0.25


def test_a_resumed_history_knows_its_best_its_last_lecture_evaluation_and_where_it_evaluated():
    final = Evaluation(12, 3.1, 2.9, 3.0, final=True)
    stored = RunRecord(name="r", stage="bigram", model={}, hyper={}, vocab=("a",), files={}, step=12, updated="",
                       digest="", metrics=(Evaluation(0, 4.1, 4.0, 1.0), Evaluation(10, 3.2, 3.0, 2.0)), final=final)
    history = History.of(stored, config(max_iters=30, eval_interval=10))
    assert (history.best_step, history.best_val) == (12, 3.1)  # the final evaluation's weights are the best
    assert history.last == Evaluated(10, 3.0, 3.2, 2.0)  # the last of the lecture's own lines
    assert history.metrics[-1] == final
    assert not history.due(10) and history.due(20) and not history.due(15)  # evaluated already; due; not due


def test_an_evaluation_is_best_only_when_lower_and_a_final_one_is_kept_apart():
    history = History.of(None, config(max_iters=20, eval_interval=10))
    assert history.add(Evaluated(0, 4.0, 4.0, 0.0)) == (Evaluation(step=0, val=4.0, train=4.0, elapsed=0.0), True)
    assert history.add(Evaluated(10, 3.0, 4.5, 0.0))[1] is False
    row, improved = history.add(Evaluated(20, 3.0, 3.5, 0.0, final=True))
    assert improved and history.best_step == 20 and row not in history.metrics and history.last.final


@pytest.mark.parametrize("saved, kept", [(None, "nothing was saved"), (7, "the checkpoint of step 7 is kept")])
def test_the_nan_stop_names_the_rates_to_lower_and_what_is_kept(saved, kept):
    checkpoints = Checkpointer(config(optimizer="muon"), torch.nn.Linear(1, 1), None, {}, distributed.Dist(), saved)
    watch = NanWatch(torch.device("cpu"), checkpoints)
    watch.see(8, torch.tensor(1.0))  # a CPU checks every step
    with pytest.raises(Diverged, match=rf"^training diverged at step 9: the training loss is NaN or infinite; lower "
                                       rf"--lr \(now .+\) or --muon-lr \(now .+\) and train again; {kept}$"):
        watch.see(9, torch.tensor(float("nan")))
