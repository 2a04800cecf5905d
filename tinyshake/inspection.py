"""Look inside a trained model: the next-character distribution, attention weights, the embedding table.

Each function takes a model (and its tokenizer) and returns plain numbers: the
command line draws them and ``chat`` reuses :func:`next_distribution` for its
``/probs``. The model runs in eval mode without gradients, and is put back in
the mode it had.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import torch
import torch.nn as nn

from tinyshake.corpus import CharTokenizer
from tinyshake.sampling import START_TOKEN


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


def context_ids(model: nn.Module, tokenizer: CharTokenizer, prompt: str) -> list[int]:
    """The ids the model sees for ``prompt``: its last ``block_size`` characters (empty: the start token).

    Generation starts from the start token when there is no prompt, so an empty
    prompt asks what the model would write first. Characters outside the
    vocabulary are a usage error that names them.
    """
    ids = tokenizer.encode(prompt) or [START_TOKEN]
    return ids[-model.config.block_size:]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def next_distribution(model: nn.Module, tokenizer: CharTokenizer, prompt: str) -> list[tuple[str, float]]:
    """Every character with the probability the model gives it next, highest first.

    The softmax of the logits at the last position of the prompt (cropped to the
    block size, as generation crops it). Ties keep vocabulary order, so the list
    is the same on every call.
    """
    ids = context_ids(model, tokenizer, prompt)
    with _evaluating(model):
        logits, _ = model(torch.tensor([ids], dtype=torch.long, device=_device(model)))
        probs = logits[0, -1].float().softmax(dim=-1).cpu()
    order = sorted(range(len(probs)), key=lambda i: -float(probs[i]))
    return [(tokenizer.chars[i], float(probs[i])) for i in order]


def entropy_bits(probs: Sequence[float] | Sequence[tuple[str, float]]) -> float:
    """Shannon entropy in bits: 0 when the model is sure, log2(65) = 6.02 when it has no idea.

    Takes plain probabilities or :func:`next_distribution`'s (char, p) pairs.
    """
    values = [p[1] if isinstance(p, tuple) else p for p in probs]
    return 0.0 - sum(p * math.log2(p) for p in values if p > 0)
