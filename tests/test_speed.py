"""The speed layer (tinyshake.models.speed) against the lecture's modules it replaces: same state, same numbers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tinyshake import corpus
from tinyshake.models import modern, speed
from tinyshake.training import train
from tinyshake.models.model import Head, LanguageModel, ModelConfig, MultiHeadAttention, build

VOCAB = 65
STAGES = ["bigram", "head", "multihead", "ffwd", "blocks", "residual", "layernorm", "mini", "modern"]


def pair(config: ModelConfig) -> tuple[LanguageModel, LanguageModel]:
    """The lecture's model and a sped-up one, both built from seed 1337."""
    torch.manual_seed(1337)
    plain = build(config)
    torch.manual_seed(1337)
    return plain, speed.apply(build(config))


def lecture_grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter's gradient under the lecture's name: a fused ``qkv`` gradient split back per head."""
    grads = {}
    for name, p in model.named_parameters():
        if name.endswith(".qkv"):
            for h in range(p.shape[0]):
                for j, kind in enumerate(speed.KINDS):
                    grads[f"{name[:-3]}heads.{h}.{kind}.weight"] = p.grad[h, j]
        else:
            grads[name] = p.grad
    return grads


@pytest.mark.parametrize("stage", STAGES)
def test_the_speed_layer_keeps_the_lecture_state_and_computes_the_same_loss_and_gradients(stage: str) -> None:
    config = train.make_config(stage, VOCAB).model
    plain, fast = pair(config)
    assert list(plain.state_dict()) == list(fast.state_dict())
    assert all(torch.equal(v, fast.state_dict()[k]) for k, v in plain.state_dict().items())
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in fast.parameters())
    if stage != "bigram":
        assert not any(isinstance(m, (MultiHeadAttention, Head)) for m in fast.modules())
        assert sum(isinstance(m, speed.FusedMultiHeadAttention) for m in fast.modules()) == config.n_layer
    idx = torch.randint(VOCAB, (4, config.block_size), generator=torch.Generator().manual_seed(0))
    losses = []
    # in float64: in float32 a ReLU input within rounding of 0 can flip, and which one flips depends on the route
    for model in (plain.double(), fast.double()):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], abs=1e-12)
    named = dict(plain.named_parameters())
    for name, grad in lecture_grads(fast).items():
        torch.testing.assert_close(grad, named[name].grad, atol=1e-12, rtol=1e-9)


def test_applying_draws_no_random_number_and_keeps_the_parameter_order() -> None:
    config = train.make_config("mini", VOCAB).model
    torch.manual_seed(1337)
    model = build(config)
    order = [name for name, _ in model.named_parameters()]
    stream = torch.get_rng_state()
    speed.apply(model)
    assert torch.equal(torch.get_rng_state(), stream)
    after = [name for name, _ in model.named_parameters()]
    expected = []  # each layer's heads, key, query and value, become the one qkv in their place
    for name in order:
        fused = name.split(".heads.")[0] + ".qkv" if ".heads." in name else name
        if fused not in expected:
            expected.append(fused)
    assert after == expected


def test_state_dicts_load_both_ways_and_a_wrong_one_is_refused() -> None:
    config = train.make_config("layernorm", VOCAB).model
    torch.manual_seed(1)
    plain = build(config)
    torch.manual_seed(2)
    fast = speed.apply(build(config))
    fast.load_state_dict(plain.state_dict())
    assert all(torch.equal(v, fast.state_dict()[k]) for k, v in plain.state_dict().items())
    torch.manual_seed(3)
    again = build(config)
    again.load_state_dict(fast.state_dict())
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in plain.state_dict().items())
    state = plain.state_dict()
    state.pop("blocks.0.sa.heads.1.query.weight")
    state["blocks.0.sa.heads.9.key.weight"] = torch.zeros(8, 32)
    with pytest.raises(RuntimeError) as refused:
        fast.load_state_dict(state)
    assert "Missing key(s)" in str(refused.value) and "blocks.0.sa.heads.1.query.weight" in str(refused.value)
    assert "Unexpected key(s)" in str(refused.value) and "blocks.0.sa.heads.9.key.weight" in str(refused.value)
    state = plain.state_dict()
    state["blocks.1.sa.heads.0.value.weight"] = torch.zeros(4, 32)
    with pytest.raises(RuntimeError, match="size mismatch for blocks.1.sa.heads.0.value.weight"):
        fast.load_state_dict(state)


@pytest.mark.parametrize("T", [8, 5], ids=["full-block", "shorter"])
@pytest.mark.parametrize("attn_scale", ["head_size", "n_embd"])
def test_fused_attention_equals_the_lecture_heads_concatenated(T: int, attn_scale: str) -> None:
    config = ModelConfig(n_embd=32, n_head=4, block_size=8, proj=True, attn_scale=attn_scale)
    torch.manual_seed(0)
    lecture = MultiHeadAttention(config)
    fused = speed.FusedMultiHeadAttention(lecture)
    for h, head in enumerate(lecture.heads):
        for j, kind in enumerate(speed.KINDS):
            assert torch.equal(fused.qkv[h, j], getattr(head, kind).weight)
    x = torch.randn(3, T, config.n_embd)
    torch.testing.assert_close(fused(x), lecture(x), atol=1e-6, rtol=0)


def test_the_fused_kernel_route_scales_as_asked() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 8, 8) for _ in range(3))
    long = speed.attend(q, k, v, 0.0, True, None, scale=32 ** -0.5)
    torch.testing.assert_close(long, F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=32 ** -0.5))
    assert not torch.allclose(long, speed.attend(q, k, v, 0.0, True, None))


def test_attention_beyond_the_kept_mask_builds_its_own() -> None:
    """A context longer than the layer's stored mask (a long prompt) gets a fresh mask, with the same result."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 12, 8) for _ in range(3))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    for future in (None, speed.future_mask(4), speed.future_mask(12), speed.future_mask(20)):
        torch.testing.assert_close(speed.attend(q, k, v, 0.0, True, future), expected)


