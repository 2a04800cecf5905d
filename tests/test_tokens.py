"""Tokenizers: the lecture's characters and the BPE learned from them, and bits per character on one scale."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from tinyshake import corpus, tokens
from tinyshake.errors import UsageError
from tinyshake.evaluate import split_loss
from tinyshake.units import bits_per_char
from tinyshake.models.model import ModelConfig, build

# The split pattern, for ASCII text: the same pieces as tokens.PATTERN, in Python's own regex dialect.
ASCII_PIECES = re.compile(r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s")


@pytest.fixture(scope="module")
def text(corpus_file: Path) -> str:
    return corpus_file.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def bpe(text: str) -> tokens.BPETokenizer:
    train = text[: corpus.split_point(len(text))]
    return tokens.BPETokenizer.train(train, 300, alphabet=text)


def reference_encode(tokenizer: tokens.BPETokenizer, text: str) -> list[int]:
    """BPE as the sequel lecture applies it, independently: in each piece, merge the earliest-learned pair, repeat."""
    rank = {pair: i for i, pair in enumerate(tokenizer.merges)}
    ids = []
    for piece in ASCII_PIECES.findall(text):
        parts = list(piece)
        while len(parts) > 1:
            pairs = [(rank.get((a, b), math.inf), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            best, where = min(pairs)
            if best == math.inf:
                break
            parts[where: where + 2] = [parts[where] + parts[where + 1]]
        ids += [tokenizer.tokens.index(p) for p in parts]
    return ids


def test_the_bpe_starts_from_the_lectures_characters_and_round_trips_the_corpus(bpe, text):
    chars = tokens.CharTokenizer.from_text(text)
    assert bpe.vocab_size == 300 and bpe.tokens[:65] == chars.chars and bpe.chars == chars.chars
    assert all(len(t) >= 2 for t in bpe.tokens[65:]) and len(set(bpe.tokens)) == 300
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text and max(ids) == 299
    assert len(ids) < len(text) / 1.5  # merges shorten the sequence
    assert tokens.characters(bpe, ids) == len(text)


def test_each_merge_joins_two_earlier_tokens_in_order(bpe):
    for index, (a, b) in enumerate(bpe.merges):
        made = bpe.tokens.index(a + b)
        assert bpe.tokens.index(a) < made and bpe.tokens.index(b) < made and made == 65 + index


def test_encoding_is_the_sequels_merge_rule_applied_independently(bpe, text):
    passage = text[5000:9000]
    assert bpe.encode(passage) == reference_encode(bpe, passage)


def test_the_merges_come_from_the_text_given_only():
    """Trained on one part of a text, the BPE knows the other part's characters but none of its pairs."""
    train, unseen = "the cat sat on the mat; " * 20, "xyxyxy zqzqzq " * 20
    bpe = tokens.BPETokenizer.train(train, 60, alphabet=train + unseen)
    assert {"x", "y", "z", "q"} <= set(bpe.chars)
    assert not any(set(t) & set("xyzq") for t in bpe.tokens[len(bpe.chars):])
    assert bpe.decode(bpe.encode(unseen)) == unseen and len(bpe.encode(unseen)) == len(unseen)
    assert bpe.vocab_size < 60  # it stops when no pair repeats


def test_the_alphabet_alone_is_the_character_tokenizer(text):
    alphabet_only = tokens.BPETokenizer.train("ab ab ab", 3)
    assert alphabet_only.tokens == [" ", "a", "b"] and alphabet_only.merges == []
    assert alphabet_only.encode("ba a") == tokens.CharTokenizer([" ", "a", "b"]).encode("ba a")


@pytest.mark.parametrize("tokenizer", [tokens.CharTokenizer(list("ab ")), tokens.BPETokenizer(list(" ab"), [("a", "b")])])
def test_unknown_characters_are_the_same_one_line_error_for_both(tokenizer):
    with pytest.raises(tokens.UnknownCharacterError) as caught:
        tokenizer.encode("abé ab€é")
    assert caught.value.chars == ["é", "€"] and str(caught.value) == "characters not in the vocabulary: 'é', '€'"
    assert caught.value.exit_code == 2


