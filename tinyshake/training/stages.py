"""The lecture's model ladder as data: one row per stage, every value overridable by a flag."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from tinyshake.errors import UsageError


@dataclass(frozen=True)
class Stage:
    """A preset: what the stage adds, its model shape and its training hyperparameters."""

    name: str
    adds: str
    model: dict[str, Any]
    batch_size: int
    block_size: int
    learning_rate: float
    max_iters: int
    eval_interval: int
    eval_last: bool = False  # the lecture's later code also evaluates at the last step
    published_val: float | None = None
    published_train: float | None = None  # where the lecture also gave its final train loss
    hyper: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"  # the lecture's stages keep float32, so their numbers hold; "auto": bf16 where native


_SMALL = dict(batch_size=32, block_size=8, learning_rate=1e-3, max_iters=5000, eval_interval=500)


def _variant(base: Stage, name: str, adds: str, **changes: Any) -> Stage:
    """A stage that differs from ``base`` only in what ``changes`` names (a whole ``model`` dict, ``hyper``, ...)."""
    return replace(base, name=name, adds=adds, **changes)


def _without(model: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in model.items() if k != key}


_GPT = Stage("gpt", "scaled up, with dropout and N(0, 0.02) init",
             dict(n_embd=384, n_head=6, n_layer=6, ffwd="wide", proj=True, residual=True, layernorm=True,
                  dropout=0.2, init_std=0.02),
             batch_size=64, block_size=256, learning_rate=3e-4, max_iters=5000, eval_interval=500,
             eval_last=True, published_val=1.48)
_MINI = Stage("mini", "the gpt stage, small enough for a laptop CPU",
             dict(n_embd=64, n_head=4, n_layer=4, ffwd="wide", proj=True, residual=True, layernorm=True,
                  dropout=0.0, init_std=0.02),
             batch_size=16, block_size=32, learning_rate=1e-3, max_iters=5000, eval_interval=100,
             eval_last=True, published_val=1.82)

STAGES: dict[str, Stage] = {
    s.name: s
    for s in [
        Stage("bigram", "logits read off an Embedding(vocab, vocab)", dict(arch="bigram"),
              batch_size=32, block_size=8, learning_rate=1e-2, max_iters=3000, eval_interval=300, published_val=2.49),
        Stage("head", "token + position embeddings, one causal self-attention head (size 32), lm_head",
              dict(n_embd=32, n_head=1, n_layer=1), **_SMALL, published_val=2.40),
        Stage("multihead", "4 heads of size 8, concatenated",
              dict(n_embd=32, n_head=4, n_layer=1), **_SMALL, published_val=2.28),
        Stage("ffwd", "+ a feed-forward (Linear + ReLU) after attention",
              dict(n_embd=32, n_head=4, n_layer=1, ffwd="simple"), **_SMALL, published_val=2.24),
        Stage("blocks", "3 blocks (attention + feed-forward) without residuals",
              dict(n_embd=32, n_head=4, n_layer=3, ffwd="simple"), **_SMALL),
        Stage("residual", "residual connections, attention projection, 4x feed-forward with projection",
              dict(n_embd=32, n_head=4, n_layer=3, ffwd="wide", proj=True, residual=True),
              **_SMALL, eval_last=True, published_val=2.08),
        Stage("layernorm", "pre-norm LayerNorm in each block, plus a final LayerNorm",
              dict(n_embd=32, n_head=4, n_layer=3, ffwd="wide", proj=True, residual=True, layernorm=True),
              **_SMALL, eval_last=True, published_val=2.06),
        _GPT,
        _variant(_GPT, "gpt-video", "the gpt stage as the video ran it: scores scaled by n_embd**-0.5, PyTorch's "
                                    "default init", model=dict(_without(_GPT.model, "init_std"), attn_scale="n_embd"),
                 published_val=1.49, published_train=1.08),
        _MINI,
        _variant(_MINI, "mini-bpe", "the mini stage on the sequel's tokens: a BPE of 512 learned from the train split",
                 published_val=None, hyper=dict(tokenizer="bpe", bpe_vocab=512)),
        Stage("modern", "beyond the lecture: rotary positions, RMSNorm, QK-norm, ReLU², zero-init projections, "
                        "Muon + AdamW, warmup and a linear warmdown",
              dict(n_embd=128, n_head=4, n_layer=4, ffwd="wide", proj=True, residual=True, layernorm=True,
                   norm="rmsnorm", activation="relu2", qk_norm=True, zero_init_proj=True, pos="rope", init_std=0.02),
              batch_size=32, block_size=64, learning_rate=3e-3, max_iters=2000, eval_interval=500, eval_last=True,
              hyper=dict(optimizer="muon", muon_lr=0.03, warmup=0.02, warmdown=0.5), dtype="auto"),
    ]
}
DEFAULT_STAGE = "mini"

LECTURE_EVAL_ITERS = 200  # random batches per split in the lecture's loss estimates
BUDGET_EVAL_ITERS = 20  # batches per split in each estimate of a --time-budget run, unless --eval-iters says
BUDGET_EVALUATIONS = 10  # a time budget's run evaluates at each tenth of it (the last tenth at its end)
UNTIL_BUDGET = 10**12  # max_iters of a run with --time-budget and no --max-iters: the budget alone ends it


def lecture_estimate(eval_iters: int | None) -> bool:
    """Whether a val estimated on ``eval_iters`` batches per split compares with the lecture's (and other runs').

    Fewer batches (``--eval-iters 20``, ``ladder --quick``) make a noisier
    estimate, which can beat the lecture's figure by luck alone.
    """
    return eval_iters == LECTURE_EVAL_ITERS


def get(name: str) -> Stage:
    """The preset called ``name``, whatever its case (as every choice is); an unknown name is a usage error that
    lists the stages."""
    try:
        return STAGES[name.lower()]
    except KeyError:
        raise UsageError(f"unknown stage {name!r}; choose one of: {', '.join(STAGES)}") from None


def next_stage(name: str) -> Stage | None:
    """The stage after ``name`` in the ladder's order, which ``train`` suggests next; None after the last, and
    beside the ladder (the sized stages)."""
    order = [stage for stage in STAGES if stage not in SIZED]
    if name not in order:
        return None
    following = order.index(name) + 1
    return STAGES[order[following]] if following < len(order) else None


def with_overrides(stage: Stage, **overrides: Any) -> Stage:
    """A copy of ``stage`` with the given hyperparameters replaced (``None`` keeps the preset)."""
    model_keys = {"n_embd", "n_head", "n_layer", "dropout"}
    model = dict(stage.model)
    model.update({k: v for k, v in overrides.items() if k in model_keys and v is not None})
    rest = {k: v for k, v in overrides.items() if k not in model_keys and v is not None}
    return replace(stage, model=model, **rest)

def _modern_sized(name: str, adds: str, **overrides: Any) -> Stage:
    """The modern recipe at another shape: what ``train --time-budget`` picks for a budget
    (:mod:`tinyshake.training.sizing`), from ``tests/bench_frontier.py``'s measurements."""
    return _variant(with_overrides(STAGES["modern"], **overrides), name, adds)


