"""Beyond the lecture: the ``modern`` preset's pieces, written as plainly as the lecture's own.

What the small-GPT speedruns found learns more per second than the lecture's
2022 recipe, each a small change to one of :mod:`tinyshake.models.model`'s classes:

- rotary positions (RoPE) in each head instead of a position table;
- RMSNorm instead of LayerNorm, and QK-norm on each head's queries and keys;
- ReLU² instead of ReLU in the feed-forward;
- the projections back into the residual stream start at zero;
- Muon for the hidden matrices (AdamW for the rest), with a warmup and a linear warmdown.

:mod:`tinyshake.models.speed` swaps RMSNorm and ReLU² for versions with a cheaper backward.
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch
import torch.nn as nn
from torch.nn import functional as F


def rotary(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """Rotate channel pairs of q or k (..., T, hs) by angles proportional to their absolute positions (T,).

    Dot products of rotated vectors depend only on the distance between positions,
    so attention needs no position table, and a cache of rotated keys stays valid
    as the window slides.
    """
    cos, sin = rotary_tables(positions, x.size(-1) // 2, base)
    return rotate(x, cos.to(x.dtype), sin.to(x.dtype))


def rotary_tables(positions: torch.Tensor, half: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (T, half) of each position's angle for each channel pair, in float32."""
    inv_freq = base ** (-torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # (T, half)
    return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (..., T, 2·half) with channel i paired with channel i + half, each pair turned by its angle."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class QueryKeyTransform(nn.Module):
    """What a modern head does to its queries and keys before the scores: QK-norm, then rotary positions.

    With neither switched on (every lecture stage) it hands q and k back untouched.
    """

    def __init__(self, qk_norm: bool, rope_base: Optional[float]) -> None:
        super().__init__()
        self.qk_norm, self.rope_base = qk_norm, rope_base

    def forward(self, q: torch.Tensor, k: torch.Tensor, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """q and k are (..., T, hs) for positions ``start`` to ``start + T - 1``."""
        if self.qk_norm:
            q, k = self.normalize(q), self.normalize(k)
        if self.rope_base is not None:
            positions = torch.arange(start, start + q.size(-2), device=q.device)
            q, k = rotary(q, positions, self.rope_base), rotary(k, positions, self.rope_base)
        return q, k

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """RMS-normalise each query or key, with no gain: their dot products stay in a fixed range."""
        return F.rms_norm(x, (x.size(-1),))

    def extra_repr(self) -> str:
        return f"qk_norm={self.qk_norm}, rope_base={self.rope_base}"


RMSNorm = nn.RMSNorm  # x / rms(x) · weight: LayerNorm without centring or bias


class ReLUSquared(nn.Module):
    """relu(x)²: as cheap as ReLU and, in small fast-trained models, better than GELU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x).square()


def zero_init_projections(model: nn.Module) -> None:
    """Start every block as the identity: the output projections of attention and feed-forward at zero."""
    with torch.no_grad():
        for block in model.blocks:
            feed_forward = getattr(block.ffwd, "net", ())[2:3]  # the wide feed-forward's projection back
            for layer in (block.sa.proj, *feed_forward):
                if isinstance(layer, nn.Linear):
                    layer.weight.zero_()


# --------------------------------------------------------------------------- Muon and the schedule

# The quintic Newton-Schulz coefficients published with Muon: they push every singular value towards 1 quickly.
NS_COEFFS = (3.4445, -4.7750, 2.0315)


def orthogonalize(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately replace each matrix in ``g`` (..., rows, cols) by the nearest semi-orthogonal one (U Vᵀ).

    An update with all singular values equal moves every direction of the matrix
    at the same rate, which is what makes Muon learn faster than Adam here.
    """
    a, b, c = NS_COEFFS
    x = g.reshape(-1, *g.shape[-2:])  # a batch of matrices, so every product below is one baddbmm
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT
    for _ in range(steps):  # x ← a·x + (b·G + c·G²)·x with G = x xᵀ, the scalings folded into the products
        gram = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return (x.mT if tall else x).reshape(g.shape)


class Muon(torch.optim.Optimizer):
    """SGD with Nesterov momentum whose update is orthogonalised, for 2-D (or stacked 2-D) weights only."""

    def __init__(self, params: Iterable[nn.Parameter], lr: float = 0.02, momentum: float = 0.95,
                 ns_steps: int = 5) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, ns_steps=ns_steps))

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        """One update; matrices of one shape (the same layer in every block) are orthogonalised as one batch.

        Each matrix is still orthogonalised on its own, as in a loop over the
        parameters; the batch only turns a dozen small products into one.
        """
        for group in self.param_groups:
            alike: dict[tuple[int, int], list[tuple[nn.Parameter, torch.Tensor]]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(p.grad)
                matrices = p.grad.add(buf, alpha=group["momentum"]).reshape(-1, *p.shape[-2:])
                wide = matrices if matrices.size(-2) <= matrices.size(-1) else matrices.mT
                alike.setdefault(tuple(wide.shape[-2:]), []).append((p, wide))
            for batch in alike.values():
                updates = orthogonalize(torch.cat([wide for _, wide in batch]), group["ns_steps"])
                for (p, _), update in zip(batch, updates.split([len(wide) for _, wide in batch])):
                    rows, cols = p.shape[-2:]
                    update = update if rows <= cols else update.mT
                    p.add_(update.reshape(p.shape), alpha=-group["lr"] * max(1.0, rows / cols) ** 0.5)


def split_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Hidden matrices (attention and feed-forward weights inside the blocks) for Muon; the rest for AdamW."""
    hidden, other = [], []
    for name, p in model.named_parameters():
        (hidden if name.startswith("blocks.") and p.ndim >= 2 else other).append(p)
    return hidden, other


def lr_factor(progress: float, warmup: float, warmdown: float) -> float:
    """Learning-rate multiplier at ``progress`` in [0, 1]: linear warmup, flat, then a linear warmdown to 0 at 1."""
    if warmup > 0 and progress < warmup:
        return progress / warmup
    if warmdown > 0 and progress > 1 - warmdown:
        return max(0.0, (1 - progress) / warmdown)
    return 1.0
