"""Two of issue #11's gaps in ``train``: an absurd ``--eval-iters``, and a finished run resumed keeps its best."""

from __future__ import annotations

import safetensors.torch
from test_train import TINY_ARGS, assert_one_line_error, snapshot, train_cli

from tinyshake import checkpoint, corpus
from tinyshake.training import plan as planning
from tinyshake.training import train as core


def test_an_eval_iters_that_would_evaluate_for_months_is_one_line_naming_it(cached, home):
    before = snapshot(home)
    line = assert_one_line_error(train_cli("--model", "mini", "--eval-iters", "1000000000", "--max-iters", "1", code=2),
                                 "each evaluation of 1,000,000,000 batches per split", "days",
                                 "lower --eval-iters (the lecture uses 200)")
    assert "--yes" in line
    assert snapshot(home) == before  # refused before anything was fetched, locked or written
    train_cli(*TINY_ARGS, "--run", "r", "--max-iters", "2", "--sample-chars", "0")
    before = snapshot(home)
    assert_one_line_error(train_cli("--run", "r", "--resume", "--max-iters", "4", "--eval-iters", "10000000000000",
                                    code=2), "lower --eval-iters")
    assert snapshot(home) == before


def test_a_resumed_finished_run_keeps_the_best_that_was_its_final_evaluation(cached, home):
    """The head stage evaluates its final weights (its last lecture evaluation is at step 30 of 40)."""
    train_cli("--model", "head", "--device", "cpu", "--run", "h", "--max-iters", "40", "--eval-interval", "30",
              "--eval-iters", "20", "--lr", "1e-2", "--sample-chars", "0")
    finished = checkpoint.read_record("h")
    assert finished.best_step == finished.final.step == 40  # the best is the final evaluation
    best = safetensors.torch.load(checkpoint.read_file(finished, "best"))
    plan = planning.make_plan(run="h", resume=True, max_iters=80)
    events = list(core.train(plan, corpus.load(plan.corpus), should_stop=lambda: True))  # one step, then stop and save
    assert isinstance(events[-1], core.Interrupted) and events[-1].saved_step == 41
    resumed = checkpoint.read_record("h")
    assert resumed.step == 41
    assert (resumed.best_step, resumed.best_val) == (40, finished.best_val)
    kept = safetensors.torch.load(checkpoint.read_file(resumed, "best"))
    assert kept.keys() == best.keys() and all((kept[k] == best[k]).all() for k in best)
    assert checkpoint.load("h").step == 40  # chat, eval and inspect still load the best by default
    lecture = [(m.step, m.final) for m in resumed.metrics]
    assert lecture == [(0, False), (30, False), (40, True)]  # the final evaluation joins the history, marked


def test_a_resumed_finished_run_evaluates_its_new_final_weights(cached, home):
    train_cli("--model", "head", "--device", "cpu", "--run", "g", "--max-iters", "40", "--eval-interval", "30",
              "--eval-iters", "4", "--sample-chars", "0")
    train_cli("--run", "g", "--resume", "--max-iters", "45", "--sample-chars", "0")
    record = checkpoint.read_record("g")
    assert record.step == 45 and record.final.step == 45


def test_a_model_too_big_at_any_eval_iters_is_blamed_on_its_size_not_on_eval_iters(cached, home):
    assert_one_line_error(train_cli("--model", "mini", "--n-embd", "100000000", "--n-head", "1", "--eval-iters", "1000",
                                    "--max-iters", "1", code=2), "not enough memory for the model", "--n-embd")
