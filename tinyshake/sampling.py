"""Sampling tokens (characters, or a BPE's pieces of words) from a trained model, one at a time, with or without a KV cache.

:func:`generate` yields each new token id as soon as it is sampled, so a caller
can stream it. At temperature 1 with no top-k or top-p it performs exactly the
lecture's ``GPTLanguageModel.generate`` (softmax of the last logits, then ``torch.multinomial``),
so a seeded run reproduces the lecture's samples. :func:`stream_text` decodes
those ids into text and cuts the text off at stop strings; ``tinyshake chat``
and the sample at the end of ``tinyshake train`` both use it.

The KV cache makes each new character cost one position's compute. Within the
block size, the cached and uncached paths give the same logits, hence the same
text for the same random generator. The models use learned absolute positions,
so once the context is longer than the block size every step shifts all the
positions; ``overflow`` then chooses between the lecture's exact semantics
(``crop``) and speed (``refill``).
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
from dataclasses import dataclass
from typing import Callable, Generator, Iterator, Optional, Sequence

import torch
import torch.nn as nn
from torch.nn import functional as F

from tinyshake.errors import UsageError
from tinyshake.models import speed
from tinyshake.models.speed import KVCache

OVERFLOW_MODES = ("crop", "refill")
START_TOKEN = 0  # the lecture's generate starts from a (1, 1) tensor of zeros: a newline in tiny Shakespeare
SMALL_MODEL = 1_000_000  # parameters: about 4 MB of float32 weights, which stay in a CPU's cache
CPU_THREADS = 4  # for bigger models on idle cores: past a few threads, syncing them costs more than it saves
# Temperatures below this act as 0 (greedy): their distribution is one-hot but for near-ties, and dividing the
# logits by a temperature near float32's smallest (1e-45) overflows them to inf, a distribution of NaNs.
GREEDY_BELOW = 1e-6


@dataclass
class SamplingSettings:
    """How to pick each next character, and how to keep the context within the block size.

    ``overflow`` decides what happens when the context outgrows ``block_size``:
    ``crop`` is the lecture's semantics (keep the last ``block_size`` characters
    and recompute them every step), ``refill`` is faster (restart the cache from
    the last half-window, then go on one position per step; a model with rotary
    positions just slides its cache instead).
    """

    temperature: float = 1.0
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    max_new_tokens: int = 500
    use_cache: bool = True
    overflow: str = "crop"

    def validate(self) -> "SamplingSettings":
        """Reject settings that cannot sample, with a one-line reason (the CLI shows it as is)."""
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise UsageError(f"temperature must be a finite number, 0 (greedy) or more, not {self.temperature:g}")
        if self.top_k is not None and self.top_k < 1:
            raise UsageError("top_k must be at least 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise UsageError("top_p must be in (0, 1]")
        if self.max_new_tokens < 0:
            raise UsageError("max_new_tokens must be 0 or more")
        if self.overflow not in OVERFLOW_MODES:
            raise UsageError(f"overflow must be one of {', '.join(OVERFLOW_MODES)}")
        return self


SEEDS = range(2**64)  # what torch's generators accept as a seed


def check_seed(seed: int, what: str = "--seed") -> int:
    """``seed`` if a generator takes it as it is; a negative or too large one is a usage error, not a wrapped seed.

    ``what`` names it as the user gave it: the option, or chat's ``/set seed``.
    """
    if seed not in SEEDS:
        raise UsageError(f"{what} must be a whole number from 0 to 2**64 - 1, not {seed}")
    return seed


def make_generator(device: torch.device | str, seed: Optional[int] = None) -> tuple[torch.Generator, int]:
    """A random generator on ``device`` and the seed it got: ``seed``, or a fresh one a user can note and replay."""
    seed = secrets.randbelow(2**32) if seed is None else check_seed(seed)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator, seed


def pick(logits: torch.Tensor, settings: SamplingSettings, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Choose the next token from last-position logits (B, V); returns (B, 1).

    Temperature 0 (or under :data:`GREEDY_BELOW`) is argmax and draws no random
    number. Otherwise this is the lecture's softmax + multinomial, after the
    optional temperature, top-k and top-p (nucleus) filters.
    """
    if settings.temperature < GREEDY_BELOW:
        return logits.argmax(dim=-1, keepdim=True)
    if settings.temperature != 1.0:
        logits = logits / settings.temperature
    if settings.top_k is not None and settings.top_k < logits.size(-1):
        kth = torch.topk(logits, settings.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    if settings.top_p is not None and settings.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # keep the smallest set of most likely tokens whose mass reaches top_p (the first one always stays)
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= settings.top_p
        probs = probs.scatter(-1, order, sorted_probs.masked_fill(drop, 0.0))
    return torch.multinomial(probs, num_samples=1, generator=generator)


class _Context:
    """The model's view of the text so far: the last ``block_size`` ids and, optionally, a KV cache.

    Only single-token steps go through the cache after a prefill: the model's
    attention treats a cached step as seeing everything before it, which holds
    for one new token but not for several. A model with rotary positions (the
    ``modern`` stage) needs no refill: its cache slides, one position per step.
    """

    def __init__(self, model: nn.Module, ids: torch.Tensor, settings: SamplingSettings) -> None:
        self.model, self.settings = model, settings
        self.block_size: int = model.config.block_size
        self.ids = ids[:, -self.block_size:]  # nothing older than a block is ever read again
        self.cache: Optional[KVCache] = None
        self.use_cache = settings.use_cache and speed.is_applied(model)  # the lecture's plain modules keep no cache
        rotary = getattr(model.config, "pos", "learned") == "rope"
        self.sliding = rotary and settings.overflow == "refill"

    def _full(self) -> torch.Tensor:
        """The lecture's way: run the last ``block_size`` ids through the model from scratch."""
        return self.model(self.ids)[0][:, -1, :]

    def _prefill(self, window: int) -> torch.Tensor:
        """Start a fresh cache from the last ``window`` ids, at positions 0..window-1."""
        layers = len(getattr(self.model, "blocks", []))
        self.cache = KVCache(layers, window=self.block_size) if self.sliding else KVCache(layers)
        return speed.forward_cached(self.model, self.ids[:, -window:], self.cache)[:, -1, :]

    def first_logits(self) -> torch.Tensor:
        if not self.use_cache:
            return self._full()
        return self._prefill(self.block_size)

    def next_logits(self, token: torch.Tensor) -> torch.Tensor:
        """Append ``token`` (B, 1) and return the logits for the position after it."""
        self.ids = torch.cat([self.ids, token], dim=1)[:, -self.block_size:]
        if self.cache is None:
            return self._full()
        if self.cache.pos < self.block_size or self.sliding:
            return speed.forward_cached(self.model, token, self.cache)[:, -1, :]
        if self.settings.overflow == "crop":
            self.cache = None  # from here on every step recomputes the cropped window, as the lecture does
            return self._full()
        return self._prefill(max(1, self.block_size // 2))


Step = tuple[int, Optional[float]]  # a sampled id, and the model's probability of it when asked for


@torch.inference_mode()
def _steps(
    model: nn.Module,
    context: list[int],
    settings: SamplingSettings,
    generator: Optional[torch.Generator],
    with_probs: bool,
) -> Generator[Step, None, None]:
    """The sampling loop behind :func:`generate` and :func:`stream_text`.

    With ``with_probs`` each id comes with the probability that the model gave
    it: the softmax of its logits, before temperature, top-k or top-p, so that
    it says what the model thinks whatever the settings. Without, no
    probability is computed at all.
    """
    settings.validate()
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        ids = torch.tensor([context or [START_TOKEN]], dtype=torch.long, device=device)
        state = _Context(model, ids, settings)
        if settings.max_new_tokens == 0:
            return
        logits = state.first_logits()
        for i in range(settings.max_new_tokens):
            token = pick(logits, settings, generator)
            chosen = int(token.item())
            yield chosen, float(F.softmax(logits[0], dim=-1)[chosen]) if with_probs else None
            if i + 1 < settings.max_new_tokens:
                logits = state.next_logits(token)
    finally:
        model.train(was_training)


def generate(
    model: nn.Module,
    context: list[int],
    settings: SamplingSettings,
    generator: Optional[torch.Generator] = None,
) -> Generator[int, None, None]:
    """Yield ``settings.max_new_tokens`` sampled ids continuing ``context`` (empty means token 0).

    Without a ``generator`` it draws from torch's global random stream, as the
    lecture does. Closing the iterator early (a stop string, Ctrl-C) puts the
    model back in the training mode it had.
    """
    with contextlib.closing(_steps(model, context, settings, generator, with_probs=False)) as steps:
        for token, _ in steps:
            yield token


SHOWCASE_SEED = 1337  # the samples that compare models (train's evaluations, ladder, `sample`) all draw from it


def showcase(model: nn.Module, context: list[int], chars: int, seed: int = SHOWCASE_SEED) -> list[int]:
    """``chars`` ids continuing ``context``, drawn from a generator of their own seeded with ``seed``.

    The same seed and context give every model the same draw, so two models, or
    one model at two steps of its training, are compared on equal terms; and the
    private generator leaves torch's global stream, which a training draws its
    batches from, exactly where it was.
    """
    generator, _ = make_generator(next(model.parameters()).device, seed)
    return list(generate(model, context, SamplingSettings(max_new_tokens=chars), generator))


class StopMatcher:
    """Finds stop strings in streamed text, holding back what could be the start of one.

    A stop string is never shown: text that might begin one waits until the next
    characters either complete it (then it is dropped and the reply ends) or
    rule it out (then it is released). For the default stop, a blank line, that
    delays one newline by one character.
    """

    def __init__(self, stops: Sequence[str] = ()) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped: Optional[str] = None

    def _held(self) -> int:
        """Length of the longest end of ``pending`` that is a proper prefix of a stop string."""
        longest = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.pending)), longest, -1):
                if self.pending.endswith(stop[:n]):
                    longest = n
                    break
        return longest

    def feed(self, text: str) -> str:
        """Add sampled text; return the part that is safe to show now (nothing once a stop string matched)."""
        if self.stopped is not None:
            return ""
        self.pending += text
        hits = [(at, stop) for stop in self.stops if (at := self.pending.find(stop)) != -1]
        if hits:
            at, self.stopped = min(hits)
            shown, self.pending = self.pending[:at], ""
            return shown
        keep = self._held()
        shown, self.pending = self.pending[: len(self.pending) - keep], self.pending[len(self.pending) - keep:]
        return shown

    def flush(self) -> str:
        """The text still held back, once no more is coming."""
        shown, self.pending = self.pending, ""
        return shown


