"""The fast models against the lecture-style reference: same weights from the same seed, same losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from typer.testing import CliRunner

from lecture_reference import RefModel, RefMultiHead, ref_estimate_loss
from tinyshake import corpus, model, train
from tinyshake.cli import app
from tinyshake.model import Head, ModelConfig, MultiHeadAttention, attend, build, future_mask

VOCAB = 65
SMALL_STAGES = ["head", "multihead", "ffwd", "blocks", "residual", "layernorm", "mini"]


def stage_config(stage: str) -> ModelConfig:
    return train.make_config(stage, VOCAB).model


def seeded_pair(config: ModelConfig, stage: str) -> tuple[torch.nn.Module, RefModel]:
    """Our model and the reference, each built right after ``torch.manual_seed(1337)``."""
    torch.manual_seed(1337)
    ours = build(config)
    torch.manual_seed(1337)
    ref = RefModel(stage, config.vocab_size, config.block_size, config.n_embd, config.n_head, config.n_layer,
                   config.dropout)
    return ours, ref


def per_head_parameters(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Our parameters in order, each fused ``qkv`` split back into the lecture's key, query, value per head."""
    out = []
    for name, param in model.named_parameters():
        if name.endswith(".qkv"):
            out += [(f"{name}[{h}].{kind}", param[h, j]) for h in range(param.shape[0])
                    for j, kind in enumerate(("key", "query", "value"))]
        else:
            out.append((name, param))
    return out


@pytest.mark.parametrize("stage", SMALL_STAGES + ["gpt", "gpt-video"])
def test_parameters_equal_the_lecture_code_in_order(stage: str) -> None:
    ours, ref = seeded_pair(stage_config(stage), stage)
    mine = per_head_parameters(ours)
    theirs = list(ref.named_parameters())
    assert [tuple(p.shape) for _, p in mine] == [tuple(p.shape) for _, p in theirs]
    for (name, p), (ref_name, q) in zip(mine, theirs):
        assert torch.equal(p, q), f"{name} differs from the reference's {ref_name}"
    # the random stream is left where the lecture's code leaves it, so training draws the same batches
    assert torch.equal(torch.rand(4), _reference_stream_after(stage))


def _reference_stream_after(stage: str) -> torch.Tensor:
    """The next random numbers after building the reference model from seed 1337."""
    config = stage_config(stage)
    torch.manual_seed(1337)
    RefModel(stage, VOCAB, config.block_size, config.n_embd, config.n_head, config.n_layer, config.dropout)
    return torch.rand(4)


@pytest.fixture
def splits(cached) -> dict[str, torch.Tensor]:
    data = corpus.load()
    return {"train": data.train, "val": data.val}


@pytest.mark.parametrize("chunk_tokens", [1 << 30, 1000], ids=["one-chunk", "many-chunks"])
@pytest.mark.parametrize("stage", SMALL_STAGES)
def test_step0_losses_equal_the_lecture_estimate(stage, chunk_tokens, splits, monkeypatch) -> None:
    monkeypatch.setattr(train, "EVAL_CHUNK_TOKENS", chunk_tokens)
    config = train.make_config(stage, VOCAB)
    ours, ref = seeded_pair(config.model, stage)
    eval_iters = 40  # one chunk at the default size; with 1000-token chunks, several and a partial last one
    torch.manual_seed(1337)
    fast = train.estimate_loss(ours, splits, config.batch_size, config.block_size, eval_iters)
    torch.manual_seed(1337)
    slow = ref_estimate_loss(ref, splits["train"], splits["val"], config.batch_size, config.block_size, eval_iters)
    for split in ("train", "val"):
        assert f"{fast[split]:.4f}" == f"{slow[split]:.4f}"
        assert fast[split] == pytest.approx(slow[split], abs=1e-5)
    assert ours.training, "estimate_loss must put the model back in training mode"


# The gpt stage shrunk to a CPU's size; the video's code prints this line at these settings with seed 1337.
SHRUNK_GPT = dict(batch_size=16, block_size=32, n_embd=64, n_head=4, n_layer=4, learning_rate=1e-3)
VIDEO_STEP0 = "step 0: train loss 4.4116, val loss 4.4022"


