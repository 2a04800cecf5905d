"""The attention-dropout probe: it passes the real kernel, catches kernels that drop otherwise, and training obeys it."""

from __future__ import annotations

import contextlib
import re

import pytest
import torch
import torch.nn.functional as F

from test_train import TINY, import_tiny_corpus
from tinyshake import corpus
from tinyshake.models import kernels, speed
from tinyshake.training import train

CPU = torch.device("cpu")


def attend_dropping(share: float, rescale_by: float | None = None) -> kernels.Attend:
    """A kernel that drops ``share`` of the weights whatever it is asked, rescaling by 1/(1 - ``rescale_by``)."""
    def attend(q, k, v, p, causal):
        out = speed.attend(q, k, v, share, causal)
        return out if rescale_by is None else out * (1 - share) / (1 - rescale_by)
    return attend


class FreshMaskInBackward(torch.autograd.Function):
    """Causal attention with dropout whose backward draws a new mask: the fault the probe's gradient test looks for."""

    @staticmethod
    def forward(ctx, q, k, v, p):
        T = q.shape[-2]
        weights = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).masked_fill(
            torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf")).softmax(dim=-1)
        ctx.save_for_backward(weights)
        ctx.p = p
        return F.dropout(weights, p) @ v

    @staticmethod
    def backward(ctx, grad_out):
        (weights,) = ctx.saved_tensors
        return None, None, F.dropout(weights, ctx.p).transpose(-2, -1) @ grad_out, None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("p, n_head, head_size, block_size", [(0.2, 6, 64, 256), (0.2, 4, 16, 32), (0.1, 1, 32, 8),
                                                              (0.5, 2, 8, 64)])
def test_the_real_kernel_passes_and_its_measured_rate_is_the_requested_one(p, n_head, head_size, block_size, dtype):
    check = kernels.check_attention_dropout(p, n_head, head_size, block_size, CPU, dtype)
    assert check.ok, check
    assert abs(check.dropped - p) < 0.006 and abs(check.mean - 1) < 0.006 and check.same_mask


@pytest.mark.parametrize("share, words", [(0.05, "about 5.0% of attention weights instead of 20%"),
                                          (3 / 16, "about 18.7%"), (0.0, "about 0.0%")])
def test_a_kernel_that_drops_another_share_is_caught(share, words):
    check = kernels.check_attention_dropout(0.2, 6, 64, 256, CPU, attend=attend_dropping(share))
    assert not check.ok and words in check.problem
    assert check.describe("cuda:0") == (f"fused attention on cuda:0 {check.problem}; "
                                        "using unfused attention while training, as the lecture does")


def test_a_kernel_that_rescales_wrongly_is_caught():
    """It drops the right share but rescales as if it dropped none: the mean output falls to 0.8."""
    check = kernels.check_attention_dropout(0.2, 4, 16, 32, CPU, attend=attend_dropping(0.2, rescale_by=0.0))
    assert not check.ok and check.mean == pytest.approx(0.8, abs=0.01)


def test_a_backward_that_draws_another_mask_is_caught():
    def attend(q, k, v, p, causal):
        return FreshMaskInBackward.apply(q, k, v, p)

    check = kernels.check_attention_dropout(0.2, 4, 16, 32, CPU, attend=attend)
    assert abs(check.dropped - 0.2) < 0.01  # the forward is right
    assert not check.same_mask and check.problem == "uses another dropout mask in backward than in forward"


def test_the_probe_leaves_the_random_stream_where_it_was():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    kernels.check_attention_dropout(0.2, 4, 16, 32, CPU)
    assert torch.equal(torch.rand(3), expected)


def test_no_dropout_needs_no_probe(monkeypatch):
    monkeypatch.setattr(kernels, "check_attention_dropout", lambda *a, **k: pytest.fail("probed without dropout"))
    notices: list[str] = []
    assert kernels.training_attention(0.0, 4, 16, 32, CPU, torch.float32, notices) is contextlib.nullcontext
    assert notices == []


def test_the_probe_calls_the_kernel_as_training_does():
    """Queries, keys and values all require grad, at the run's head count, head size, context and dtype."""
    seen = []

    def attend(q, k, v, p, causal):
        seen.append((q.requires_grad, k.requires_grad, v.requires_grad, q.shape[1:], q.dtype, causal))
        return speed.attend(q, k, v, p, causal)

    kernels.check_attention_dropout(0.2, 6, 64, 256, CPU, torch.bfloat16, attend=attend)
    assert seen == [(True, True, True, torch.Size([6, 256, 64]), torch.bfloat16, True)]


def _train(data: corpus.Corpus, run: str, **settings) -> tuple[list[str], dict[str, torch.Tensor]]:
    """A tiny run with dropout 0.2: its notices and its final weights."""
    settings = dict(TINY, max_iters=6, eval_interval=3, dropout=0.2, **settings)
    config = train.with_vocab(train.make_config("mini", run=run, **settings), data.tokenizer.vocab_size)
    events = list(train.train(config, data))
    notices = [n for e in events if isinstance(e, train.Started) for n in e.notices]
    final = [e for e in events if isinstance(e, train.Finished)][0].model
    return notices, {k: v.clone() for k, v in final.state_dict().items()}


def test_training_with_a_faulty_kernel_says_so_once_and_trains_with_unfused_attention(tmp_path, monkeypatch):
    """The faulty kernel under-drops unless the math backend is forced; every training step must force it."""
    import_tiny_corpus(tmp_path)
    data = corpus.load("tiny")
    _, healthy = _train(data, "healthy")
    real, drops_in_training = speed.attend, []

    def faulty(q, k, v, p, causal, future=None, scale=None):
        unfused = not torch.backends.cuda.flash_sdp_enabled()  # sdpa_kernel([MATH]) switches the others off
        if p > 0 and torch.is_grad_enabled() and q.shape[0] == TINY["batch_size"]:
            drops_in_training.append(p if unfused else p / 4)
        return real(q, k, v, p if unfused else p / 4, causal, future, scale)

    monkeypatch.setattr(speed, "attend", faulty)
    notices, fallback = _train(data, "fallback")
    assert len(notices) == 1 and re.search(r"^fused attention on cpu drops about [45]\.\d% .* instead of 20%", notices[0])
    assert drops_in_training == [0.2] * 6 * TINY["n_layer"]  # 6 steps, every layer at the requested rate
    # the math path is the fused one's arithmetic on this CPU, and the probe drew from its own stream
    assert all(torch.equal(healthy[k], fallback[k]) for k in healthy)


def test_compiling_traces_under_the_unfused_attention_too(tmp_path, monkeypatch):
    """A compiled graph keeps the kernel it was traced with, so the compile probe must run under the fallback."""
    import_tiny_corpus(tmp_path)
    data = corpus.load("tiny")
    real, fused_while_tracing = speed.attend, []
    monkeypatch.setattr(speed, "attend", lambda q, k, v, p, causal, future=None, scale=None: real(
        q, k, v, p if not torch.backends.cuda.flash_sdp_enabled() else p / 4, causal, future, scale))

    class RecordingCompile(torch.nn.Module):  # stands in for the module torch.compile returns
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, *args):
            fused_while_tracing.append(torch.backends.cuda.flash_sdp_enabled())
            return self.net(*args)

    monkeypatch.setattr(torch, "compile", RecordingCompile)
    notices, _ = _train(data, "compiled", compile=True)
    assert len(notices) == 1 and "unfused attention" in notices[0]
    assert fused_while_tracing[0] is False
