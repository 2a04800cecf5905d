"""A conversation with a trained model: its text so far, its sampling settings and its random stream.

``chat`` reads lines and renders replies; what a session holds, how ``/set``
changes it and how text becomes ids live here, beside :mod:`tinyshake.sampling`,
so they are plain values that need no terminal. It imports no torch at module
level (``chat --help`` answers at once); sampling is imported when a session starts.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Callable, Optional

from tinyshake.errors import UsageError

if TYPE_CHECKING:
    import torch

    from tinyshake import sampling
    from tinyshake.checkpoint import LoadedRun

DEFAULT_STOP = "\n\n"  # a blank line: the end of a speech in tiny Shakespeare
OFF = ("off", "none")
ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


class Unknown(str, Enum):
    """What to do with characters outside the model's vocabulary."""

    error = "error"
    drop = "drop"


class Overflow(str, Enum):
    """How to go on once the text is longer than the block size (see :mod:`tinyshake.sampling`)."""

    refill = "refill"
    crop = "crop"


def decode_escapes(text: str) -> str:
    """``\\n``, ``\\t`` and ``\\\\`` as typed, since a newline is hard to type in a shell or at the prompt."""
    return re.sub(r"\\([nt\\])", lambda m: ESCAPES[m.group(1)], text)


def show_escapes(text: str) -> str:
    """The inverse of :func:`decode_escapes`, to display a stop string on one line."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def parse_stops(values: Optional[list[str]]) -> list[str]:
    """Stop strings from ``--stop`` (escapes decoded); none given means a blank line, '' means no stop at all."""
    if values is None:
        return [DEFAULT_STOP]
    return [s for s in (decode_escapes(v) for v in values) if s]


def _optional(parse: Callable[[str], object]) -> Callable[[str], object]:
    """A parser that also takes 'off' or 'none', meaning the filter is not used."""
    return lambda value: None if value.lower() in OFF else parse(value)


def _on_off(value: str) -> bool:
    """'on' or 'off' (or true/false, 1/0) for a switch such as the cache."""
    if value.lower() not in ("on", "off", "true", "false", "1", "0"):
        raise ValueError(value)
    return value.lower() in ("on", "true", "1")


# /set NAME -> (SamplingSettings field, parser); the rest of the settings live on the Session.
SAMPLING_FIELDS: dict[str, tuple[str, Callable[[str], object]]] = {
    "temperature": ("temperature", float),
    "top_k": ("top_k", _optional(int)),
    "top_p": ("top_p", _optional(float)),
    "max_new_tokens": ("max_new_tokens", int),
    "overflow": ("overflow", lambda v: Overflow(v.lower()).value),
    "cache": ("use_cache", _on_off),
}
SESSION_FIELDS = ("seed", "stop", "unknown", "probs")
SETTINGS = (*SAMPLING_FIELDS, *SESSION_FIELDS)  # every name /set takes, in the order /help lists them
NOT_UTF8 = re.compile("[\udc80-\udcff]")  # how Python keeps the bytes of invalid UTF-8 it was given (surrogateescape)


def check_utf8(text: str, where: str = "input") -> str:
    """``text`` unless it carries undecodable bytes, which are a usage error saying so (not unknown characters)."""
    bad = NOT_UTF8.search(text)
    if bad:
        raise UsageError(f"{where} is not UTF-8 (byte 0x{ord(bad.group()) - 0xDC00:02x} at character {bad.start()})")
    return text


@dataclass
class Session:
    """A conversation with one model: its settings, its random stream and the text so far, as ids.

    One generator serves the whole session, so the same seed and the same
    inputs replay the same conversation. ``probs`` shows how sure the model was
    of each character it writes.
    """

    loaded: LoadedRun
    settings: sampling.SamplingSettings
    stops: list[str]
    unknown: Unknown
    device: torch.device
    seed: Optional[int] = None  # None draws a fresh seed, which /show displays
    probs: bool = False
    generator: torch.Generator = field(init=False)
    history: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reseed(self.seed)

    @property
    def block_size(self) -> int:
        """How many tokens (characters, for a character run) of the conversation the model sees."""
        return self.loaded.config.block_size

    def reseed(self, seed: Optional[int]) -> None:
        """A fresh random stream from ``seed`` (None draws one), so that ``/set seed`` replays from here."""
        from tinyshake import sampling

        self.generator, self.seed = sampling.make_generator(self.device, seed)

    def encode(self, text: str) -> tuple[list[int], list[str]]:
        """Ids of ``text`` and the unknown characters dropped from it; with ``--unknown error`` those raise."""
        tokenizer = self.loaded.tokenizer
        missing = tokenizer.unknown(check_utf8(text))
        if missing and self.unknown is Unknown.error:
            shown = ", ".join(map(repr, missing))
            raise UsageError(f"characters not in the vocabulary: {shown}; to leave them out, chat with "
                             "--unknown drop (or type /set unknown drop)")
        text = "".join(ch for ch in text if ch not in missing)
        return tokenizer.encode(text), missing

    def start(self, new_ids: list[int]) -> sampling.TextStream:
        """Add ``new_ids`` to the conversation and start the model's reply to all of it."""
        from tinyshake import sampling

        self.history = ((self.history + new_ids) or [sampling.START_TOKEN])[-self.block_size:]
        return sampling.stream_text(self.loaded.model, self.history, self.settings, self.loaded.tokenizer.decode,
                                    self.stops, self.generator, with_probs=self.probs)

    def keep(self, stream: sampling.TextStream) -> None:
        """The reply joins the conversation as sampled (a stop string too), cropped to the block size."""
        self.history = (self.history + stream.ids)[-self.block_size:]

    def describe(self) -> list[tuple[str, str]]:
        """The settings as (name, value) rows, in the names ``/set`` takes."""
        s = self.settings
        stops = ", ".join(f"'{show_escapes(x)}'" for x in self.stops) or "off"
        return [("temperature", f"{s.temperature:g}"), ("top_k", str(s.top_k or "off")),
                ("top_p", str(s.top_p or "off")), ("max_new_tokens", str(s.max_new_tokens)),
                ("seed", str(self.seed)), ("stop", stops),
                ("overflow", s.overflow), ("cache", "on" if s.use_cache else "off"), ("unknown", self.unknown.value),
                ("probs", "on" if self.probs else "off")]


def apply_setting(session: Session, name: str, value: str) -> str:
    """Change one setting from ``/set NAME VALUE``; returns its new value. Bad input is a one-line UsageError."""
    name = name.lower().replace("-", "_")
    try:
        if name in SAMPLING_FIELDS:
            attr, parse = SAMPLING_FIELDS[name]
            session.settings = dataclasses.replace(session.settings, **{attr: parse(value)}).validate()
        elif name == "seed":
            from tinyshake import sampling

            seed = _optional(int)(value)
            session.reseed(None if seed is None else sampling.check_seed(seed, "seed"))
        elif name == "stop":
            session.stops = [] if value.lower() in OFF else parse_stops([value])
        elif name == "unknown":
            session.unknown = Unknown(value.lower())
        elif name == "probs":
            session.probs = _on_off(value)
        else:
            raise UsageError(f"unknown setting {name!r}; settings: {', '.join(SETTINGS)}")
    except (ValueError, OverflowError):
        raise UsageError(f"{value!r} is not a valid value for {name}") from None
    return dict(session.describe())[name]