class TextStream:
    """One continuation as text: iterate it for the pieces to show, as soon as each is sampled.

    ``ids`` collects every sampled id, a matched stop string included, so a
    conversation can keep exactly what the model wrote; ``text`` is what they
    decode to; ``probs`` holds the model's probability of each id (when the
    steps carry them); ``stopped`` names the stop string that ended it, if one
    did. A token may stand for several characters (a BPE): :meth:`spans` says
    which characters came from which token.
    """

    def __init__(self, steps: Generator[Step, None, None], decode: Callable[[list[int]], str],
                 stops: Sequence[str] = ()) -> None:
        self._tokens = steps
        self._decode = decode
        self._matcher = StopMatcher(stops)
        self.ids: list[int] = []
        self.probs: list[float] = []
        self.text = ""
        self._token_of: list[int] = []  # for each character of ``text``, the index of the id it came from

    @property
    def stopped(self) -> Optional[str]:
        return self._matcher.stopped

    def __iter__(self) -> Iterator[str]:
        for token, p in self._tokens:
            self.ids.append(token)
            if p is not None:
                self.probs.append(p)
            piece = self._decode([token])
            self.text += piece
            self._token_of += [len(self.ids) - 1] * len(piece)
            shown = self._matcher.feed(piece)
            if shown:
                yield shown
            if self.stopped is not None:
                break
        tail = self.close()
        if tail:
            yield tail

    def spans(self, start: int, end: int) -> list[tuple[str, float]]:
        """Characters ``start:end`` of ``text``, cut where one token ends and the next begins, each with its
        token's probability (so the steps must carry probabilities)."""
        out: list[tuple[str, float]] = []
        for i in range(start, end):
            token = self._token_of[i]
            if i > start and self._token_of[i - 1] == token:
                out[-1] = (out[-1][0] + self.text[i], out[-1][1])
            else:
                out.append((self.text[i], self.probs[token]))
        return out

    def close(self) -> str:
        """Stop sampling now (say, on Ctrl-C); returns the held-back text, which is no stop string."""
        self._tokens.close()
        return self._matcher.flush()


