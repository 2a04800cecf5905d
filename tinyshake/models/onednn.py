"""Linear layers through oneDNN on a CPU: the same float32 products, up to twice as fast.

PyTorch hands float32 matrix products on a CPU to MKL. On AMD processors MKL
runs its AVX2 code, at about half the speed the chip can give; oneDNN, which
ships inside PyTorch too, runs AVX-512 there. Measured on this project's 2-core
AMD EPYC: a (512 x 64) @ (64 x 256) product takes 81 µs through MKL and 46 µs
through oneDNN, and a 2048-cube one runs at 217 against 473 GFLOP/s.

PyTorch reaches oneDNN for dense float32 tensors only through an operator that
has no gradient, so :class:`_OneDNNLinear` supplies one, from oneDNN products
as well. Anything else (GPUs, autocast, other dtypes, products too small to
gain, PyTorch builds without the operator, or ``TINYSHAKE_ONEDNN=0`` in the
environment) takes ``F.linear`` unchanged.

Whether oneDNN wins depends on the CPU: on an AMD EPYC without AVX-512
(Zen 3), and on Intel Sapphire Rapids, MKL is the faster one. So the route is
not a rule: :mod:`tinyshake.training.tuning` measures both on the machine that runs and
calls :func:`use` with the winner; ``TINYSHAKE_ONEDNN=1`` or ``0`` forces it.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch
from torch.nn import functional as F

MIN_FLOPS = 1 << 23  # below about 8 MFLOP the two libraries take the same time (measured)
ENV = "TINYSHAKE_ONEDNN"
MISSING = f"{ENV}=0, or no oneDNN in this build"  # why the layers take the default BLAS without a measurement


def forced() -> Optional[bool]:
    """``TINYSHAKE_ONEDNN=1`` or ``0`` in the environment: the user's choice, which no measurement overrides."""
    value = os.environ.get(ENV)
    return None if value not in ("0", "1") else value == "1"


def _find_operator() -> Optional[Any]:
    """The oneDNN linear operator, if this build has one that gives ``F.linear``'s result on a trial product."""
    if forced() is False:
        return None
    try:
        operator = torch.ops.mkldnn._linear_pointwise
        x, weight = torch.linspace(-1, 1, 24).view(4, 6), torch.linspace(1, -1, 18).view(3, 6)
        if not torch.allclose(operator(x, weight, None, "none", [], ""), F.linear(x, weight), atol=1e-6):
            return None
    except (AttributeError, RuntimeError):  # a build without oneDNN, or one whose operator takes other arguments
        return None
    return operator


_LINEAR = _find_operator()
_enabled = True  # until tuning has measured: oneDNN, as before there was a measurement


def use(enabled: bool) -> None:
    """Send float32 layers through oneDNN (where :func:`available`) or through the default BLAS."""
    global _enabled
    _enabled = enabled


def enabled() -> bool:
    """Whether float32 layers go through oneDNN now."""
    return available() and _enabled


def _product(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """x @ weightᵀ + bias, by oneDNN, over the last dimension of ``x``."""
    return _LINEAR(x, weight, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """One autograd node per layer, whatever the input's rank: reshapes happen inside, out of the graph."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _product(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()  # an expanded gradient (of a .sum(), say) has stride 0: oneDNN took 100x longer
        needs_x, needs_weight, needs_bias = ctx.needs_input_grad
        grads, inputs = grad.reshape(-1, grad.shape[-1]), x.reshape(-1, x.shape[-1])
        grad_x = _product(grad, weight.t(), None) if needs_x else None
        grad_weight = None
        if needs_weight:  # gradᵀ @ x, the smaller side as oneDNN's rows: up to 1.7x faster than the other way
            if weight.shape[0] <= weight.shape[1]:
                grad_weight = _product(grads.t(), inputs.t(), None)
            else:
                grad_weight = _product(inputs.t(), grads.t(), None).t()
        return grad_x, grad_weight, grads.sum(0) if ctx.has_bias and needs_bias else None


def available() -> bool:
    """Whether this PyTorch build has the oneDNN linear operator."""
    return _LINEAR is not None


def usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``linear`` would take oneDNN for these operands."""
    return (
        enabled()
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and 2 * (x.numel() // x.shape[-1]) * weight.numel() >= MIN_FLOPS
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, through oneDNN where that is faster."""
    if not usable(x, weight):
        return F.linear(x, weight, bias)
    return through_onednn(x, weight, bias)


def through_onednn(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.linear`` by oneDNN whatever the route chosen: what :mod:`tinyshake.training.tuning` times against the BLAS."""
    return _OneDNNLinear.apply(x, weight, bias)
