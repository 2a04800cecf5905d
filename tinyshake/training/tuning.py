"""The fastest routes on this machine, measured once and cached, instead of rules tuned on another CPU.

Two choices depend on the CPU more than on anything else:

- float32 linear layers through oneDNN or through PyTorch's default BLAS (MKL).
  oneDNN ran twice as fast on an AMD EPYC with AVX-512; MKL wins on an AMD EPYC
  without it and on Intel Sapphire Rapids.
- the context length up to which the lecture's batched matmuls beat the fused
  ``scaled_dot_product_attention`` kernel (128 on the first AMD EPYC).

A third figure is this machine's speed: the time of one forward and backward
of the ``modern`` preset's model, which ``train --time-budget`` sizes its model
by (:mod:`tinyshake.training.sizing`).

Both routes are timed forward and backward, at the shapes of the ``mini`` and
``modern`` presets, in well under two seconds: the two candidates take turns,
and the margin is the median of the ratios of each turn, so a burst of load from
another program slows one pair and moves the median little. The
result is cached as JSON in the cache folder, keyed by the CPU model, the torch
version and the thread count, so each machine measures once; ``tinyshake bench
--retune`` measures again. A damaged cache is measured again and replaced. A measurement
during which other programs took CPU from its threads is used for that run but not cached.
The measurement draws from its own random generator, so runs are unchanged.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import torch
from torch.nn import functional as F

from tinyshake.models import onednn, speed
from tinyshake.models.model import ModelConfig
from tinyshake.store import atomic, paths, values
from tinyshake.training import machine, stages
from tinyshake.errors import TinyshakeError
from tinyshake.training.threads import SLACK, allowed_cpus, others_during

CACHE_VERSION = 2  # 2: with the modern step's time
TRIALS = 5  # interleaved trials per comparison, after one warm-up call of each candidate
MIN_TRIALS = 3  # fewer than this, the median is no better than one noisy trial
TRIAL_BUDGET = 0.06  # seconds per comparison after which it stops at MIN_TRIALS: on a busy machine ~1.5 s in all
# (rows, fan_in, fan_out) of the float32 layers big enough for oneDNN (onednn.MIN_FLOPS), per preset
LINEAR_SHAPES = {
    "mini": [(512, 64, 192), (512, 256, 64)],  # attention's projection in, the feed-forward's projection out
    "modern": [(1024, 128, 384), (1024, 512, 128)],  # half modern's 2048 rows: the same kernels, half the wait
}
ATTENTION_CONTEXTS = (8, 32, 64, 128, 256)  # the presets' block sizes, and one between
ATTENTION_TOKENS = 512  # batch x context at each length: the mini preset's batch
ATTENTION_HEADS, ATTENTION_HEAD_SIZE = 4, 32
STEP_RANGE = (1e-4, 1e3)  # seconds: a cached modern step outside this was not measured by any machine


@dataclass(frozen=True)
class Routes:
    """What the model uses on this machine, and the measurements behind it."""

    onednn: bool
    small_attention: int  # the longest context that takes batched matmuls; longer ones take the fused kernel
    linear_margin: dict[str, float] = field(default_factory=dict)  # per preset: BLAS time / oneDNN time
    attention_margin: dict[str, float] = field(default_factory=dict)  # per context: fused time / batched time
    measured: str = ""  # when (UTC)
    source: str = "measured now"  # or "cached", or why a route was forced
    crowded: float = 0.0  # cores' worth that other programs took from the measurement's threads while it ran
    modern_step: float = 0.0  # seconds of one forward and backward of the modern preset (0: not measured)

    @property
    def trusted(self) -> bool:
        """Whether the measurement ran undisturbed enough to be kept for this machine (see :func:`choose`)."""
        return self.crowded <= SLACK

    def describe_linear(self) -> str:
        if not self.linear_margin and not onednn.available():
            return f"float32 layers through the default BLAS ({onednn.MISSING})"
        route = "oneDNN" if self.onednn else "the default BLAS"
        margins = ", ".join(f"{name} {m:.2f}x" for name, m in self.linear_margin.items())
        measured = f"; the BLAS's time over oneDNN's: {margins}" if margins else ""
        return f"float32 layers through {route} ({self.source}{measured})"

    def describe_attention(self) -> str:
        margins = ", ".join(f"{t}: {m:.2f}x" for t, m in self.attention_margin.items())
        where = (f"batched matmuls up to {self.small_attention} positions, the fused kernel beyond"
                 if self.small_attention else "the fused kernel at every context length")
        return where + (f" (its time over the batched matmuls', by context: {margins})" if margins else "")


def cache_file() -> Path:
    return paths.cache_root() / "tuning.json"


def machine_key(threads: int) -> str:
    """What the measurement depends on: the CPU, the torch build and the thread count."""
    return f"{machine.cpu_model()} | torch {torch.__version__} | {threads} threads"


# --------------------------------------------------------------------------- measuring


def margin(candidate: Callable[[], None], other: Callable[[], None]) -> float:
    """How many times longer ``other`` takes than ``candidate``: above 1, ``candidate`` is faster.

    The two take turns (after one warm-up call each) and each turn gives a
    ratio; the median of those ratios is what counts, since load that arrives in
    the middle of a turn slows both of that turn's calls alike, and a turn that
    it hits harder is outvoted. It stops after :data:`TRIALS` turns, or after
    :data:`MIN_TRIALS` once :data:`TRIAL_BUDGET` seconds have gone.
    """
    candidate()
    other()
    ratios: list[float] = []
    start = time.perf_counter()
    while len(ratios) < TRIALS and (len(ratios) < MIN_TRIALS or time.perf_counter() - start < TRIAL_BUDGET):
        first = time.perf_counter()
        candidate()
        second = time.perf_counter()
        other()
        ratios.append((time.perf_counter() - second) / max(second - first, 1e-9))
    return statistics.median(ratios)


def _layers_step(shapes: list[tuple[int, int, int]], generator: torch.Generator,
                 product: Callable[..., torch.Tensor]) -> Callable[[], None]:
    """Forward and backward through one layer of each shape, by ``product``."""
    operands = [(torch.randn(rows, fan_in, generator=generator).requires_grad_(),
                 torch.randn(fan_out, fan_in, generator=generator).requires_grad_(),
                 torch.randn(fan_out, generator=generator).requires_grad_(),
                 torch.randn(rows, fan_out, generator=generator)) for rows, fan_in, fan_out in shapes]

    def run() -> None:
        for x, weight, bias, upstream in operands:
            product(x, weight, bias).backward(upstream)
    return run


def measure_linear(generator: torch.Generator) -> dict[str, float]:
    """Per preset, the default BLAS's time over oneDNN's for its layers: above 1, oneDNN is faster."""
    return {name: margin(_layers_step(shapes, generator, onednn.through_onednn),
                         _layers_step(shapes, generator, F.linear))
            for name, shapes in LINEAR_SHAPES.items()}


def _attention_step(context: int, generator: torch.Generator, fused: bool) -> Callable[[], None]:
    shape = (max(1, ATTENTION_TOKENS // context), ATTENTION_HEADS, context, ATTENTION_HEAD_SIZE)
    q, k, v = (torch.randn(shape, generator=generator).requires_grad_() for _ in range(3))
    upstream = torch.randn(shape, generator=generator)
    future = speed.future_mask(context)

    def run() -> None:
        if fused:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=q.size(-1) ** -0.5)
        else:
            out = speed.batched_attention(q, k, v, 0.0, True, future, q.size(-1) ** -0.5)
        out.backward(upstream)
    return run


def measure_attention(generator: torch.Generator) -> dict[int, float]:
    """Per context length, the fused kernel's time over the batched matmuls': above 1, batched is faster."""
    return {context: margin(_attention_step(context, generator, fused=False),
                            _attention_step(context, generator, fused=True))
            for context in ATTENTION_CONTEXTS}


def measure_modern_step(seed: int = 0) -> float:
    """Seconds of one forward and backward of the ``modern`` preset's model on its batch, in the dtype it trains in
    here: the median of five, after a warm-up. The model is drawn from a random stream of its own."""
    stage = stages.get("modern")
    config = ModelConfig(vocab_size=65, block_size=stage.block_size, **stage.model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = speed.build(config)
        idx = torch.randint(0, config.vocab_size, (stage.batch_size, stage.block_size))
    bf16 = machine.native_bf16()  # modern's dtype "auto" on a CPU

    def step() -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            _, loss = model(idx, idx)
        loss.backward()
        return time.perf_counter() - start
    step()
    return statistics.median(step() for _ in range(5))


def _timed_on_routes(use_onednn: bool, longest_small: int) -> float:
    """:func:`measure_modern_step` on the routes just measured, leaving the process's routes as they were."""
    before = onednn.enabled(), speed.SMALL_ATTENTION
    apply(Routes(onednn=use_onednn, small_attention=longest_small))
    try:
        return measure_modern_step()
    finally:
        onednn.use(before[0])
        speed.SMALL_ATTENTION = before[1]


