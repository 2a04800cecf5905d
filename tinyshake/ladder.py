"""The lecture's ladder as one tour: train each stage in turn at its lecture settings, and compare them.

Each stage is an ordinary run (``<prefix>-<stage>``), planned and trained by the
same code as ``tinyshake train``, so ``chat``, ``eval``, ``runs`` and ``plot``
work on it. A finished stage is reused, an interrupted one resumed, so a tour
stopped by Ctrl-C goes on where it stopped when started again. After each stage
its val loss over the whole split (every position once, comparable across
stages) and the first line of a sample are measured: the text visibly improves
down the ladder. This module yields events; front ends render them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Optional, Union

import torch.nn as nn

from tinyshake import checkpoint, record, sampling, stages
from tinyshake import train as core
from tinyshake.corpus import Corpus
from tinyshake.device import resolve
from tinyshake.errors import UsageError
from tinyshake.evaluate import split_loss
from tinyshake.model import ModelConfig

DEFAULT_STAGES = ("bigram", "head", "multihead", "ffwd", "blocks", "residual", "layernorm", "mini")
DEFAULT_PREFIX = "ladder"
QUICK_SHARE = 10  # --quick: a tenth of the steps, with evaluations scaled to match
SAMPLE_CHARS = 200  # sampled to find the sample's first line
SAMPLE_SEED = 1337  # the same model always shows the same line, reused or just trained
# What a stored run must share with this tour's plan to count as the same stage.
SAME_RUN = ("stage", "batch_size", "learning_rate", "max_iters", "eval_interval", "eval_iters", "seed")


@dataclass(frozen=True)
class StageStarted:
    """A stage begins: ``action`` is "train", "resume" (an interrupted run) or "reuse" (a finished one)."""

    index: int
    total: int
    stage: str
    run: str
    action: str
    config: core.TrainConfig


@dataclass(frozen=True)
class StageProgress:
    """One event of the stage's training, as ``tinyshake train`` gets it."""

    stage: str
    event: core.Event


@dataclass(frozen=True)
class StageResult:
    """What the tour's table shows of a stage."""

    stage: str
    run: str
    adds: str
    parameters: int
    last_val: Optional[float]  # the last random-batch estimate during training
    full_val: float  # every position of the val split once
    published_val: Optional[float]
    seconds: float  # training time, evaluations included
    sample: str  # the first line of a sample
    reused: bool


@dataclass(frozen=True)
class StageInterrupted:
    """Ctrl-C stopped the stage at ``step``; its checkpoint is saved and the same tour goes on from it."""

    stage: str
    run: str
    step: int


Event = Union[StageStarted, StageProgress, StageResult, StageInterrupted]


def check_stages(names: list[str]) -> list[str]:
    """The stages to tour, in the order given (default: bigram through layernorm, then mini), each once."""
    chosen = list(names) or list(DEFAULT_STAGES)
    for name in chosen:
        stages.get(name)  # an unknown name is a usage error that lists the stages
    repeated = sorted({n for n in chosen if chosen.count(n) > 1})
    if repeated:
        raise UsageError(f"stage {repeated[0]!r} is named twice")
    return chosen


def stage_config(stage: str, prefix: str, quick: bool, vocab_size: int, device: str) -> core.TrainConfig:
    """The stage's lecture settings for this tour; ``quick`` takes a tenth of the steps and of each evaluation."""
    preset = stages.get(stage)
    shrink: dict[str, Any] = {}
    if quick:
        shrink = dict(max_iters=max(1, preset.max_iters // QUICK_SHARE),
                      eval_interval=max(1, preset.eval_interval // QUICK_SHARE),
                      eval_iters=max(1, core.TrainConfig.eval_iters // QUICK_SHARE))
    return core.make_config(stage, vocab_size, run=f"{prefix}-{stage}", device=device, **shrink)


def _action(config: core.TrainConfig, overwrite: bool) -> str:
    """Train afresh, resume, or reuse the stored run; a run of other settings is refused unless overwritten."""
    if overwrite or not checkpoint.exists(config.run):
        return "train"
    stored = record.read_record(config.run)
    hyper = stored.get("hyper", {})
    wanted = config.hyper()
    differ = [k for k in SAME_RUN if hyper.get(k) != wanted[k]]
    if differ or ModelConfig.from_dict(stored.get("model", {})) != config.model:
        what = f"{differ[0]} {hyper.get(differ[0])}, not {wanted[differ[0]]}" if differ else "another model shape"
        raise UsageError(f"run {config.run!r} was trained with other settings ({what}); "
                         "--overwrite trains it again, --prefix NAME tours under other names")
    return "reuse" if int(stored.get("step", 0)) >= config.max_iters else "resume"


def first_line(model: nn.Module, corpus: Corpus, chars: int = SAMPLE_CHARS) -> str:
    """The first non-empty line the model writes from the lecture's start token, with a fixed seed."""
    generator, _ = sampling.make_generator(next(model.parameters()).device, SAMPLE_SEED)
    ids = list(sampling.generate(model, [sampling.START_TOKEN], sampling.SamplingSettings(max_new_tokens=chars),
                                 generator))
    lines = [line.strip() for line in corpus.tokenizer.decode(ids).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _result(config: core.TrainConfig, corpus: Corpus, model: nn.Module, stored: dict[str, Any],
            seconds: float, reused: bool) -> StageResult:
    preset = stages.get(config.stage)
    metrics = stored.get("metrics") or []
    last = metrics[-1]["val"] if metrics else None
    full = split_loss(model, corpus.val.to(next(model.parameters()).device), config.block_size).loss
    return StageResult(config.stage, config.run, preset.adds, int(stored.get("parameters", 0)),
                       last if isinstance(last, (int, float)) and math.isfinite(last) else None, full,
                       preset.published_val, seconds, first_line(model, corpus), reused)


def tour(names: list[str], corpus: Corpus, prefix: str = DEFAULT_PREFIX, quick: bool = False,
         overwrite: bool = False, device: str = "auto",
         should_stop: Callable[[], bool] = lambda: False) -> Iterator[Event]:
    """Train (or reuse, or resume) each stage in turn, yielding its training events and then its result.

    Stops after a :class:`StageInterrupted` when ``should_stop`` asked for it.
    """
    chosen = check_stages(names)
    configs = [stage_config(s, prefix, quick, corpus.tokenizer.vocab_size, device) for s in chosen]
    actions = [_action(c, overwrite) for c in configs]  # refuse a mismatched run before anything trains
    for index, (config, action) in enumerate(zip(configs, actions)):
        if action == "resume":
            config = core.resume_config(record.read_record(config.run), device=device)
        yield StageStarted(index, len(chosen), config.stage, config.run, action, config)
        if action == "reuse":
            loaded = checkpoint.load(config.run, resolve(config.device).device, weights="last")  # as it ended
            yield _result(config, corpus, loaded.model, loaded.record,
                          float(loaded.record.get("wall_time", 0.0)), reused=True)
            continue
        finished = None
        for event in core.train(config, corpus, resume=action == "resume", should_stop=should_stop):
            yield StageProgress(config.stage, event)
            if isinstance(event, core.Interrupted):
                yield StageInterrupted(config.stage, config.run, event.step)
                return
            if isinstance(event, core.Finished):
                finished = event
        assert finished is not None  # the core always ends with Finished or Interrupted
        yield _result(config, corpus, finished.model, record.read_record(config.run), finished.elapsed,
                      reused=False)


__all__ = ["DEFAULT_STAGES", "StageStarted", "StageProgress", "StageResult", "StageInterrupted", "tour",
           "check_stages", "stage_config", "first_line"]
