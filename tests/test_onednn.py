"""Linear layers through oneDNN: the same products and gradients as ``F.linear``, and the same model either way."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from tinyshake.models import model, onednn

needs_onednn = pytest.mark.skipif(not onednn.available(), reason="this PyTorch build has no oneDNN linear")


@pytest.fixture(autouse=True)
def onednn_on(monkeypatch):
    """The route on, whatever a training earlier in this process measured and chose (tuning.apply)."""
    monkeypatch.setattr(onednn, "_enabled", True)


def operands(rows: tuple[int, ...], fan_in: int, fan_out: int, bias: bool) -> list[torch.Tensor]:
    torch.manual_seed(0)
    tensors = [torch.randn(*rows, fan_in), torch.randn(fan_out, fan_in)] + ([torch.randn(fan_out)] if bias else [])
    return [t.requires_grad_() for t in tensors]


@needs_onednn
@pytest.mark.parametrize("rows, fan_in, fan_out", [((512,), 64, 256), ((16, 32), 256, 64), ((4, 64, 32), 128, 384)])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_products_and_gradients_match_f_linear(rows, fan_in, fan_out, bias):
    ours = operands(rows, fan_in, fan_out, bias)
    theirs = operands(rows, fan_in, fan_out, bias)
    assert onednn.usable(ours[0], ours[1])
    out, expected = onednn.linear(*ours), F.linear(*theirs)
    assert out.shape == expected.shape
    assert relative_error(out, expected) < 1e-6
    upstream = torch.randn_like(out)
    out.backward(upstream)
    expected.backward(upstream)
    for a, b in zip(ours, theirs):
        assert relative_error(a.grad, b.grad) < 1e-6  # float32 sums in another order, nothing more


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("why, rows, dtype", [("too small to gain", (8,), torch.float32),
                                              ("float64", (512,), torch.float64)])
def test_other_products_take_f_linear(why, rows, dtype):
    x, w = torch.randn(*rows, 64, dtype=dtype, requires_grad=True), torch.randn(256, 64, dtype=dtype)
    assert not onednn.usable(x, w), why
    out = onednn.linear(x, w)
    assert torch.equal(out, F.linear(x, w)) and "OneDNN" not in type(out.grad_fn).__name__


@needs_onednn
def test_a_frozen_weight_gets_no_gradient_and_the_input_still_does():
    x, w = torch.randn(512, 64, requires_grad=True), torch.randn(256, 64)
    out = onednn.linear(x, w)
    assert "OneDNN" in type(out.grad_fn).__name__
    out.sum().backward()
    assert w.grad is None and relative_error(x.grad, torch.ones(512, 256) @ w) < 1e-6


def test_the_environment_can_turn_onednn_off():
    code = "from tinyshake.models import onednn; print(onednn.available())"
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TINYSHAKE_ONEDNN": "0"},
                            capture_output=True, text=True, check=True)
    assert result.stdout == "False\n"


def test_autocast_takes_f_linear():
    x, w = torch.randn(512, 64), torch.randn(256, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not onednn.usable(x, w)
        assert onednn.linear(x, w).dtype == torch.bfloat16


def test_a_build_without_the_operator_computes_the_same_model(monkeypatch):
    """Where oneDNN is missing, every layer falls back to F.linear and the losses agree."""
    config = model.ModelConfig(vocab_size=65, block_size=32, n_embd=64, n_head=4, n_layer=2, ffwd="wide", proj=True,
                               residual=True, layernorm=True)
    torch.manual_seed(0)
    net = model.build(config)
    idx = torch.randint(65, (16, 33))
    _, with_onednn = net(idx[:, :-1], idx[:, 1:])
    monkeypatch.setattr(onednn, "_LINEAR", None)
    _, without = net(idx[:, :-1], idx[:, 1:])
    torch.testing.assert_close(with_onednn, without, rtol=1e-6, atol=1e-6)
