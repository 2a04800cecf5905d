"""Sampling characters from a trained model, one at a time, with or without a KV cache.

:func:`generate` yields each new token id as soon as it is sampled, so a caller
can stream it. At temperature 1 with no top-k or top-p it performs exactly the
lecture's ``generate`` (softmax of the last logits, then ``torch.multinomial``),
so a seeded run reproduces the lecture's samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.nn as nn
from torch.nn import functional as F

from tinyshake.errors import UsageError
from tinyshake.model import KVCache

OVERFLOW_MODES = ("crop", "refill")


@dataclass
class SamplingSettings:
    """How to pick each next character, and how to keep the context within the block size.

    ``overflow`` decides what happens when the context outgrows ``block_size``:
    ``crop`` is the lecture's semantics (keep the last ``block_size`` characters
    and recompute them every step), ``refill`` is faster (restart the cache from
    the last half-window, then go on one position per step).
    """

    temperature: float = 1.0
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    max_new_tokens: int = 500
    use_cache: bool = True
    overflow: str = "crop"

    def validate(self) -> "SamplingSettings":
        if self.temperature < 0:
            raise UsageError("temperature must be 0 (greedy) or more")
        if self.top_k is not None and self.top_k < 1:
            raise UsageError("top_k must be at least 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise UsageError("top_p must be in (0, 1]")
        if self.max_new_tokens < 0:
            raise UsageError("max_new_tokens must be 0 or more")
        if self.overflow not in OVERFLOW_MODES:
            raise UsageError(f"overflow must be one of {', '.join(OVERFLOW_MODES)}")
        return self


def pick(logits: torch.Tensor, settings: SamplingSettings, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Choose the next token from last-position logits (B, V); returns (B, 1)."""
    if settings.temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    if settings.temperature != 1.0:
        logits = logits / settings.temperature
    if settings.top_k is not None and settings.top_k < logits.size(-1):
        kth = torch.topk(logits, settings.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    if settings.top_p is not None and settings.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs > settings.top_p  # keep the smallest nucleus
        probs = probs.scatter(-1, order, sorted_probs.masked_fill(drop, 0.0))
    return torch.multinomial(probs, num_samples=1, generator=generator)


class _Context:
    """The model's view of the text so far: a growing id tensor and, optionally, a KV cache."""

    def __init__(self, model: nn.Module, ids: torch.Tensor, settings: SamplingSettings) -> None:
        self.model, self.settings = model, settings
        self.block_size: int = model.config.block_size
        self.ids = ids
        self.cache: Optional[KVCache] = None

    def _full(self) -> torch.Tensor:
        """The lecture's way: run the last ``block_size`` ids through the model from scratch."""
        return self.model(self.ids[:, -self.block_size:])[0][:, -1, :]

    def _prefill(self, window: int) -> torch.Tensor:
        self.cache = KVCache(len(getattr(self.model, "blocks", [])))
        return self.model(self.ids[:, -window:], cache=self.cache)[0][:, -1, :]

    def first_logits(self) -> torch.Tensor:
        if not self.settings.use_cache:
            return self._full()
        return self._prefill(self.block_size)

    def next_logits(self, token: torch.Tensor) -> torch.Tensor:
        """Append ``token`` (B, 1) and return the logits for the position after it."""
        self.ids = torch.cat([self.ids, token], dim=1)
        if self.cache is None:
            return self._full()
        if self.cache.pos < self.block_size:
            return self.model(token, cache=self.cache)[0][:, -1, :]
        if self.settings.overflow == "crop":
            self.cache = None  # from here on every step recomputes the cropped window, as the lecture does
            return self._full()
        return self._prefill(max(1, self.block_size // 2))


@torch.inference_mode()
def generate(
    model: nn.Module,
    context: list[int],
    settings: SamplingSettings,
    generator: Optional[torch.Generator] = None,
) -> Iterator[int]:
    """Yield ``settings.max_new_tokens`` sampled ids continuing ``context`` (empty means token 0)."""
    settings.validate()
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        ids = torch.tensor([context or [0]], dtype=torch.long, device=device)
        state = _Context(model, ids, settings)
        if settings.max_new_tokens == 0:
            return
        logits = state.first_logits()
        for i in range(settings.max_new_tokens):
            token = pick(logits, settings, generator)
            yield int(token.item())
            if i + 1 < settings.max_new_tokens:
                logits = state.next_logits(token)
    finally:
        model.train(was_training)