def _value_and_grads(fn, *inputs: torch.Tensor) -> list[torch.Tensor]:
    """fn(*inputs), then the gradients of its product with a fixed random upstream, for each input that needs one."""
    leaves = [t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
    out = fn(*leaves)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)))
    return [out.detach()] + [t.grad for t in leaves if t.requires_grad]


@pytest.mark.parametrize("shape, weighted", [((4, 8, 128), True), ((4, 2, 8, 32), False)])
def test_rms_norm_equals_pytorchs_in_value_and_gradient(shape: tuple[int, ...], weighted: bool) -> None:
    """The modern preset's RMSNorm and QK-norm: the closed-form backward against autograd through F.rms_norm."""
    torch.manual_seed(0)
    x = (3 * torch.randn(shape)).requires_grad_()
    inputs = [x, (1 + 0.2 * torch.randn(shape[-1])).requires_grad_()] if weighted else [x]
    ours = _value_and_grads(lambda x, *w: speed.rms_norm(x, *w), *inputs)
    theirs = _value_and_grads(lambda x, *w: F.rms_norm(x, (shape[-1],), *w), *inputs)
    assert len(ours) == len(theirs) == len(inputs) + 1
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_the_fast_norms_keep_the_modern_modules_state_and_output() -> None:
    torch.manual_seed(0)
    theirs = modern.RMSNorm(16)
    ours = speed.apply(torch.nn.Sequential(modern.RMSNorm(16)))[0]
    assert isinstance(ours, speed.FastRMSNorm) and list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
    x = torch.randn(3, 5, 16)
    torch.testing.assert_close(ours(x), theirs(x))
    transform = modern.QueryKeyTransform(qk_norm=True, rope_base=10000.0)
    fast = speed.apply(torch.nn.Sequential(modern.QueryKeyTransform(qk_norm=True, rope_base=10000.0)))[0]
    q, k = torch.randn(2, 4, 8, 16), torch.randn(2, 4, 8, 16)
    for a, b in zip(fast(q, k, 3), transform(q, k, 3)):
        torch.testing.assert_close(a, b)


def test_fast_relu_squared_equals_the_plain_one_bit_for_bit() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 96).requires_grad_()
    ours = _value_and_grads(speed.apply(torch.nn.Sequential(modern.ReLUSquared()))[0], x)
    theirs = _value_and_grads(modern.ReLUSquared(), x)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    assert (ours[1][x.detach() <= 0] == 0).all()


@pytest.fixture
def data(cached) -> corpus.Corpus:
    return corpus.load()


@pytest.mark.parametrize("stage", ["bigram", "mini", "modern"])
def test_plain_and_fast_training_print_the_same_lines(stage: str, data: corpus.Corpus) -> None:
    """``--plain`` trains the lecture's modules and optimizer as written: the same evaluations, to float rounding."""
    shrink = dict(max_iters=30, eval_interval=15, eval_iters=10)
    if stage != "bigram":
        shrink.update(n_layer=2, batch_size=8)
    lines = {}
    for plain in (False, True):
        config = train.with_vocab(train.make_config(stage, run=f"{stage}-{plain}", plain=plain, dtype="float32",
                                                    **shrink), data.tokenizer.vocab_size)
        events = list(train.train(config, data))
        lines[plain] = [(e.step, e.train, e.val) for e in events if isinstance(e, train.Evaluated)]
    assert [step for step, _, _ in lines[True]] == [step for step, _, _ in lines[False]] and len(lines[True]) >= 2
    assert f"{lines[True][0][1]:.4f} {lines[True][0][2]:.4f}" == f"{lines[False][0][1]:.4f} {lines[False][0][2]:.4f}"
    for (_, *fast), (_, *plain) in zip(lines[False], lines[True]):
        assert fast == pytest.approx(plain, abs=2e-4)


def test_the_kept_rotary_tables_follow_the_length_and_serve_training_after_an_evaluation() -> None:
    """The fast transform keeps the last cos/sin tables: another length gets its own, and tables made while
    evaluating under inference mode are never handed to a training step (autograd refuses them)."""
    config = train.make_config("modern", VOCAB).model
    plain, fast = pair(config)
    generator = torch.Generator().manual_seed(0)
    for length in (config.block_size, 5, config.block_size):
        idx = torch.randint(VOCAB, (2, length), generator=generator)
        with torch.inference_mode():
            evaluated = fast(idx)[0]
        torch.testing.assert_close(evaluated, plain(idx)[0].detach())
        _, loss = fast(idx, idx)
        loss.backward()
        assert all(p.grad is not None for p in fast.parameters() if p.requires_grad)
