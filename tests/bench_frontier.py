"""Benchmark, not a test: the best full-val loss that each model shape reaches in a given number of seconds.

    python tests/bench_frontier.py                          # every shape at 10, 20, 60 and 300 s of training
    python tests/bench_frontier.py --budgets 20 60 --only today small-fast
    python tests/bench_frontier.py --budgets 20 --only today --techniques   # every technique trial on today's shape
    python tests/bench_frontier.py --chart out-*.txt    # the frontier as a table and a chart, from saved outputs
    python tests/bench_frontier.py --steps 450 --only today --techniques "tied head"   # 450 steps, with and without

Every candidate is the ``modern`` recipe (rotary positions, RMSNorm, QK-norm,
ReLU², zero-init projections, Muon with AdamW, warmup and warmdown) with
another width, depth, context, batch or learning rates. Each trains under
``--time-budget`` (seconds of training; evaluations do not count) and is then
scored on the whole val split, every position once, as ``tinyshake eval``
scores it. ``--techniques`` trains the chosen shapes again with each trial
of the speedrun literature (soft-capped logits, value embeddings, a tied
head, cheaper Muon steps), put in place by the trial itself. Run it on a quiet machine, in one sitting: the figures are only
comparable with each other. The CPU is named in the first line.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch.nn import functional as F

from tinyshake import corpus, evaluate
from tinyshake.models import onednn, optim, speed
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
    Candidate("small-deep", dict(n_embd=64, n_head=2, n_layer=4, learning_rate=6e-3, muon_lr=0.05)),
    Candidate("wide-long", dict(n_embd=192, n_head=6, block_size=128, batch_size=16)),
    Candidate("long-big", dict(block_size=128, batch_size=32)),
    Candidate("large", dict(n_embd=192, n_head=6, n_layer=6)),
)


# --------------------------------------------------------------------------- technique trials


class Technique:
    """A change to the model or its optimizer after they are built; the base class changes nothing."""

    name = "as-is"

    def model(self, model: nn.Module) -> None:
        """Change the model before its optimizer is made."""

    def optimizer(self, optimizer: optim.Combined) -> None:
        """Change the optimizer once it is made."""


class SoftCap(Technique):
    """Logits squashed into (-cap, cap) by cap·tanh(logits / cap), as the speedruns do before the loss."""

    def __init__(self, cap: float) -> None:
        self.cap, self.name = cap, f"soft-cap {cap:g}"

    def model(self, model: nn.Module) -> None:
        model.lm_head.register_forward_hook(lambda _m, _i, logits: self.cap * torch.tanh(logits / self.cap))


class _TiedHead(nn.Module):
    """The head that reads logits off the token embedding's own weights (only the bias is its own)."""

    def __init__(self, embedding: nn.Embedding, bias: nn.Parameter) -> None:
        super().__init__()
        self.embedding = [embedding]  # in a list: the table is the model's, not registered a second time here
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.embedding[0].weight, self.bias)


class TiedHead(Technique):
    """The output head shares the token embedding's weights (GPT-2's choice; the lecture's head is its own)."""

    name = "tied head"

    def model(self, model: nn.Module) -> None:
        model.lm_head = _TiedHead(model.token_embedding_table, model.lm_head.bias)


