"""The lecture's ladder as one tour: train each stage in turn at its lecture settings, and compare them.

Each stage is an ordinary run (``<prefix>-<stage>``), planned by
:func:`tinyshake.training.plan.make_plan` and trained by :func:`tinyshake.training.train.train`,
exactly as ``tinyshake train`` plans and trains, so ``chat``, ``eval``, ``runs``
and ``plot`` work on it. A finished stage is reused, an interrupted one resumed,
so a tour stopped by Ctrl-C goes on where it stopped when started again. After
each stage its val loss over the whole split (every position once, comparable
across stages) and the first line of a sample are measured: the text visibly
improves down the ladder. This module yields events; front ends render them.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import torch.nn as nn

from tinyshake import checkpoint, sampling
from tinyshake.store import atomic, record
from tinyshake.training import stages
from tinyshake.training import train as core
from tinyshake.corpus import DEFAULT_CORPUS, Corpus
from tinyshake.errors import UsageError
from tinyshake.evaluate import split_loss
from tinyshake.training.plan import Plan, TrainConfig, make_plan

DEFAULT_STAGES = ("bigram", "head", "multihead", "ffwd", "blocks", "residual", "layernorm", "mini")
DEFAULT_PREFIX = "ladder"
QUICK_SHARE = 10  # --quick: a tenth of the steps, with evaluations scaled to match
SAMPLE_CHARS = 200  # sampled to find the sample's first line
# Settings that say how a run goes, not what it computes: a stored stage may differ in these and still count.
HOW_IT_RUNS = ("run", "device", "compile")
MEASURED = "ladder.json"  # in a stage's run folder: its full val and sample line, for the checkpoint they measured


@dataclass(frozen=True)
class StagePlan:
    """One stage of the tour, decided: ``action`` is "train", "resume" (an interrupted run) or "reuse" (a finished one)."""

    stage: str
    action: str
    plan: Plan

    @property
    def run(self) -> str:
        return self.plan.run


@dataclass(frozen=True)
class StageStarted:
    """A stage begins (or is reused)."""

    index: int
    total: int
    stage: str
    run: str
    action: str
    config: TrainConfig


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
    last_val: Optional[float]  # the last random-batch estimate (of the final weights, where there is one)
    full_val: float  # every position of the val split once
    full_bpc: float  # the same in bits per character: how char and BPE stages compare
    published_val: Optional[float]
    seconds: float  # training time, evaluations included
    sample: str  # the first line of a sample
    reused: bool
    eval_iters: int = stages.LECTURE_EVAL_ITERS  # batches per split of last_val's estimate


@dataclass(frozen=True)
class StageInterrupted:
    """The tour stopped in (or before) a stage at ``step``; ``saved_step`` is its checkpoint (``None``: none yet)."""

    stage: str
    run: str
    step: int
    saved_step: Optional[int]


Event = Union[StageStarted, StageProgress, StageResult, StageInterrupted]


def check_stages(names: Sequence[str], tokenizer: Optional[str] = None) -> list[str]:
    """The stages to tour, in the order given (default: bigram through layernorm, then mini), each once.

    On BPE tokens the default leaves out the bigram, which is the lecture's table of character pairs.
    """
    chosen = [stages.get(name).name for name in names] or [  # an unknown name lists the stages
        s for s in DEFAULT_STAGES if not (tokenizer == "bpe" and s == "bigram")]
    repeated = sorted({n for n in chosen if chosen.count(n) > 1})
    if repeated:
        raise UsageError(f"stage {repeated[0]!r} is named twice")
    return chosen


def stage_settings(stage: str, quick: bool, overrides: dict[str, Any]) -> dict[str, Any]:
    """The settings this tour gives ``make_plan`` for a stage: ``quick`` takes a tenth of the steps and of each
    evaluation; ``overrides`` (``None`` keeps the preset) go on top, for every stage alike."""
    preset = stages.get(stage)
    settings: dict[str, Any] = {}
    if quick:
        settings = dict(max_iters=max(1, preset.max_iters // QUICK_SHARE),
                        eval_interval=max(1, preset.eval_interval // QUICK_SHARE),
                        eval_iters=max(1, TrainConfig.eval_iters // QUICK_SHARE))
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return settings


def _differences(stored: Plan, wanted: TrainConfig, corpus: str) -> Optional[str]:
    """What makes a stored run another computation than this tour's stage (``None``: it is the same)."""
    have, want = stored.config.hyper(), wanted.hyper()
    for key, value in want.items():
        if key not in HOW_IT_RUNS and have.get(key) != value:
            return f"{key} {have.get(key)}, not {value}"
    if replace(stored.config.model, vocab_size=wanted.model.vocab_size) != wanted.model:
        return "another model shape"
    if stored.corpus != corpus:
        return f"corpus {stored.corpus!r}, not {corpus!r}"
    return None


def plan_stage(stage: str, run: str, corpus: str, overwrite: bool, settings: dict[str, Any]) -> StagePlan:
    """One stage's plan, made by ``make_plan`` as ``train`` makes it; a stored run of other settings is refused.

    A run folder without a checkpoint is a training that never saved: it is
    trained afresh. ``make_plan`` also refuses a run that another process holds.
    """
    fresh = make_plan(stage, run, corpus, overwrite=True, **settings)  # decides; writes nothing
    if overwrite or not checkpoint.exists(run):
        return StagePlan(stage, "train", fresh)
    # no stage and no corpus given: the stored run's own, so that _differences sees them
    stored = make_plan(None, run, None, resume=True, device=settings.get("device"))
    differ = _differences(stored, fresh.config, corpus)
    if differ:
        raise UsageError(f"run {run!r} was trained with other settings ({differ}); "
                         "--overwrite trains it again, --prefix NAME tours under other names")
    return StagePlan(stage, "reuse" if stored.complete else "resume", stored)