def cpu_threads(model: nn.Module) -> int:
    """How many CPU threads sample fastest: one character is a handful of matrix-vector products.

    A small model's weights sit in the CPU cache, so one thread is fastest and
    more only wait on each other. A bigger model is limited by memory bandwidth,
    which a few threads share better, but only on idle cores: on a busy machine
    (a training run in another terminal) waiting threads make it ten times slower.
    """
    if sum(p.numel() for p in model.parameters()) <= SMALL_MODEL:
        return 1
    idle = (os.cpu_count() or 1) - (os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0)
    return max(1, min(torch.get_num_threads(), CPU_THREADS, int(idle)))


@contextlib.contextmanager
def sampling_threads(model: nn.Module, dev: torch.device) -> Iterator[None]:
    """Sample on the CPU with :func:`cpu_threads` threads, and put the old count back afterwards."""
    before = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(cpu_threads(model))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def stream_text(
    model: nn.Module,
    context: list[int],
    settings: SamplingSettings,
    decode: Callable[[list[int]], str],
    stops: Sequence[str] = (),
    generator: Optional[torch.Generator] = None,
    with_probs: bool = False,
) -> TextStream:
    """Sample a continuation of ``context`` as a :class:`TextStream` of text pieces, ending at any of ``stops``.

    ``with_probs`` also records the model's probability of each sampled id in ``TextStream.probs``.
    """
    return TextStream(_steps(model, context, settings.validate(), generator, with_probs), decode, stops)


__all__ = [
    "GREEDY_BELOW",
    "OVERFLOW_MODES",
    "START_TOKEN",
    "SamplingSettings",
    "Step",
    "StopMatcher",
    "TextStream",
    "cpu_threads",
    "generate",
    "make_generator",
    "pick",
    "sampling_threads",
    "stream_text",
]