def small_attention(margins: dict[int, float]) -> int:
    """The longest context up to which batched matmuls won at every length measured (0: the fused kernel always)."""
    longest = 0
    for context in sorted(margins):
        if margins[context] <= 1.0:
            break
        longest = context
    return longest


def measure(threads: int) -> Routes:
    """Time both routes here, now, on ``threads`` threads (about a second), on a generator of its own.

    It also notes how much CPU other programs took meanwhile beyond the cores
    the measurement leaves free: a ratio timed while another program held one
    of its cores says more about that program than about the routes.
    """
    generator = torch.Generator().manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    cpus, found = allowed_cpus(), []
    try:
        others = others_during(cpus, lambda: found.extend(
            [measure_linear(generator) if onednn.available() else {}, measure_attention(generator)])) or 0.0
        linear, attention = found
        wins = bool(linear) and statistics.geometric_mean(linear.values()) > 1.0  # oneDNN wins over the presets
        shortest = small_attention(attention)
        stepping = others_during(cpus, lambda: found.append(_timed_on_routes(wins, shortest)))
        others = max(others, stepping or 0.0)
    finally:
        torch.set_num_threads(before)
    return Routes(onednn=wins, small_attention=shortest, modern_step=round(found[2], 5),
                  linear_margin={k: round(v, 3) for k, v in linear.items()},
                  attention_margin={str(k): round(v, 3) for k, v in attention.items()},  # type: ignore[misc]
                  measured=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                  crowded=round(max(0.0, others - max(0, len(cpus) - threads)), 2))


