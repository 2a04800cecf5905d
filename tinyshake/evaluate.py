"""The loss over a whole split: every position once, in order, with no randomness.

Training reports the lecture's estimate (random batches), which is noisy and
depends on the seed. ``tinyshake eval`` needs a number to compare runs by, so
it cuts the split into consecutive windows of ``block_size`` and scores every
target character exactly once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

WINDOWS_PER_PASS = 256


@dataclass(frozen=True)
class SplitLoss:
    loss: float
    positions: int

    @property
    def bits_per_char(self) -> float:
        return self.loss / math.log(2)


@torch.inference_mode()
def split_loss(model: nn.Module, data: torch.Tensor, block_size: int) -> SplitLoss:
    """Mean next-character cross-entropy over all ``len(data) - 1`` targets of ``data``."""
    was_training = model.training
    model.eval()
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
    model.train(was_training)
    return SplitLoss(total / count, count)