def test_json_bytes_round_trip_and_damage_is_refused(bpe, text):
    again = tokens.BPETokenizer.from_json(bpe.to_json())
    assert again.tokens == bpe.tokens and again.merges == bpe.merges
    assert again.encode(text[:3000]) == bpe.encode(text[:3000])
    for damaged in (b"\xff", b"[]", b'{"kind": "bpe"}', bpe.to_json().replace(b'"bpe"', b'"char"'),
                    b'{"kind": "bpe", "alphabet": ["a"], "merges": [["a", "b"]], "pattern": "."}'):
        with pytest.raises(tokens.BadTokenizer):
            tokens.BPETokenizer.from_json(damaged)


@pytest.mark.parametrize(("size", "message"), [
    (64, "--vocab-size 64 is below the corpus's 65 characters"),
    (0, "--vocab-size 0 is below"),
    (tokens.MAX_VOCAB + 1, "is absurdly large"),
])
def test_vocab_sizes_outside_the_alphabet_and_the_cap_are_one_line_usage_errors(size, message, text):
    with pytest.raises(UsageError, match=re.escape(message)):
        tokens.BPETokenizer.train(text[:1000], size, alphabet=text)


def test_pieces_cut_the_text_at_its_token_boundaries(bpe):
    line = "To be, or not to be"
    assert "".join(tokens.pieces(bpe, line)) == line
    assert tokens.pieces(bpe, line) == [bpe.tokens[i] for i in bpe.encode(line)]
    assert tokens.pieces(tokens.CharTokenizer(sorted(set(line))), line) == list(line)


# -- bits per character ----------------------------------------------------------------


def test_bits_per_char_is_nats_over_characters_over_ln2():
    assert bits_per_char(math.log(65)) == pytest.approx(math.log2(65))
    # a uniform guess among 512 tokens of 2 characters each: 9 bits a token, 4.5 a character
    assert bits_per_char(math.log(512), 2.0) == pytest.approx(4.5)


def test_a_bpe_corpus_keeps_the_split_of_the_text(cached, text):
    chars = corpus.load()
    train = chars.split_text("train")
    bpe = chars.with_bpe(200)
    assert bpe.tokenizer.merges == tokens.BPETokenizer.train(train, 200, alphabet=text).merges  # from train alone
    assert bpe.tokenizer.decode(bpe.train.tolist()) == train and bpe.tokenizer.decode(bpe.val.tolist()) == text[len(train):]
    assert bpe.chars_per_token("val") == len(text[len(train):]) / len(bpe.val) > 1.5
    assert chars.chars_per_token("val") == 1.0


def test_split_loss_reports_bits_per_character_of_the_characters_scored():
    tokenizer = tokens.BPETokenizer(list(" ab"), [("a", "b"), ("ab", " ")])  # ids: ' ', a, b, ab, 'ab '
    data = torch.tensor(tokenizer.encode("ab ab a b ab ba ab "))
    torch.manual_seed(0)
    model = build(ModelConfig(vocab_size=tokenizer.vocab_size, block_size=4, n_embd=8, n_head=2, n_layer=1))
    result = split_loss(model, data, 4, tokenizer)
    with torch.no_grad():  # independently: every target once, in windows of 4
        inputs, targets = data[:-1], data[1:]
        total = sum(F.cross_entropy(model(inputs[i:i + 4][None])[0][0], targets[i:i + 4], reduction="sum").item()
                    for i in range(0, len(inputs), 4))
    covered = sum(len(tokenizer.tokens[int(t)]) for t in targets)
    assert result.positions == len(targets) and result.characters == covered > len(targets)
    assert result.loss == pytest.approx(total / len(targets), rel=1e-5)
    assert result.bits_per_char == pytest.approx(total / covered / math.log(2), rel=1e-5)