class ValueEmbeddings(Technique):
    """Each block's attention values get a per-token embedding of their own added, starting at zero."""

    name = "value embeddings"

    def model(self, model: nn.Module) -> None:
        config = model.config
        model.value_embeds = nn.ModuleList(nn.Embedding(config.vocab_size, config.n_embd)
                                           for _ in range(config.n_layer))
        for table in model.value_embeds:
            nn.init.zeros_(table.weight)
        layers = {block.sa.qkv.data_ptr(): i for i, block in enumerate(model.blocks)}
        tokens: list[torch.Tensor] = []

        def remember(_module: nn.Module, args: tuple) -> None:  # the batch's tokens, for every layer's table
            tokens[:] = [args[0]]
        model.register_forward_pre_hook(remember)
        plain_linear = onednn.linear

        def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
            out = plain_linear(x, weight, bias)
            layer = layers.get(weight.data_ptr())
            if layer is None or not tokens:
                return out
            B, T, C = x.shape
            heads = model.blocks[layer].sa.n_head
            k, q, v = out.view(B, T, heads, 3, C // heads).unbind(3)
            extra = model.value_embeds[layer](tokens[0]).view(B, T, heads, C // heads).to(v.dtype)
            return torch.stack([k, q, v + extra], dim=3).view(B, T, -1)

        onednn.linear = linear  # the trial's process only; every other technique leaves it alone


class NewtonSchulzSteps(Technique):
    """Muon's orthogonalisation with fewer Newton-Schulz iterations than its 5: cheaper, less exact."""

    def __init__(self, steps: int) -> None:
        self.steps, self.name = steps, f"muon ns {steps}"

    def optimizer(self, optimizer: optim.Combined) -> None:
        for group in optimizer.optimizers[0].param_groups:
            group["ns_steps"] = self.steps


class MuonOnFeedForward(Technique):
    """Muon for the feed-forward matrices only; attention's matrices go to AdamW with the rest."""

    name = "muon ffwd only"

    def model(self, model: nn.Module) -> None:
        def split(m: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
            hidden, other = [], []
            for name, p in m.named_parameters():
                (hidden if ".ffwd." in name and p.ndim >= 2 else other).append(p)
            return hidden, other
        optim.split_params = split


TECHNIQUES = (Technique(), SoftCap(15.0), SoftCap(30.0), TiedHead(), ValueEmbeddings(), NewtonSchulzSteps(3),
              MuonOnFeedForward())


def _build_with(technique: Technique):
    """``train._build`` with ``technique`` applied between the model and its optimizer."""
    def build(config, device):
        with train._building(config.model):
            model = speed.build(config.model, config.plain).to(device)
            technique.model(model)
            optimizer = optim.make(model, config.optimizer, config.learning_rate, config.muon_lr, config.plain)
            technique.optimizer(optimizer)
        return model, optimizer
    return build


def trial(candidate: Candidate, budget: float, data: corpus.Corpus, technique: Technique = Technique(),
          steps: int | None = None) -> dict[str, float]:
    """Train one candidate for ``budget`` seconds (or exactly ``steps`` steps); its steps, seconds and whole-val
    loss."""
    run = f"frontier-{candidate.name}"
    saved = onednn.linear, optim.split_params, train._build
    train._build = _build_with(technique)
    config = make_config("modern", data.tokenizer.vocab_size, run=run, max_iters=steps or NEVER, eval_interval=NEVER,
                         eval_iters=20, time_budget=None if steps else budget, device="cpu", **candidate.settings)
    started = time.perf_counter()
    try:
        *_, finished = train.train(config, data)
        wall = time.perf_counter() - started
        if not isinstance(finished, train.Finished):
            raise SystemExit(f"{run} did not finish: {finished}")
        full = evaluate.split_loss(finished.model, data.val, config.block_size, data.tokenizer).loss
    finally:
        onednn.linear, optim.split_params, train._build = saved
        record.remove(run)
    return {"steps": finished.step, "wall": wall, "val": full}


# --------------------------------------------------------------------------- the frontier from saved outputs

NANOGPT = (127.0, 1.8983)  # the real nanoGPT's README CPU recipe (the figure): seconds of wall time, full val
CHART_WIDTH, CHART_TOP, CHART_STEP, CHART_ROWS = 60, 2.00, 0.025, 23


def read_rows(paths: list[str]) -> list[tuple[str, str, float, float]]:
    """(candidate, technique, budget, full val) of every result line in this script's saved outputs."""
    rows = []
    for path in paths:
        for line in open(path, encoding="utf-8"):
            parts = line.rsplit(None, 4)
            if len(parts) == 5 and parts[1].replace(".", "").isdigit() and not line.startswith(("CPU", "candidate")):
                name, technique = parts[0].split(None, 1) if " " in parts[0].strip() else (parts[0], "as-is")
                rows.append((name.strip(), technique.strip(), float(parts[1]), float(parts[4])))
    return rows


def frontier(rows: list[tuple[str, str, float, float]]) -> dict[float, tuple[str, float, float | None]]:
    """Per budget (no technique trials): the best candidate, its val, and today's val."""
    plain = [r for r in rows if r[1] == "as-is" and r[2] > 0]
    best: dict[float, tuple[str, float, float | None]] = {}
    for budget in sorted({r[2] for r in plain}):
        at = {name: val for name, _, b, val in plain if b == budget}
        name = min(at, key=at.get)
        best[budget] = (name, at[name], at.get("today"))
    return best


def chart(best: dict[float, tuple[str, float, float | None]]) -> list[str]:
    """Full val against seconds of training (log scale): * the best shape, o today's modern, n nanoGPT's recipe."""
    import math
    low, high = math.log(5), math.log(400)
    grid = [[" "] * CHART_WIDTH for _ in range(CHART_ROWS)]

    def put(seconds: float, val: float, mark: str) -> None:
        col = round((math.log(seconds) - low) / (high - low) * (CHART_WIDTH - 1))
        row = round((CHART_TOP - val) / CHART_STEP)
        if 0 <= row < CHART_ROWS and 0 <= col < CHART_WIDTH:
            grid[row][col] = mark
    for budget, (_, val, today) in best.items():
        if today is not None:
            put(budget, today, "o")
        put(budget, val, "*")
    put(*NANOGPT, "n")
    lines = [f"{CHART_TOP - i * CHART_STEP:5.3f} |" + "".join(cells) for i, cells in enumerate(grid)]
    axis = [" "] * CHART_WIDTH
    for seconds in (10, 20, 60, 127, 300):
        col = round((math.log(seconds) - low) / (high - low) * (CHART_WIDTH - 1))
        for i, ch in enumerate(str(seconds)):
            if col + i < CHART_WIDTH:
                axis[col + i] = ch
    return lines + ["      +" + "-" * CHART_WIDTH, "       " + "".join(axis) + "  s of training",
                    "full val: * the best shape (where it is modern, * hides o), o modern as it ships, n nanoGPT's CPU recipe"]


def show_frontier(paths: list[str]) -> None:
    best = frontier(read_rows(paths))
    print(f"{'budget s':>8}  {'best shape':<14} {'full val':>8}  {'modern today':>12}")
    for budget, (name, val, today) in best.items():
        print(f"{budget:>8.0f}  {name:<14} {val:>8.4f}  {today if today is not None else float('nan'):>12.4f}")
    print("\n".join(chart(best)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS), help="seconds of training")
    parser.add_argument("--only", nargs="+", default=[c.name for c in CANDIDATES], help="candidate names")
    parser.add_argument("--techniques", nargs="*", help="also train these technique trials (every one if none is "
                                                         f"named): {', '.join(t.name for t in TECHNIQUES[1:])}")
    parser.add_argument("--steps", type=int, help="train this many steps instead of a time budget: learning per step, "
                                                  "apart from a technique's cost per step")
    parser.add_argument("--chart", nargs="+", metavar="OUTPUT", help="draw the frontier from this script's saved "
                                                                       "outputs instead of training")
    args = parser.parse_args()
    if args.chart:
        return show_frontier(args.chart)
    chosen = [c for c in CANDIDATES if c.name in args.only]
    data = corpus.load()
    print(f"CPU: {machine.cpu_model()}, {os.cpu_count()} CPUs; the whole val split's loss after each budget of training")
    techniques = TECHNIQUES if args.techniques == [] else \
        [t for t in TECHNIQUES if t is TECHNIQUES[0] or t.name in (args.techniques or ())]
    print(f"{'candidate':<14} {'technique':<16} {'budget s':>8} {'steps':>7} {'wall s':>7} {'full val':>9}")
    for budget in args.budgets:
        for candidate in chosen:
            for technique in techniques:
                result = trial(candidate, budget, data, technique, args.steps)
                print(f"{candidate.name:<14} {technique.name:<16} {budget:>8.0f} {result['steps']:>7,} "
                      f"{result['wall']:>7.1f} {result['val']:>9.4f}", flush=True)


if __name__ == "__main__":
    main()
