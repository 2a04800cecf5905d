"""``tinyshake chat``: meet what you trained. Every character appears the moment the model samples it.

On a terminal it is a conversation with ollama-style ``/`` commands; with
``--prompt`` or text piped on stdin it prints one continuation and nothing
else (no prompt, colour or banner), so it works in pipes and scripts. The
sampling itself is :mod:`tinyshake.sampling`; this module only renders it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Callable, Iterator, Optional, TextIO

import torch
import typer
from rich.console import Console
from rich.text import Text

from tinyshake import checkpoint, device, paths, sampling
from tinyshake.cli._output import error_line, handle_errors, make_console
from tinyshake.errors import TinyshakeError, UsageError

PROMPT = ">>> "
DEFAULT_STOP = "\n\n"  # a blank line: the end of a speech in tiny Shakespeare
OFF = ("off", "none")
ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}
HELP = """\
/set NAME VALUE  change a setting live: {names}
                 (top_k, top_p and seed take 'off'; stop takes \\n for a newline, 'off' for none)
/show            the run and the current settings
/reset           forget the conversation so far
/help            this list
/bye             leave (Ctrl-D works too)
Your line, with its newline, joins the text so far and the model continues it
(the last {block} characters are what it sees). An empty line lets it go on.
Ctrl-C stops a reply and keeps the session."""


class Unknown(str, Enum):
    """What to do with characters outside the model's vocabulary."""

    error = "error"
    drop = "drop"


class Overflow(str, Enum):
    """How to go on once the text is longer than the block size (see :mod:`tinyshake.sampling`)."""

    refill = "refill"
    crop = "crop"


# --------------------------------------------------------------------------- small parsers


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
SESSION_FIELDS = ("seed", "stop", "unknown")


# --------------------------------------------------------------------------- the conversation


@dataclass
class Session:
    """A conversation with one model: its settings, its random stream and the text so far, as ids.

    One generator serves the whole session, so the same seed and the same
    inputs replay the same conversation.
    """

    loaded: checkpoint.LoadedRun
    settings: sampling.SamplingSettings
    stops: list[str]
    unknown: Unknown
    device: torch.device
    seed: Optional[int] = None  # None draws a fresh seed, which /show displays
    generator: torch.Generator = field(init=False)
    history: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reseed(self.seed)

    @property
    def block_size(self) -> int:
        return self.loaded.config.block_size

    def reseed(self, seed: Optional[int]) -> None:
        self.generator, self.seed = sampling.make_generator(self.device, seed)

    def encode(self, text: str) -> tuple[list[int], list[str]]:
        """Ids of ``text`` and the unknown characters dropped from it; with ``--unknown error`` those raise."""
        tokenizer = self.loaded.tokenizer
        missing = tokenizer.unknown(text)
        if missing and self.unknown is Unknown.drop:
            text = "".join(ch for ch in text if ch in tokenizer.stoi)
        return tokenizer.encode(text), missing

    def start(self, new_ids: list[int]) -> sampling.TextStream:
        """Add ``new_ids`` to the conversation and start the model's reply to all of it."""
        self.history = ((self.history + new_ids) or [sampling.START_TOKEN])[-self.block_size:]
        return sampling.stream_text(self.loaded.model, self.history, self.settings, self.loaded.tokenizer.decode,
                                    self.stops, self.generator)

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
                ("overflow", s.overflow), ("cache", "on" if s.use_cache else "off"), ("unknown", self.unknown.value)]


def apply_setting(session: Session, name: str, value: str) -> str:
    """Change one setting from ``/set NAME VALUE``; returns its new value. Bad input is a one-line UsageError."""
    name = name.lower().replace("-", "_")
    try:
        if name in SAMPLING_FIELDS:
            attr, parse = SAMPLING_FIELDS[name]
            session.settings = dataclasses.replace(session.settings, **{attr: parse(value)}).validate()
        elif name == "seed":
            session.reseed(_optional(int)(value))  # type: ignore[arg-type]
        elif name == "stop":
            session.stops = [] if value.lower() in OFF else parse_stops([value])
        elif name == "unknown":
            session.unknown = Unknown(value.lower())
        else:
            raise UsageError(f"unknown setting {name!r}; settings: {', '.join([*SAMPLING_FIELDS, *SESSION_FIELDS])}")
    except ValueError:
        raise UsageError(f"{value!r} is not a valid value for {name}") from None
    return dict(session.describe())[name]


# --------------------------------------------------------------------------- streaming


