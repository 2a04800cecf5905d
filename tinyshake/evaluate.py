"""The loss over a whole split: every position once, in order, with no randomness.

Training reports the lecture's estimate (random batches), which is noisy and
depends on the seed. ``tinyshake eval`` needs a number to compare runs by, so
it cuts the split into consecutive windows of ``block_size`` and scores every
target token exactly once. It is shown as the "full val loss", so that it
is never taken for training's estimate, and in bits per character over the
characters those targets stand for, so that char and BPE runs compare.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from typing import TYPE_CHECKING, Callable, Optional

import torch
import torch.nn as nn
from torch.nn import functional as F

from tinyshake.errors import TinyshakeError, UsageError
from tinyshake.units import bits_per_char
from tinyshake.store.record import CheckpointError
from tinyshake.tokens import Tokenizer

if TYPE_CHECKING:
    from tinyshake.checkpoint import LoadedRun
    from tinyshake.corpus import Corpus

WINDOWS_PER_PASS = 256


class NonFiniteLoss(TinyshakeError):
    """The model's loss is NaN or infinite: its weights have diverged. A failure (exit 1), never a score."""


@dataclass(frozen=True)
class SplitLoss:
    """The mean loss per target token, how many targets there were and how many characters they stand for."""

    loss: float
    positions: int
    characters: int

    @property
    def bits_per_char(self) -> float:
        return bits_per_char(self.loss, self.characters / self.positions)


@torch.inference_mode()
def split_loss(model: nn.Module, data: torch.Tensor, block_size: int, tokenizer: Tokenizer,
               progress: Optional[Callable[[int, int], None]] = None) -> SplitLoss:
    """Mean next-token cross-entropy over all ``len(data) - 1`` targets of ``data`` (ids of ``tokenizer``).

    ``progress`` is told the positions scored so far and their total after each
    pass, since a whole split takes seconds (a front end shows a bar).
    """
    if len(data) < 2:
        raise UsageError("the split is too short to score (it needs at least two tokens)")
    was_training = model.training
    model.eval()
    try:
        total, count = _summed_loss(model, data, block_size, progress or (lambda done, total: None))
    finally:
        model.train(was_training)
    lengths = torch.tensor([len(text) for text in tokenizer.tokens], dtype=torch.long)
    return SplitLoss(total / count, count, int(lengths[data[1:].cpu()].sum()))


def _summed_loss(model: nn.Module, data: torch.Tensor, block_size: int,
                 progress: Callable[[int, int], None]) -> tuple[float, int]:
    """The summed cross-entropy and the number of targets; a non-finite sum stops at once."""
    device = next(model.parameters()).device
    inputs, targets = data[:-1], data[1:]
    total, count = 0.0, 0
    full = len(inputs) // block_size
    chunks = [(inputs[: full * block_size].view(full, block_size), targets[: full * block_size].view(full, block_size))]
    if len(inputs) % block_size:
        chunks.append((inputs[full * block_size:].unsqueeze(0), targets[full * block_size:].unsqueeze(0)))
    for x_all, y_all in chunks:
        for first in range(0, len(x_all), WINDOWS_PER_PASS):
            x = x_all[first:first + WINDOWS_PER_PASS].to(device)
            y = y_all[first:first + WINDOWS_PER_PASS].to(device)
            logits, _ = model(x)
            losses = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum")
            total += losses.item()
            count += y.numel()
            progress(count, len(targets))
            if not math.isfinite(total):
                raise NonFiniteLoss(f"the loss is {total} by position {count:,}: the weights give non-finite "
                                    "logits (a diverged run); retrain it with a lower --lr")
    return total, count


def corpus_notice(loaded: "LoadedRun", corpus: "Corpus") -> str | None:
    """Whether ``corpus`` is the text the run was trained on: None if so, a one-line notice if not.

    A corpus with other characters cannot be scored (the ids would mean other
    characters): that is refused. Other text with the same characters can be,
    but the user is told which text it is.
    """
    stored = loaded.record.corpus
    if corpus.tokenizer.chars != loaded.tokenizer.chars:
        raise CheckpointError(f"run {loaded.name!r} has another vocabulary than corpus {corpus.name!r}; "
                              "it can only score text with its own characters")
    if stored is None:  # saved by code that records no corpus (not by train)
        return f"run {loaded.name!r} records no corpus; scoring on corpus {corpus.name!r}"
    if corpus.sha256 == stored.sha256:
        return None
    return (f"scoring on corpus {corpus.name!r} (SHA-256 {corpus.sha256[:12]}), not the text run {loaded.name!r} "
            f"was trained on (corpus {stored.name!r}, SHA-256 {stored.sha256[:12]})")