def test_gpt_video_step0_is_the_videos_code_and_differs_from_the_repositorys(splits) -> None:
    config = train.make_config("gpt-video", VOCAB, **SHRUNK_GPT)
    assert config.model.dropout == 0.2 and config.model.init_std is None
    lines = {}
    for stage in ("gpt-video", "gpt"):  # the same settings with today's scaling and init must not print it
        torch.manual_seed(1337)
        ref = RefModel(stage, VOCAB, config.block_size, config.model.n_embd, config.model.n_head,
                       config.model.n_layer, config.model.dropout)
        losses = ref_estimate_loss(ref, splits["train"], splits["val"], config.batch_size, config.block_size, 200)
        lines[stage] = f"step 0: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
    assert lines["gpt-video"] == VIDEO_STEP0 and lines["gpt"] != VIDEO_STEP0
    args = ["train", "--model", "gpt-video", "--device", "cpu", "--batch-size", "16", "--block-size", "32",
            "--n-embd", "64", "--n-head", "4", "--n-layer", "4", "--lr", "1e-3", "--max-iters", "1",
            "--sample-chars", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout == VIDEO_STEP0 + "\n"


def test_scores_scaled_by_the_width_are_the_video_heads() -> None:
    """attn_scale="n_embd" multiplies the scores by C**-0.5, as the video's Head does, in both attention routes."""
    config = ModelConfig(n_embd=32, n_head=4, block_size=8, attn_scale="n_embd")
    torch.manual_seed(0)
    fused = MultiHeadAttention(config)
    torch.manual_seed(0)
    ref = RefMultiHead(config.n_head, config.head_size, config.n_embd, config.block_size, False, 0.0, by_width=True)
    for h, head in enumerate(ref.heads):  # drawn in the same order from the same seed
        for j, linear in enumerate((head.key, head.query, head.value)):
            assert torch.equal(fused.qkv[h, j], linear.weight)
    x = torch.randn(2, 8, config.n_embd)
    torch.testing.assert_close(fused(x), ref(x), atol=1e-6, rtol=0)
    q, k, v = (torch.randn(2, 4, 8, 8) for _ in range(3))
    long = attend(q, k, v, 0.0, True, None, scale=32 ** -0.5)  # the fused kernel's route, as on a GPU
    torch.testing.assert_close(long, F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=32 ** -0.5))
    assert not torch.allclose(long, attend(q, k, v, 0.0, True, None))


@pytest.mark.parametrize("T", [8, 5], ids=["full-block", "shorter"])
def test_fused_attention_equals_concatenated_lecture_heads(T: int) -> None:
    config = ModelConfig(n_embd=32, n_head=4, block_size=8)
    torch.manual_seed(0)
    fused = MultiHeadAttention(config)
    heads = []
    for h in range(config.n_head):
        head = Head(config.n_embd, config.head_size, config.block_size)
        with torch.no_grad():
            for j, linear in enumerate((head.key, head.query, head.value)):
                linear.weight.copy_(fused.qkv[h, j])
        heads.append(head)
    x = torch.randn(3, T, config.n_embd)
    expected = torch.cat([head(x) for head in heads], dim=-1)
    got = fused(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_fused_weights_are_drawn_as_the_lecture_draws_its_heads() -> None:
    config = ModelConfig(n_embd=16, n_head=2, block_size=4)
    torch.manual_seed(7)
    fused = MultiHeadAttention(config)
    torch.manual_seed(7)
    heads = [Head(config.n_embd, config.head_size, config.block_size) for _ in range(config.n_head)]
    for h, head in enumerate(heads):
        for j, linear in enumerate((head.key, head.query, head.value)):
            assert torch.equal(fused.qkv[h, j], linear.weight)


def test_attention_beyond_the_kept_mask_builds_its_own():
    """A context longer than the layer's stored mask (a long prompt) gets a fresh mask, with the same result."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 12, 8) for _ in range(3))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    for future in (None, future_mask(4), future_mask(12), future_mask(20)):
        torch.testing.assert_close(attend(q, k, v, 0.0, True, future), expected)


def _value_and_grads(fn, *inputs: torch.Tensor) -> list[torch.Tensor]:
    """fn(*inputs), then the gradients of its product with a fixed random upstream, for each input that needs one."""
    leaves = [t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
    out = fn(*leaves)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)))
    return [out.detach()] + [t.grad for t in leaves if t.requires_grad]


@pytest.mark.parametrize("shape, weighted", [((4, 8, 128), True), ((4, 2, 8, 32), False)])
def test_rms_norm_equals_pytorchs_in_value_and_gradient(shape: tuple[int, ...], weighted: bool) -> None:
    """The modern preset's RMSNorm and QK-norm: tinyshake's closed-form backward against autograd through F.rms_norm."""
    torch.manual_seed(0)
    x = (3 * torch.randn(shape)).requires_grad_()
    inputs = [x, (1 + 0.2 * torch.randn(shape[-1])).requires_grad_()] if weighted else [x]
    ours = _value_and_grads(lambda x, *w: model.rms_norm(x, *w), *inputs)
    theirs = _value_and_grads(lambda x, *w: F.rms_norm(x, (shape[-1],), *w), *inputs)
    assert len(ours) == len(theirs) == len(inputs) + 1
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_rms_norm_module_keeps_nn_rmsnorms_parameter_and_eps() -> None:
    """Checkpoints of modern runs load as before: one ``weight``, PyTorch's default eps, the same output."""
    torch.manual_seed(0)
    ours, theirs = model.RMSNorm(16), torch.nn.RMSNorm(16)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
    x = torch.randn(3, 5, 16)
    torch.testing.assert_close(ours(x), theirs(x))


def test_relu_squared_equals_autograds_chain_bit_for_bit() -> None:
    """The fused ReLU² gives exactly relu(x).square() and its gradient, zeros included."""
    torch.manual_seed(0)
    x = torch.randn(64, 96).requires_grad_()
    ours = _value_and_grads(model.ReLUSquared(), x)
    theirs = _value_and_grads(lambda x: F.relu(x).square(), x)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    assert (ours[1][x.detach() <= 0] == 0).all()
