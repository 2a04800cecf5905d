"""``tinyshake inspect`` and its core: what a trained model's numbers are, checked against plain recomputations."""

from __future__ import annotations

import math

import pytest
import torch

from tinyshake import inspection
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
