"""A stage's facts as text, for ``stages``' table and ``train``'s header alike: settings, the lecture's val.

Pure text from :mod:`tinyshake.training.stages`; it imports no torch.
"""

from __future__ import annotations

from typing import Any, Optional

from tinyshake.training import stages


def short_float(value: float) -> str:
    """A learning rate as the lecture writes it: 1e-3, 3e-4, 1e-2."""
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def published(stage: stages.Stage) -> str:
    """The lecture's final val loss (and train loss, where it gave one)."""
    if stage.published_val is None:
        return "-"
    train = f" (train {stage.published_train:.2f})" if stage.published_train is not None else ""
    return f"{stage.published_val:.2f}{train}"


ROUGH = "*"  # marks a val estimated on other than the lecture's batches: see ROUGH_NOTE
ROUGH_NOTE = (f"{ROUGH} estimated on other than the lecture's {stages.LECTURE_EVAL_ITERS} batches per split "
              "(--eval-iters, --time-budget, ladder --quick): noisier, not comparable with the lecture's val")


def estimate(val: float, eval_iters: Optional[int]) -> str:
    """A val estimate with four decimals, marked when it was not estimated as the lecture estimates."""
    return f"{val:.4f}" + ("" if stages.lecture_estimate(eval_iters) else ROUGH)


def batches(count: int) -> str:
    return f"{count} batch" if count == 1 else f"{count} batches"


def rough_words(eval_iters: Optional[int]) -> str:
    """Why a marked estimate does not compare, in words: how many batches it took against the lecture's."""
    took = batches(eval_iters) if eval_iters is not None else "an unrecorded number of batches"
    return f"estimated on {took} per split, not the lecture's {stages.LECTURE_EVAL_ITERS}: not comparable"


def settings(stage: stages.Stage) -> dict[str, str]:
    """The lecture's settings of a stage, as short strings ("-" where the stage has no such part)."""
    m = stage.model
    gpt = m.get("arch") != "bigram"
    return {
        "batch": str(stage.batch_size), "block": str(stage.block_size),
        "width": str(m["n_embd"]) if gpt else "-", "heads": str(m["n_head"]) if gpt else "-",
        "layers": str(m["n_layer"]) if gpt else "-",
        "dropout": f"{m['dropout']:g}" if "dropout" in m else "-",
        "lr": short_float(stage.learning_rate), "steps": str(stage.max_iters),
    }


def settings_line(stage: stages.Stage, steps: bool = True) -> str:
    """The settings as one line for a run's header: ``batch 32, block 8, width 32, ... steps 5000``."""
    return ", ".join(f"{k} {v}" for k, v in settings(stage).items() if v != "-" and (steps or k != "steps"))


def run_header(config: Any, parameters: int) -> tuple[str, str]:
    """``train``'s header for a run of ``config`` (a TrainConfig): the stage, its size and the lecture's val,
    then what the stage adds and the run's settings (the stage's, with the user's overrides)."""
    stage, m = stages.get(config.stage), config.model
    shape = {} if m.arch == "bigram" else dict(n_embd=m.n_embd, n_head=m.n_head, n_layer=m.n_layer)
    shown = stages.with_overrides(stage, batch_size=config.batch_size, block_size=config.block_size,
                                  learning_rate=config.learning_rate, max_iters=config.max_iters,
                                  dropout=m.dropout if "dropout" in stage.model or m.dropout else None, **shape)
    lecture = f"; the lecture reached val {published(stage)}" if stage.published_val is not None else ""
    plain = ", the lecture's code as written (--plain)" if config.plain else ""
    budget = f", time budget {config.time_budget:g} s of training" if config.time_budget else ""
    bpe = f", a BPE of {m.vocab_size:,} tokens" if config.tokenizer == "bpe" else ""
    line = settings_line(shown, steps=config.max_iters < stages.UNTIL_BUDGET)  # else the budget alone ends the run
    return (f"{config.stage} ({parameters:,} parameters{lecture}{plain}{bpe})", f"{stage.adds}\n  {line}{budget}")
