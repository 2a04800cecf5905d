"""Losses on one scale: bits per character, whatever the tokenizer.

A loss per token depends on the tokenizer: a BPE token stands for several
characters, so its loss is larger for the same text. Bits per character put
every run on one scale. Nothing here imports anything: records, events and
evaluations all convert with it.
"""

from __future__ import annotations

import math


def bits_per_char(loss: float, chars_per_token: float = 1.0) -> float:
    """A mean per-token loss in nats as bits per character, the scale on which any two runs compare.

    That is the summed loss over the targets, divided by the characters they
    cover, divided by ln 2; with the mean loss per token it is
    ``loss / chars_per_token / ln 2`` (for the lecture's characters, ``loss / ln 2``).
    """
    return loss / chars_per_token / math.log(2)
