"""Look inside a trained model: the next-character distribution, attention weights, the embedding table.

Each function takes a model (and its tokenizer) and returns plain numbers: the
command line draws them and ``chat`` reuses :func:`next_distribution` for its
``/probs``. The model runs in eval mode without gradients, and is put back in
the mode it had.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn as nn
from torch.nn import functional as F

from tinyshake.models import speed
from tinyshake.errors import UsageError
from tinyshake.sampling import START_TOKEN
from tinyshake.tokens import Tokenizer


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Dropout off and no autograd while we look; the caller's training mode comes back afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def context_ids(model: nn.Module, tokenizer: Tokenizer, prompt: str) -> list[int]:
    """The ids the model sees for ``prompt``: its last ``block_size`` tokens (empty: the start token).

    Generation starts from the start token when there is no prompt, so an empty
    prompt asks what the model would write first. Characters outside the
    vocabulary are a usage error that names them.
    """
    ids = tokenizer.encode(prompt) or [START_TOKEN]
    return ids[-model.config.block_size:]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def next_distribution(model: nn.Module, tokenizer: Tokenizer, prompt: str) -> list[tuple[str, float]]:
    """Every token (character) with the probability the model gives it next, highest first.

    The softmax of the logits at the last position of the prompt (cropped to the
    block size, as generation crops it). Ties keep vocabulary order, so the list
    is the same on every call.
    """
    return distribution_after(model, tokenizer, context_ids(model, tokenizer, prompt))


def distribution_after(model: nn.Module, tokenizer: Tokenizer, ids: list[int]) -> list[tuple[str, float]]:
    """:func:`next_distribution` after the ids themselves (chat's history): a BPE text may encode to other ids."""
    ids = ids[-model.config.block_size:] or [START_TOKEN]
    with _evaluating(model):
        logits, _ = model(torch.tensor([ids], dtype=torch.long, device=_device(model)))
        probs = logits[0, -1].float().softmax(dim=-1).cpu()
    order = sorted(range(len(probs)), key=lambda i: -float(probs[i]))
    return [(tokenizer.tokens[i], float(probs[i])) for i in order]


def entropy_bits(probs: Sequence[float] | Sequence[tuple[str, float]]) -> float:
    """Shannon entropy in bits: 0 when the model is sure, log2(65) = 6.02 when it has no idea.

    Takes plain probabilities or :func:`next_distribution`'s (char, p) pairs.
    """
    values = [p[1] if isinstance(p, tuple) else p for p in probs]
    return 0.0 - sum(p * math.log2(p) for p in values if p > 0)


# --------------------------------------------------------------------------- attention


class NoAttention(UsageError):
    """The model has no attention to show: the bigram reads its logits off a table."""


@dataclass(frozen=True)
class AttentionMaps:
    """The attention weights of every layer and head on one prompt.

    ``weights[layer, head, query, key]`` is how much the query position listens
    to the key position; each row sums to 1 and is 0 above the diagonal.
    """

    tokens: list[str]
    weights: torch.Tensor  # (n_layer, n_head, T, T), float32 on the CPU


def attention_maps(model: nn.Module, tokenizer: Tokenizer, prompt: str) -> AttentionMaps:
    """Run ``prompt`` (cropped to the block size) through the model, keeping each layer's softmaxed weights.

    The fused attention of :mod:`tinyshake.models.speed` keeps them on request; a model of the lecture's plain
    modules is read through a sped-up copy, so the caller's model stays as it was.
    """
    if not speed.is_applied(model):
        model = speed.apply(copy.deepcopy(model))
    layers = [block.sa for block in getattr(model, "blocks", [])]
    if not layers:
        raise NoAttention("this model is a bigram: it has no attention, each character reads the next off a table "
                          "(try `tinyshake inspect next` or `tinyshake inspect embeddings`)")
    ids = context_ids(model, tokenizer, prompt)
    for attention in layers:
        attention.captured = []
    try:
        with _evaluating(model):
            model(torch.tensor([ids], dtype=torch.long, device=_device(model)))
        weights = torch.stack([attention.captured[0][0] for attention in layers]).float().cpu()
    finally:
        for attention in layers:
            attention.captured = None
    return AttentionMaps([tokenizer.tokens[i] for i in ids], weights)


# --------------------------------------------------------------------------- embeddings


@dataclass(frozen=True)
class Projection:
    """The token embedding table's rows projected onto its two principal components.

    ``points[i]`` is character ``chars[i]``'s (x, y); ``explained`` is the share of
    the table's variance each axis carries.
    """

    chars: list[str]
    points: torch.Tensor  # (vocab, 2)
    explained: tuple[float, float]


def embedding_table(model: nn.Module) -> torch.Tensor:
    """The learned token embedding table (vocab, n_embd); for a bigram, its (vocab, vocab) logits table."""
    return model.token_embedding_table.weight.detach().float().cpu()


def project(table: torch.Tensor, chars: Sequence[str]) -> Projection:
    """PCA to two dimensions, with each axis's sign fixed so the same table always gives the same picture.

    A principal direction is only defined up to its sign (SVD may return either);
    we flip each so the point farthest along it lies on its positive side.
    """
    centred = table.double() - table.double().mean(dim=0)
    _, singular, directions = torch.linalg.svd(centred, full_matrices=False)
    points = centred @ directions[:2].T
    farthest = points.abs().argmax(dim=0)
    points = points * points[farthest, torch.arange(2)].sign()
    variance = singular.square()
    share = (variance[:2] / variance.sum()).tolist()
    return Projection(list(chars), points.float(), (share[0], share[1]))


def nearest(table: torch.Tensor, chars: Sequence[str], char: str, count: int = 10) -> list[tuple[str, float]]:
    """The ``count`` characters (tokens) whose embeddings point most nearly the way ``char``'s does (cosine similarity)."""
    if char not in chars and all(len(c) == 1 for c in chars):
        raise UsageError(f"{char!r} is not in the vocabulary; choose one of: {''.join(chars)!r}")
    if char not in chars:
        raise UsageError(f"{char!r} is not one of the run's {len(chars):,} tokens; `tinyshake inspect tokens --text "
                         "TEXT` shows how text is cut into them")
    index = list(chars).index(char)
    similarity = F.cosine_similarity(table[index : index + 1], table, dim=-1)
    order = [i for i in similarity.argsort(descending=True, stable=True).tolist() if i != index]
    return [(chars[i], float(similarity[i])) for i in order[:count]]


def bigram_probabilities(model: nn.Module) -> torch.Tensor:
    """A bigram's table as probabilities: row i is the distribution of the character after character i."""
    return embedding_table(model).softmax(dim=-1)