# --------------------------------------------------------------------------- the cache


def _read_cache() -> dict[str, dict]:
    """The cached entries by machine key; a missing, unreadable or damaged file reads as empty."""
    try:
        data = json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    entries = data.get("entries") if isinstance(data, dict) and data.get("version") == CACHE_VERSION else None
    return entries if isinstance(entries, dict) else {}


def _from_entry(entry: object) -> Optional[Routes]:
    """The routes an entry of the cache holds, or None where any field is not what :func:`measure` writes.

    The file is the user's to edit or damage: anything else is measured again,
    never trusted into a division or a format string.
    """
    if not isinstance(entry, dict):
        return None
    try:
        routes = Routes(**dict(entry, source="cached"))
    except TypeError:
        return None
    margins = (routes.linear_margin, routes.attention_margin)
    ok = isinstance(routes.onednn, bool) and values.count(routes.small_attention) and isinstance(routes.measured, str)
    ok = ok and all(isinstance(m, dict) and all(_ratio(v) for v in m.values()) for m in margins)
    ok = ok and values.number(routes.crowded) and routes.crowded >= 0
    ok = ok and values.number(routes.modern_step) and STEP_RANGE[0] <= routes.modern_step <= STEP_RANGE[1]
    return routes if ok else None


def _ratio(value: object) -> bool:
    return values.number(value) and value > 0  # type: ignore[operator]


def _write_cache(entries: dict[str, dict]) -> None:
    text = json.dumps({"version": CACHE_VERSION, "entries": entries}, indent=2) + "\n"
    atomic.write_bytes(cache_file(), text.encode())


_measured: dict[str, Routes] = {}  # this process's own measurements: a cache folder that vanished costs no second look


def choose(threads: int, retune: bool = False) -> Routes:
    """This machine's routes: cached for ``threads`` threads, else (or with ``retune``) measured and cached."""
    key = machine_key(threads)
    entries = _read_cache()
    stored = None if retune else _from_entry(entries.get(key))
    if stored is not None:
        return stored
    routes = _measured[key] if key in _measured and not retune else measure(threads)
    _measured[key] = routes
    if not routes.trusted:  # used for this run, and measured again by the next one
        return replace(routes, source=f"measured now while other programs took {routes.crowded:.1f} of its cores; "
                                      "not cached")
    entry = asdict(routes)
    entry.pop("source")
    entries[key] = entry
    try:
        _write_cache(entries)
    except TinyshakeError:  # a read-only cache folder: measure again next time, run now
        pass
    return routes


def forced(routes: Routes) -> Routes:
    """``routes`` with the user's TINYSHAKE_ONEDNN, if set, in place of the measured winner."""
    choice = onednn.forced()
    if choice is None:
        return routes
    return replace(routes, onednn=choice and onednn.available(), source=f"forced by {onednn.ENV}={int(choice)}")


def apply(routes: Routes) -> None:
    """Make the model take these routes in this process."""
    onednn.use(routes.onednn)
    speed.SMALL_ATTENTION = routes.small_attention


def decide(threads: int, retune: bool = False) -> Routes:
    """This machine's routes for ``threads`` threads, with the user's TINYSHAKE_ONEDNN over the measurement."""
    return forced(choose(threads, retune))


def cached(threads: int) -> Optional[Routes]:
    """The routes cached for ``threads`` threads, or None: what ``tinyshake info`` shows, without measuring."""
    routes = _from_entry(_read_cache().get(machine_key(threads)))
    return forced(routes) if routes is not None else None


def tune(threads: int, retune: bool = False) -> Routes:
    """Choose this machine's routes for ``threads`` threads and use them: what train and bench call."""
    routes = decide(threads, retune)
    apply(routes)
    return routes


__all__ = ["Routes", "apply", "cache_file", "cached", "choose", "decide", "forced", "machine_key", "measure",
           "small_attention", "tune"]