@dataclass
class ReplyStats:
    """What a reply did: characters sampled, time taken, and why it ended ("stop", "limit" or "interrupted")."""

    chars: int
    seconds: float
    ended: str
    at_line_start: bool

    @property
    def rate(self) -> float:
        """Characters per second, the figure the stats line shows."""
        return self.chars / self.seconds if self.seconds > 0 else 0.0


@contextlib.contextmanager
def sigint_flag() -> Iterator[Callable[[], bool]]:
    """While a reply streams, Ctrl-C raises a flag instead of KeyboardInterrupt.

    The reply then stops between two characters, so the sampler's state and
    the conversation stay whole; Python's own handler is back afterwards, so
    Ctrl-C at the prompt behaves as usual.
    """
    hits: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: hits.append(signum))
    except ValueError:  # not the main thread: Ctrl-C stays with whoever runs us
        yield lambda: False
        return
    try:
        yield lambda: bool(hits)
    finally:
        signal.signal(signal.SIGINT, previous)


def write_reply(stream: sampling.TextStream, out: TextIO, interrupted: Callable[[], bool]) -> ReplyStats:
    """Write each piece of ``stream`` the moment it is sampled, flushed, until it ends or ``interrupted()``."""
    start = time.perf_counter()
    last, ended = "\n", "limit"
    for piece in stream:
        out.write(piece)
        out.flush()
        last = piece
        if interrupted():
            ended, rest = "interrupted", stream.close()
            out.write(rest)  # held back as a possible stop string, but the reply ends here
            out.flush()
            last += rest
            break
    if stream.stopped is not None:
        ended = "stop"
    return ReplyStats(len(stream.ids), time.perf_counter() - start, ended, last.endswith("\n"))


def stats_text(stats: ReplyStats) -> Text:
    """The dim line after a reply: characters, characters per second, and how it ended if not at a stop."""
    line = f"{stats.chars:,} chars in {stats.seconds:.2f} s · {stats.rate:,.0f} chars/s"
    if stats.ended == "interrupted":
        line += " · interrupted"
    elif stats.ended == "limit":
        line += " · max_new_tokens reached"
    return Text(line, style="dim")


# --------------------------------------------------------------------------- the two modes


def continue_once(session: Session, text: str, out: TextIO) -> None:
    """Non-interactive mode: stream one continuation of ``text`` to ``out``, and nothing else."""
    ids, _ = session.encode(text)
    with sigint_flag() as interrupted:
        stats = write_reply(session.start(ids), out, interrupted)
    if out.isatty() and not stats.at_line_start:
        out.write("\n")  # leave the shell's prompt on a line of its own; pipes get the text exactly
    out.flush()
    if stats.ended == "interrupted":
        raise typer.Exit(130)


def reply(session: Session, line: str, console: Console) -> None:
    """One turn: the user's line (and its newline) joins the text, the model's reply streams, then the stats."""
    ids, dropped = session.encode(line + "\n" if line else "")
    if dropped:
        console.print(Text(f"dropped {', '.join(map(repr, dropped))} (not in the vocabulary)", style="dim"))
    out = console.file
    with sigint_flag() as interrupted:
        stream = session.start(ids)
        stats = write_reply(stream, out, interrupted)
    session.keep(stream)
    if not stats.at_line_start:
        out.write("\n")
    console.print(stats_text(stats))


def run_command(session: Session, line: str, console: Console) -> bool:
    """Carry out a ``/`` command; returns False when the session should end."""
    command, *args = line.split(maxsplit=2)
    command = command.lower()
    if command in ("/bye", "/exit", "/quit"):
        return False
    if command == "/help":
        names = ", ".join([*SAMPLING_FIELDS, *SESSION_FIELDS])
        console.print(Text(HELP.format(names=names, block=session.block_size)))
    elif command == "/show":
        rows = [("run", session.loaded.name), ("device", str(session.device)),
                ("context", f"{len(session.history)} of {session.block_size} characters"), *session.describe()]
        console.print(Text("\n".join(f"{k:<15} {v}" for k, v in rows)))
    elif command == "/reset":
        session.history = []
        console.print(Text("Conversation cleared.", style="dim"))
    elif command == "/set" and len(args) == 2:
        value = apply_setting(session, args[0], args[1])
        console.print(Text(f"{args[0]} = {value}", style="dim"))
    elif command == "/set":
        raise UsageError("usage: /set NAME VALUE, e.g. /set temperature 0.8 (see /help)")
    else:
        raise UsageError(f"unknown command {command!r}; /help lists the commands")
    return True