SIZED = ("modern-small", "modern-long")  # beside the ladder: the modern recipe sized for a time budget
STAGES.update((s.name, s) for s in [
    _modern_sized("modern-small", "the modern recipe with 2 layers: about twice the steps a second, the most learned "
                                  "in up to about two minutes on a 2-core CPU", n_layer=2),
    _modern_sized("modern-long", "the modern recipe on a context of 128 and batches of 16: the most learned in "
                                 "about five minutes on a 2-core CPU", block_size=128, batch_size=16),
])

# Stages sized for a GPU: on a CPU, train and ladder warn before them with an estimate.
GPU_SIZED = ("gpt", "gpt-video")


def parameter_count(stage: Stage, vocab_size: int | None = None) -> int:
    """The number of parameters the stage's model has, by arithmetic on its shape.

    ``vocab_size`` defaults to the stage's own: its BPE's size, or tiny Shakespeare's 65 characters.

    ``tinyshake stages`` shows it without building a model (so without torch);
    the tests check it against ``count_parameters(build(config))`` for every
    stage. Missing keys take ModelConfig's defaults (no feed-forward, no
    projection, no norms, learned positions).
    """
    vocab_size = vocab_size or stage.hyper.get("bpe_vocab", 65)
    return shape_parameters(stage.model, stage.block_size, vocab_size)


def shape_parameters(m: Mapping[str, Any], block_size: int, vocab_size: int) -> int:
    """The parameters of a model of shape ``m`` (a stage's model settings, or a ModelConfig as a dict)."""
    if m.get("arch") == "bigram":
        return vocab_size * vocab_size
    n, heads = m["n_embd"], m["n_head"]
    inner = heads * (n // heads)  # the heads side by side
    norm = 0
    if m.get("layernorm", False):
        norm = n if m.get("norm", "layernorm") == "rmsnorm" else 2 * n  # gain (and bias)
    ffwd = {"none": 0, "simple": n * n + n, "wide": 2 * 4 * n * n + 4 * n + n}[m.get("ffwd", "none")]
    per_block = 3 * inner * n + (inner * n + n if m.get("proj", False) else 0) + ffwd + 2 * norm
    positions = block_size * n if m.get("pos", "learned") == "learned" else 0
    return vocab_size * n + positions + m["n_layer"] * per_block + norm + n * vocab_size + vocab_size
