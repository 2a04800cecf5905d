"""``tinyshake inspect`` and its core: what a trained model's numbers are, checked against plain recomputations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import safetensors.torch
import torch

from tinyshake import checkpoint, inspection
from tinyshake.errors import UsageError
from tinyshake.corpus import CharTokenizer
from tinyshake.model import ModelConfig, build

VOCAB = CharTokenizer(list("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))  # tiny Shakespeare's


def tiny(**model: object) -> torch.nn.Module:
    """A small random model over the 65 characters (seeded, so every test sees the same one)."""
    torch.manual_seed(3)
    settings = dict(vocab_size=VOCAB.vocab_size, block_size=8, n_embd=16, n_head=2, n_layer=2)
    settings.update(model)
    return build(ModelConfig(**settings))


@pytest.mark.parametrize("arch", ["bigram", "gpt"])
def test_next_distribution_is_the_softmax_of_the_last_logits(arch: str) -> None:
    model = tiny(arch=arch)
    prompt = "To be, or not to be"  # longer than the block: only its last 8 characters count
    dist = inspection.next_distribution(model, VOCAB, prompt)
    with torch.no_grad():
        logits, _ = model(torch.tensor([VOCAB.encode(prompt[-8:])]))
    expected = torch.softmax(logits[0, -1], dim=-1)
    assert sorted(c for c, _ in dist) == sorted(VOCAB.chars)
    assert [p for _, p in dist] == sorted((p for _, p in dist), reverse=True)
    for char, p in dist:
        assert p == pytest.approx(float(expected[VOCAB.stoi[char]]), abs=1e-6)
    assert sum(p for _, p in dist) == pytest.approx(1.0, abs=1e-5)


def test_an_empty_prompt_asks_for_the_first_character_after_the_start_token() -> None:
    model = tiny()
    assert inspection.next_distribution(model, VOCAB, "") == inspection.next_distribution(model, VOCAB, "\n")


def test_entropy_in_bits() -> None:
    assert inspection.entropy_bits([1.0, 0.0]) == 0.0
    assert inspection.entropy_bits([0.5, 0.5]) == pytest.approx(1.0)
    assert inspection.entropy_bits([("a", 1 / 65)] * 65) == pytest.approx(math.log2(65))


# -- attention: the captured weights against a plain per-head recomputation from the saved weights ----------


def save_run(name: str, model: torch.nn.Module, stage: str = "test") -> None:
    """Store ``model`` as a trained run, as training would (a record, weights, a training state)."""
    record = {"name": name, "stage": stage, "model": model.config.to_dict(), "hyper": {}, "vocab": VOCAB.chars,
              "step": 1, "metrics": []}
    state = {"step": 1, "optimizer": {}, "rng": checkpoint.rng_state()}
    checkpoint.save(name, model, record, state)


def saved_weights(name: str) -> dict[str, torch.Tensor]:
    record = checkpoint.read_record(name)
    return safetensors.torch.load_file(checkpoint.run_dir(name) / record["files"]["weights"])


def norm(x: torch.Tensor, w: dict[str, torch.Tensor], key: str, config: ModelConfig) -> torch.Tensor:
    if not config.layernorm:
        return x
    if config.norm == "rmsnorm":
        return x / (x.square().mean(-1, keepdim=True) + torch.finfo(x.dtype).eps).sqrt() * w[f"{key}.weight"]
    mean, var = x.mean(-1, keepdim=True), x.var(-1, keepdim=True, unbiased=False)
    return (x - mean) / (var + 1e-5).sqrt() * w[f"{key}.weight"] + w[f"{key}.bias"]


def rotate(x: torch.Tensor, base: float) -> torch.Tensor:
    """Rotary positions for one head (T, hs): channel i and i + hs/2 turn by position * base^(-i / (hs/2))."""
    half = x.shape[-1] // 2
    angle = torch.arange(x.shape[0])[:, None].float() * base ** (-torch.arange(half).float() / half)
    a, b = x[:, :half], x[:, half:]
    return torch.cat([a * angle.cos() - b * angle.sin(), a * angle.sin() + b * angle.cos()], dim=-1)


def plain_attention(w: dict[str, torch.Tensor], config: ModelConfig, ids: list[int]) -> list[list[torch.Tensor]]:
    """The weights of every layer and head, head by head, written out from the state dict."""
    T, hs = len(ids), config.head_size
    x = w["token_embedding_table.weight"][ids]
    if config.pos == "learned":
        x = x + w["position_embedding_table.weight"][:T]
    future = torch.ones(T, T).triu(1).bool()
    result = []
    for layer in range(config.n_layer):
        p = f"blocks.{layer}."
        h = norm(x, w, p + "ln1", config)
        heads, outputs = [], []
        for head in range(config.n_head):
            wk, wq, wv = w[p + "sa.qkv"][head]
            k, q, v = h @ wk.T, h @ wq.T, h @ wv.T
            if config.qk_norm:
                q = q / (q.square().mean(-1, keepdim=True) + torch.finfo(q.dtype).eps).sqrt()
                k = k / (k.square().mean(-1, keepdim=True) + torch.finfo(k.dtype).eps).sqrt()
            if config.pos == "rope":
                q, k = rotate(q, config.rope_base), rotate(k, config.rope_base)
            wei = (q @ k.T / math.sqrt(hs)).masked_fill(future, float("-inf")).softmax(-1)
            heads.append(wei)
            outputs.append(wei @ v)
        result.append(heads)
        a = torch.cat(outputs, dim=-1)
        if config.proj:
            a = a @ w[p + "sa.proj.weight"].T + w[p + "sa.proj.bias"]
        x = x + a if config.residual else a
        if config.ffwd != "none":
            f = norm(x, w, p + "ln2", config) @ w[p + "ffwd.net.0.weight"].T + w[p + "ffwd.net.0.bias"]
            f = f.relu().square() if config.activation == "relu2" else f.relu()
            if config.ffwd == "wide":
                f = f @ w[p + "ffwd.net.2.weight"].T + w[p + "ffwd.net.2.bias"]
            x = x + f if config.residual else f
    return result


LADDER = {
    "multihead": dict(n_layer=1),
    "blocks": dict(n_layer=2, ffwd="simple"),
    "layernorm": dict(ffwd="wide", proj=True, residual=True, layernorm=True),
    "modern": dict(ffwd="wide", proj=True, residual=True, layernorm=True, norm="rmsnorm", activation="relu2",
                   qk_norm=True, pos="rope", init_std=0.2),
}


@pytest.mark.parametrize("stage", list(LADDER))
def test_attention_maps_equal_a_plain_recomputation_from_the_saved_weights(stage: str) -> None:
    save_run("r", tiny(**LADDER[stage]))
    loaded = checkpoint.load("r")
    prompt = "Now is the winter of our discontent"
    maps = inspection.attention_maps(loaded.model, loaded.tokenizer, prompt)
    ids = VOCAB.encode(prompt)[-8:]
    assert maps.tokens == list(prompt[-8:])
    expected = plain_attention(saved_weights("r"), loaded.config, ids)
    assert maps.weights.shape == (loaded.config.n_layer, 2, 8, 8)
    for layer, heads in enumerate(expected):
        for head, wei in enumerate(heads):
            assert torch.allclose(maps.weights[layer, head], wei, atol=1e-5), (layer, head)
    assert torch.allclose(maps.weights.sum(-1), torch.ones(loaded.config.n_layer, 2, 8), atol=1e-5)
    assert bool((maps.weights.triu(1) == 0).all())
    assert not bool((maps.weights.tril(-1) == 0).all())  # the weights below the diagonal are really there


def test_attention_leaves_the_model_as_it_was() -> None:
    model = tiny()
    model.train()
    inspection.attention_maps(model, VOCAB, "abc")
    assert model.training and all(block.sa.captured is None for block in model.blocks)
    x = torch.tensor([VOCAB.encode("abc")])
    assert torch.equal(model(x)[0], model(x)[0])


def test_a_bigram_has_no_attention() -> None:
    with pytest.raises(inspection.NoAttention, match="bigram"):
        inspection.attention_maps(tiny(arch="bigram"), VOCAB, "abc")


# -- embeddings ----------------------------------------------------------------------------------------


def independent_pca(table: torch.Tensor) -> torch.Tensor:
    """Two principal components by an eigendecomposition of the covariance (not an SVD), signs fixed the same way."""
    data = table.double().numpy()
    centred = data - data.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred)
    points = centred @ vectors[:, np.argsort(values)[::-1][:2]]
    for axis in range(2):
        points[:, axis] *= np.sign(points[np.abs(points[:, axis]).argmax(), axis])
    return torch.from_numpy(points).float()


def test_embedding_projection_is_pca_with_fixed_signs() -> None:
    model = tiny(n_embd=32)
    table = inspection.embedding_table(model)
    projection = inspection.project(table, VOCAB.chars)
    assert torch.allclose(projection.points, independent_pca(table), atol=1e-4)
    mirrored = inspection.project(-table, VOCAB.chars)  # the same cloud through the origin: the same picture
    assert torch.allclose(mirrored.points, projection.points, atol=1e-5)
    assert torch.equal(inspection.project(table, VOCAB.chars).points, projection.points)
    assert 0 < projection.explained[1] <= projection.explained[0] < 1


def test_nearest_neighbours_by_cosine_similarity() -> None:
    table = torch.zeros(4, 2)
    table[0], table[1], table[2], table[3] = torch.tensor([1.0, 0]), torch.tensor([2.0, 0.1]), \
        torch.tensor([0, 1.0]), torch.tensor([-1.0, 0])
    found = inspection.nearest(table, list("abcd"), "a", count=3)
    assert [c for c, _ in found] == ["b", "c", "d"]
    assert found[0][1] == pytest.approx(2 / math.sqrt(4.01)) and found[2][1] == pytest.approx(-1.0)
    with pytest.raises(UsageError, match="not in the vocabulary"):
        inspection.nearest(table, list("abcd"), "z")