def plan_tour(names: Sequence[str], prefix: str = DEFAULT_PREFIX, corpus: str = DEFAULT_CORPUS, quick: bool = False,
              overwrite: bool = False, **overrides: Any) -> list[StagePlan]:
    """Every stage's plan, before anything trains, so a refused stage late in the tour costs no training.

    ``overrides`` are ``train``'s settings (``device``, ``max_iters``, ``n_embd``, ...) for every stage.
    """
    return [plan_stage(s, f"{prefix}-{s}", corpus, overwrite, stage_settings(s, quick, overrides))
            for s in check_stages(names, overrides.get("tokenizer"))]


def first_line(model: nn.Module, corpus: Corpus, chars: int = SAMPLE_CHARS) -> str:
    """The first non-empty line the model writes from the lecture's start token, with the showcase's fixed seed:
    the same for a model reused or just trained, and every stage drawn alike, so the text compares down the table."""
    ids = sampling.showcase(model, [sampling.START_TOKEN], chars)
    lines = [line.strip() for line in corpus.tokenizer.decode(ids).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _result(stage: StagePlan, corpus: Corpus, model: nn.Module, seconds: float, reused: bool) -> StageResult:
    preset, stored = stages.get(stage.stage), record.read_record(stage.run)
    full = split_loss(model, corpus.val.to(next(model.parameters()).device), stage.plan.config.block_size,
                      corpus.tokenizer)
    sample = first_line(model, corpus)
    _remember(stored, full.loss, full.bits_per_char, sample)
    return StageResult(stage.stage, stage.run, preset.adds, stored.parameters or 0, stored.last_val, full.loss,
                       full.bits_per_char, preset.published_val, seconds, sample, reused, stage.plan.config.eval_iters)


def _measured(stored: record.RunRecord) -> Optional[tuple[float, float, str]]:
    """The full val (per token and in bits per character) and the sample line measured when this very checkpoint
    was last toured, if they were."""
    try:
        body = json.loads((record.run_dir(stored.name) / MEASURED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(body, dict) or body.get("record") != stored.digest:  # trained since, or not ours
        return None
    full, bits, sample = body.get("full_val"), body.get("full_bpc"), body.get("sample")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (full, bits))
    return (float(full), float(bits), sample) if numbers and isinstance(sample, str) else None


def _remember(stored: record.RunRecord, full: float, bits: float, sample: str) -> None:
    """Keep a stage's measurements beside its checkpoint, so that a later tour reuses it without measuring again.

    They are tied to the record's digest: any later save makes them stale. A run
    folder that cannot be written to only costs the next tour a measurement.
    """
    body = json.dumps({"record": stored.digest, "full_val": full, "full_bpc": bits, "sample": sample}).encode()
    with contextlib.suppress(OSError):
        atomic.write_bytes(record.run_dir(stored.name) / MEASURED, body)


def _reused(stage: StagePlan, corpus: Corpus) -> StageResult:
    """A finished stage: its remembered measurements, or its last weights measured now, in its own tokens (and
    remembered)."""
    stored = record.read_record(stage.run)
    measured = _measured(stored)
    if measured is None:
        loaded = checkpoint.load(stage.run, stage.plan.device.device, weights="last")  # as it ended
        return _result(stage, core.tokenized(stage.plan, corpus), loaded.model, loaded.record.wall_time, reused=True)
    preset = stages.get(stage.stage)
    return StageResult(stage.stage, stage.run, preset.adds, stored.parameters or 0, stored.last_val, measured[0],
                       measured[1], preset.published_val, stored.wall_time, measured[2], True,
                       stage.plan.config.eval_iters)


def tour(plans: Sequence[StagePlan], corpus: Corpus,
         should_stop: Callable[[], bool] = lambda: False) -> Iterator[Event]:
    """Train (or reuse, or resume) each planned stage in turn, yielding its training events and then its result.

    ``should_stop`` stops the stage in training at the end of its step, with its
    checkpoint (as in ``train``), or the tour before its next stage; either way
    the last event is a :class:`StageInterrupted`.
    """
    for index, stage in enumerate(plans):
        if should_stop():
            yield StageInterrupted(stage.stage, stage.run, stage.plan.start_step,
                                   stage.plan.start_step if stage.plan.resume is not None else None)
            return
        yield StageStarted(index, len(plans), stage.stage, stage.run, stage.action, stage.plan.config)
        if stage.action == "reuse":
            yield _reused(stage, corpus)
            continue
        tokenized = core.tokenized(stage.plan, corpus)  # a BPE stage reads the text in its own tokens
        finished = None
        for event in core.train(stage.plan, tokenized, should_stop=should_stop):
            yield StageProgress(stage.stage, event)
            if isinstance(event, core.Interrupted):
                yield StageInterrupted(stage.stage, stage.run, event.step, event.saved_step)
                return
            if isinstance(event, core.Finished):
                finished = event
        assert finished is not None  # the core always ends with Finished or Interrupted
        yield _result(stage, tokenized, finished.model, finished.elapsed, reused=False)


__all__ = ["DEFAULT_STAGES", "DEFAULT_PREFIX", "StagePlan", "StageStarted", "StageProgress", "StageResult",
           "StageInterrupted", "check_stages", "stage_settings", "plan_stage", "plan_tour", "tour", "first_line"]
