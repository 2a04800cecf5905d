"""Benchmark, not a test: the best full-val loss that each model shape reaches in a given number of seconds.

    python tests/bench_frontier.py                          # every shape at 10, 20, 60 and 300 s of training
    python tests/bench_frontier.py --budgets 20 60 --only today small-fast

Every candidate is the ``modern`` recipe (rotary positions, RMSNorm, QK-norm,
ReLU², zero-init projections, Muon with AdamW, warmup and warmdown) with
another width, depth, context, batch or learning rates. Each trains under
``--time-budget`` (seconds of training; evaluations do not count) and is then
scored on the whole val split, every position once, as ``tinyshake eval``
scores it. Run it on a quiet machine, in one sitting: the figures are only
comparable with each other. The CPU is named in the first line.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from typing import Any

from tinyshake import corpus, evaluate
from tinyshake.store import record
from tinyshake.training import machine, train
from tinyshake.training.plan import make_config

BUDGETS = (10.0, 20.0, 60.0, 300.0)
NEVER = 10**12  # max_iters and eval_interval: the budget ends the run, and only its first and final weights are scored


@dataclass(frozen=True)
class Candidate:
    """A shape and its rates, as overrides of the ``modern`` preset."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)


CANDIDATES = (
    Candidate("today"),  # the modern preset as it ships: 128 wide, 4 layers, context 64, batch 32
    Candidate("small-fast", dict(n_embd=64, n_head=2, n_layer=2, learning_rate=6e-3, muon_lr=0.05)),
    Candidate("narrow", dict(n_embd=96, n_head=3, n_layer=3, learning_rate=4e-3, muon_lr=0.04)),
    Candidate("shallow", dict(n_layer=2)),
    Candidate("deeper", dict(n_layer=6)),
    Candidate("wide", dict(n_embd=192, n_head=6)),
    Candidate("long-context", dict(block_size=128, batch_size=16)),
    Candidate("short-context", dict(block_size=32, batch_size=64)),
    Candidate("big-batch", dict(batch_size=64, learning_rate=4e-3, muon_lr=0.04)),
)


def trial(candidate: Candidate, budget: float, data: corpus.Corpus) -> dict[str, float]:
    """Train one candidate for ``budget`` seconds; its steps, seconds and whole-val loss."""
    run = f"frontier-{candidate.name}"
    config = make_config("modern", data.tokenizer.vocab_size, run=run, max_iters=NEVER, eval_interval=NEVER,
                         eval_iters=20, time_budget=budget, device="cpu", **candidate.settings)
    started = time.perf_counter()
    *_, finished = train.train(config, data)
    wall = time.perf_counter() - started
    if not isinstance(finished, train.Finished):
        raise SystemExit(f"{run} did not finish: {finished}")
    full = evaluate.split_loss(finished.model, data.val, config.block_size, data.tokenizer).loss
    record.remove(run)
    return {"steps": finished.step, "wall": wall, "val": full}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS), help="seconds of training")
    parser.add_argument("--only", nargs="+", default=[c.name for c in CANDIDATES], help="candidate names")
    args = parser.parse_args()
    chosen = [c for c in CANDIDATES if c.name in args.only]
    data = corpus.load()
    print(f"CPU: {machine.cpu_model()}, {os.cpu_count()} CPUs; the whole val split's loss after each budget of training")
    print(f"{'candidate':<14} {'budget s':>8} {'steps':>7} {'wall s':>7} {'full val':>9}")
    for budget in args.budgets:
        for candidate in chosen:
            result = trial(candidate, budget, data)
            print(f"{candidate.name:<14} {budget:>8.0f} {result['steps']:>7,} {result['wall']:>7.1f} "
                  f"{result['val']:>9.4f}", flush=True)


if __name__ == "__main__":
    main()
