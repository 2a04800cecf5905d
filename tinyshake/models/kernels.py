"""Check, on the spot, that the device's fused attention applies dropout as the lecture does.

The lecture drops attention weights with ``nn.Dropout``: each weight is zeroed
with probability ``p``, the rest scaled by ``1/(1-p)``, and backward uses the
same mask. :func:`tinyshake.models.speed.attend` hands this to
``F.scaled_dot_product_attention``, whose kernel depends on the device, dtype
and PyTorch build; a kernel that keeps the wrong fraction, or whose backward
draws another mask, regularises less than the lecture and the gpt stage
overfits. So training measures the kernel it is about to use, with the run's
own head count, head size, block size and dtype, and falls back to the unfused
(math) attention when the kernel is off.

The probe needs no access to the kernel's mask. With zero queries and keys
every causal row ``i`` attends uniformly to its ``i + 1`` positions, and with
values of one its output is ``kept_i / ((i + 1)(1 - p))``: a scaled binomial
count. Its mean is 1 whatever the kernel drops, if it rescales consistently,
and ``(i + 1)(out_i - 1)²`` has mean ``p / (1 - p)``, which gives the drop rate.
With a random upstream gradient ``r_i`` per row, the value gradient sums to
``Σ r_i · out_i`` exactly when backward reuses the forward's mask.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from tinyshake.models import speed

MIN_ROWS = 32_768  # attention rows sampled: the drop rate's standard error stays near 0.0015 at p = 0.2
RATE_TOLERANCE = 0.01  # over 6 standard errors, yet below a kernel that rounds p to sixteenths
SEED = 0  # the probe's own stream, so it measures the same every time
MASK_TOLERANCE = 0.25  # gap² over its fresh-mask variance: rounding gives under 0.05, another mask about 1

Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float, bool], torch.Tensor]


@dataclass(frozen=True)
class DropoutCheck:
    """What the kernel did: the fraction of attention weights it dropped, and whether backward agreed."""

    requested: float
    dropped: float  # estimated from the spread of the outputs
    mean: float  # 1 when kept weights are rescaled by 1 / (1 - dropped)
    mask_gap: float  # near 0 when backward reuses the forward's mask, near 1 when it draws another

    @property
    def same_mask(self) -> bool:
        """Whether backward reused the forward's dropout mask, as autograd through ``nn.Dropout`` does."""
        return self.mask_gap <= MASK_TOLERANCE

    @property
    def ok(self) -> bool:
        return not self.problem

    @property
    def problem(self) -> str:
        """What is wrong, in words for the run's notice; empty when the kernel does what the lecture does."""
        if abs(self.dropped - self.requested) > RATE_TOLERANCE:
            return f"drops about {self.dropped:.1%} of attention weights instead of {self.requested:.0%}"
        if abs(self.mean - 1.0) > RATE_TOLERANCE:
            return f"rescales the kept attention weights wrongly (mean output {self.mean:.3f} instead of 1)"
        if not self.same_mask:
            return "uses another dropout mask in backward than in forward"
        return ""

    def describe(self, where: str) -> str:
        problem = self.problem
        return f"fused attention on {where} {problem}; using unfused attention while training, as the lecture does"


def check_attention_dropout(p: float, n_head: int, head_size: int, block_size: int, device: torch.device,
                            dtype: torch.dtype = torch.float32, attend: Attend | None = None) -> DropoutCheck:
    """Run ``attend`` once, forward and backward, at the run's shapes, and measure its dropout.

    It runs on forked random streams, so the run draws the same numbers as if
    the check had not happened. ``attend`` defaults to the model's own
    :func:`tinyshake.models.speed.attend`.
    """
    attend = attend or speed.attend
    T = block_size
    batch = -(-MIN_ROWS // (n_head * T))
    shape = (batch, n_head, T, head_size)
    accelerator = [device] if device.type != "cpu" else []
    with torch.random.fork_rng(devices=accelerator, device_type=device.type if accelerator else "cuda"):
        torch.manual_seed(SEED)
        # all three require grad, as in training: some devices pick their kernel by that
        queries, keys = (torch.zeros(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(2))
        ones = torch.ones(shape, device=device, dtype=dtype, requires_grad=True)
        upstream = torch.randn(batch, n_head, T, 1, device=device).to(dtype).float()
        with torch.enable_grad():
            out = attend(queries, keys, ones, p, True)
            (out.float() * upstream).sum().backward()
    row = out.detach()[..., 0].float()  # (B, H, T): kept_i / ((i + 1)(1 - p))
    positions = torch.arange(1, T + 1, device=device, dtype=torch.float32)
    odds = ((row - 1.0).square() * positions).mean().item()  # estimates p / (1 - p)
    forward_total = (row * upstream[..., 0]).sum(dim=-1)
    backward_total = ones.grad[..., 0].float().sum(dim=-1)  # type: ignore[index]
    # had backward drawn a fresh mask, the gap of each (item, head) would have this variance
    fresh_mask_var = (upstream[..., 0].square() * (2 * p / ((1 - p) * positions))).sum(dim=-1).clamp_min(1e-12)
    mismatch = ((forward_total - backward_total).square() / fresh_mask_var).mean().item()
    return DropoutCheck(requested=p, dropped=odds / (1.0 + odds), mean=row.mean().item(), mask_gap=mismatch)


def unfused_attention() -> ContextManager[None]:
    """Route ``scaled_dot_product_attention`` to its math form: softmax, then ordinary dropout, then @ v."""
    return sdpa_kernel([SDPBackend.MATH])


def training_attention(p: float, n_head: int, head_size: int, block_size: int, device: torch.device,
                       dtype: torch.dtype, notices: list[str]) -> Callable[[], ContextManager[None]]:
    """The context to run training forward passes in: as is, or unfused where the fused kernel's dropout is off."""
    if p == 0.0:
        return contextlib.nullcontext
    check = check_attention_dropout(p, n_head, head_size, block_size, device, dtype)
    if check.ok:
        return contextlib.nullcontext
    notices.append(check.describe(str(device)))
    return unfused_attention
