"""The optimizers a run steps: the lecture's AdamW, as written or flat and fused, or Muon with AdamW.

``--plain`` gets the lecture's ``torch.optim.AdamW(model.parameters(), lr)``.
Otherwise AdamW steps every parameter as one flat tensor with PyTorch's fused
kernel (part of the speed layer, beside :mod:`tinyshake.models.speed`), and the
``modern`` preset steps its hidden matrices with Muon (:mod:`tinyshake.models.modern`).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from tinyshake.models.modern import Muon, split_params


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


def make(model: nn.Module, kind: str, lr: float, muon_lr: float, plain: bool = False) -> Combined:
    """The lecture's AdamW over every parameter, or Muon for hidden matrices with AdamW for the rest.

    Unless ``plain``, the lecture's AdamW steps one flat tensor with PyTorch's
    fused kernel where there is one (CPU and CUDA): one pass over memory instead
    of a dozen. That is bit for bit a fused per-parameter AdamW, and within
    float rounding (about 1e-7 after 40 steps) of the lecture's loop over parameters.
    """
    if kind == "adamw" and plain:
        return Combined([torch.optim.AdamW(model.parameters(), lr=lr)])
    if kind == "adamw":
        flat = flatten_(model)
        return Combined([torch.optim.AdamW([flat], lr=lr, fused=_fused_on(flat.device))], grads_in_place=True)
    hidden, other = split_params(model)
    fused = None if plain else _fused_on(other[0].device)
    adamw = torch.optim.AdamW(other, lr=lr, betas=(0.9, 0.95), fused=fused)
    return Combined([Muon(hidden, lr=muon_lr), adamw])


def _fused_on(device: torch.device) -> bool | None:
    """PyTorch's one-pass AdamW kernel where it exists for the device; None lets PyTorch choose elsewhere."""
    return True if device.type in ("cpu", "cuda") else None