def _line_editing() -> None:
    """Arrow keys and input history at the prompt, as in a shell (where this Python has readline)."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401


def banner(session: Session) -> Text:
    """What the user is talking to (run, stage, training, size) and how to get help or leave."""
    record = session.loaded.record
    params = sum(p.numel() for p in session.loaded.model.parameters())
    best = record.get("best_val")
    facts = [session.loaded.name, f"stage {record.get('stage', '?')}", f"step {record.get('step', '?')}",
             f"val loss {best:.4f}" if isinstance(best, (int, float)) else "", f"block {session.block_size}",
             f"{params:,} parameters", str(session.device)]
    return Text.assemble(("Chatting with ", "dim"), (" · ".join(f for f in facts if f), "bold"),
                         ("\nType text and the model continues it. /help for commands, Ctrl-D or /bye to exit.", "dim"))


def interactive(session: Session, console: Console) -> None:
    """The terminal loop: read a line, run a command or stream a reply; errors are one line and the loop goes on."""
    _line_editing()
    console.print(banner(session))
    while True:
        try:
            line = input(PROMPT)
        except EOFError:  # Ctrl-D
            console.file.write("\n")
            return
        except KeyboardInterrupt:
            console.print(Text("\nUse Ctrl-D or /bye to exit.", style="dim"))
            continue
        try:
            if line.strip().startswith("/"):
                if not run_command(session, line.strip(), console):
                    return
            else:
                reply(session, line, console)
        except TinyshakeError as exc:
            error_line(str(exc))


# --------------------------------------------------------------------------- the command


def pick_run(name: Optional[str]) -> str:
    """The run to load: ``name``, or the most recently trained one; with none, how to train one."""
    if name is None:
        latest = checkpoint.latest()
        if latest is None:
            raise TinyshakeError(f"there are no trained runs in {paths.runs_root()} yet; "
                                 "train one first: tinyshake train --model mini")
        return latest
    if not checkpoint.exists(name):
        known = [r["name"] for r in checkpoint.list_runs() if not r.get("corrupt")]
        hint = f"runs: {', '.join(known)}" if known else "train one first: tinyshake train --model mini"
        raise UsageError(f"there is no run named {name!r}; {hint}")
    return name


def _quiet_broken_pipe() -> None:
    """The reader went away (``| head``): stop quietly, as Unix tools do, without a traceback at exit."""
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise typer.Exit(141)


@handle_errors
def chat(
    run: Annotated[Optional[str], typer.Option(
        "--run", "-r", help="Run to chat with (default: the latest trained).")] = None,
    prompt: Annotated[Optional[str], typer.Option(
        "--prompt", "-p", help="Continue this text once, print only the continuation, and exit.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Most characters in one reply.")] = 500,
    temperature: Annotated[float, typer.Option(
        "--temperature", "-t", help="0 is greedy (argmax); above 1 is wilder.")] = 1.0,
    top_k: Annotated[Optional[int], typer.Option(help="Sample only from the k likeliest characters.")] = None,
    top_p: Annotated[Optional[float], typer.Option(
        help="Sample only from the likeliest characters that make up this much probability.")] = None,
    seed: Annotated[Optional[int], typer.Option(
        help="Random seed: the same run, seed, text and settings give the same reply (default: a fresh one).")] = None,
    stop: Annotated[Optional[list[str]], typer.Option(
        help="End a reply at this text; repeatable; \\n is a newline, '' means none (default: a blank line).")] = None,
    unknown: Annotated[Unknown, typer.Option(
        help="Characters not in the vocabulary: an error, or drop them.")] = Unknown.error,
    overflow: Annotated[Overflow, typer.Option(
        help="Past the block size: refill the cache from the last half block (fast), "
             "or crop and recompute every step (the lecture's exact semantics).")] = Overflow.refill,
    no_cache: Annotated[bool, typer.Option(
        "--no-cache", help="Recompute the whole context for every character (the reference path, slow).")] = False,
    device_name: Annotated[str, typer.Option(
        "--device", help="cpu (fastest for one stream of characters), auto, cuda or mps.")] = "cpu",
) -> None:
    """Chat with a trained run: type text and watch the model continue it, character by character."""
    settings = sampling.SamplingSettings(temperature=temperature, top_k=top_k, top_p=top_p,
                                         max_new_tokens=max_new_tokens, use_cache=not no_cache,
                                         overflow=overflow.value).validate()
    name = pick_run(run)
    dev = device.resolve(device_name).device
    session = Session(checkpoint.load(name, dev), settings, parse_stops(stop), unknown, dev, seed)
    with sampling.sampling_threads(session.loaded.model, dev):
        if prompt is None and sys.stdin.isatty():
            interactive(session, make_console())
            return
        text = prompt if prompt is not None else sys.stdin.read()
        try:
            continue_once(session, text, sys.stdout)
        except BrokenPipeError:
            _quiet_broken_pipe()
