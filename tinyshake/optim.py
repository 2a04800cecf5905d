"""Beyond the lecture's constant-rate AdamW: Muon for hidden matrices, and a warmup/warmdown schedule.

Used by the ``modern`` preset, which is tuned to learn the most per second on a CPU.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn

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


def lr_factor(progress: float, warmup: float, warmdown: float) -> float:
    """Learning-rate multiplier at ``progress`` in [0, 1]: linear warmup, flat, then a linear warmdown to 0 at 1."""
    if warmup > 0 and progress < warmup:
        return progress / warmup
    if warmdown > 0 and progress > 1 - warmdown:
        return max(0.0, (1 - progress) / warmdown)
    return 1.0


def split_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Hidden matrices (attention and feed-forward weights inside the blocks) for Muon; the rest for AdamW."""
    hidden, other = [], []
    for name, p in model.named_parameters():
        (hidden if name.startswith("blocks.") and p.ndim >= 2 else other).append(p)
    return hidden, other


def flatten_(model: nn.Module) -> nn.Parameter:
    """Make every parameter of ``model`` a view into one flat tensor, and every gradient a view into another.

    AdamW's update is elementwise, so one step over the flat tensor computes
    exactly (bit for bit) what per-parameter steps compute, without paying a
    round of small kernels for each of the model's many little tensors. The
    gradients must then be zeroed in place, never set to None, or backward
    would make new ones outside the flat buffer.
    """
    params = list(model.parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    grad = torch.zeros_like(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.data = flat[offset:offset + n].view_as(p)
        p.grad = grad[offset:offset + n].view_as(p)
        offset += n
    whole = nn.Parameter(flat)
    whole.grad = grad
    return whole


class Combined:
    """Several optimizers stepped as one, so the training loop and checkpoints need not know how many there are.

    ``grads_in_place`` is for optimizers over flattened parameters (:func:`flatten_`):
    their gradients are zeroed where they are instead of being dropped.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer], grads_in_place: bool = False) -> None:
        self.optimizers = optimizers
        self.grads_in_place = grads_in_place
        for group in self.param_groups:
            group.setdefault("initial_lr", group["lr"])

    @property
    def param_groups(self) -> list[dict]:
        return [group for opt in self.optimizers for group in opt.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none and not self.grads_in_place)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def scale_lr(self, factor: float) -> None:
        """Set every group's rate to its initial rate times ``factor`` (the schedule's multiplier)."""
        for group in self.param_groups:
            group["lr"] = group["initial_lr"] * factor

    def state_dict(self) -> dict:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        """Load saved states, keeping each group's kernel choice (``fused``) for this device, not the saver's."""
        saved = state["optimizers"]
        if len(saved) != len(self.optimizers):
            raise ValueError(f"{len(saved)} optimizer states for {len(self.optimizers)} optimizers")
        for opt, opt_state in zip(self.optimizers, saved):
            kernels = [group.get("fused") for group in opt.param_groups]
            opt.load_state_dict(opt_state)
            for group, fused in zip(opt.param_groups, kernels):
                group["fused"] = fused


def make(model: nn.Module, kind: str, lr: float, muon_lr: float) -> Combined:
    """The lecture's AdamW over every parameter, or Muon for hidden matrices with AdamW for the rest.

    The lecture's AdamW steps one flat tensor with PyTorch's fused kernel where
    there is one (CPU and CUDA): one pass over memory instead of a dozen. That is
    bit for bit a fused per-parameter AdamW, and within float rounding (about
    1e-7 after 40 steps) of the lecture's loop over parameters.
    """
    if kind == "adamw":
        flat = flatten_(model)
        return Combined([torch.optim.AdamW([flat], lr=lr, fused=_fused_on(flat.device))], grads_in_place=True)
    hidden, other = split_params(model)
    adamw = torch.optim.AdamW(other, lr=lr, betas=(0.9, 0.95), fused=_fused_on(other[0].device))
    return Combined([Muon(hidden, lr=muon_lr), adamw])


def _fused_on(device: torch.device) -> bool | None:
    """PyTorch's one-pass AdamW kernel where it exists for the device; None lets PyTorch choose elsewhere."""
    return True if device.type in ("cpu", "cuda") else None
