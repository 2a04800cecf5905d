"""``tinyshake chat``: meet what you trained. Every character appears the moment the model samples it.

On a terminal it is a conversation with ollama-style ``/`` commands; with
``--prompt`` or text piped on stdin it prints one continuation and nothing
else (no prompt, colour or banner), so it works in pipes and scripts. The
sampling itself is :mod:`tinyshake.sampling` and the conversation's state
:mod:`tinyshake.session`; this module reads input and renders replies.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Callable, Optional, Sequence, TextIO

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tinyshake import tokens
from tinyshake.store import record
from tinyshake.cli import _render, _torch
from tinyshake.cli._options import Weights, WeightsOpt
from tinyshake.cli._output import CLOSED_AT_START, error_line, handle_errors, make_console, use_rich
from tinyshake.cli._signals import INTERRUPT_EXIT, sigint_flag
from tinyshake.errors import TinyshakeError, UsageError
from tinyshake.session import SETTINGS, Overflow, Session, Unknown, apply_setting, check_utf8, parse_stops, show_escapes

if TYPE_CHECKING:
    from tinyshake import sampling
    from tinyshake.checkpoint import LoadedRun

PROMPT = ">>> "
COMMANDS = (
    ("/set NAME VALUE", "change a setting live: {names} (top_k, top_p and seed take 'off'; stop takes \\n for a "
                        "newline, 'off' for none; probs on colours each token by how sure the model was)"),
    ("/show", "the run and the current settings"),
    ("/probs", "the likeliest next tokens (characters) now, with their probabilities"),
    ("/reset", "forget the conversation so far"),
    ("/help", "this list"),
    ("/bye", "leave (Ctrl-D works too)"),
)
HELP_END = """\
Your line, with its newline, joins the text so far and the model continues it
(the last {block} characters are what it sees). An empty line lets it go on.
Ctrl-C stops a reply and keeps the session."""


def help_table() -> Table:
    """``/help``'s commands in two columns, so that a wrapped description keeps its indent."""
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True)
    table.add_column()
    for command, what in COMMANDS:
        table.add_row(command, Text(what.format(names=", ".join(SETTINGS))))
    return table


# --------------------------------------------------------------------------- input


def read_stdin() -> str:
    """All of stdin as UTF-8 whatever the locale says; other bytes are kept for :func:`check_utf8` to report."""
    return sys.stdin.buffer.read().decode("utf-8", errors="surrogateescape")


# --------------------------------------------------------------------------- confidence (--probs, /probs)

# Bands of the model's probability for a sampled character, likeliest first: (lowest p, style, legend label).
# Colour tells them apart; the low bands are also italic and underlined, which survive NO_COLOR.
BANDS = ((0.8, "green", "80% or more"), (0.5, "yellow", "50-80%"), (0.2, "dark_orange italic", "20-50%"),
         (0.0, "red underline", "under 20%"))
TOP_CANDIDATES = 10


def band_style(p: float) -> str:
    """The style of a character the model gave probability ``p``."""
    return next(style for low, style, _ in BANDS if p >= low)


def probs_legend() -> Text:
    """What the colours of ``--probs`` mean, shown once."""
    parts: list[str | tuple[str, str]] = ["colour = the model's probability of each character: "]
    for index, (_, style, label) in enumerate(BANDS):
        parts += [(label, style), ", " if index < len(BANDS) - 1 else ""]
    return Text.assemble(*parts, ("  (before temperature, top-k and top-p)", "dim"))


def probs_line(token: str, p: float) -> str:
    """One sampled token and the model's probability of it, for ``--probs`` in a pipe: ``e<TAB>0.9312``."""
    return f"{show_escapes(token)}\t{p:.4f}\n"


def top_candidates(session: Session, console: Console) -> None:
    """``/probs``: the likeliest next tokens (characters) after the conversation so far, as bars, and the entropy."""
    from tinyshake import inspection

    unit = tokens.unit(session.loaded.tokenizer)
    dist = inspection.distribution_after(session.loaded.model, session.loaded.tokenizer, session.history)
    top = dist[:TOP_CANDIDATES]
    fancy = use_rich(console.file)
    console.print(Text(f"the next {unit} after the {len(session.history)} {unit}s so far:", style="dim"))
    console.print(_render.bars([f"  {_render.visible(c)}" for c, _ in top], [p for _, p in top], fancy))
    console.print(Text(f"entropy {inspection.entropy_bits(dist):.2f} bits", style="dim"))


# --------------------------------------------------------------------------- streaming


# writes a piece of a reply, given its tokens' texts and the model's probability of each (with --probs)
Show = Callable[[str, Sequence[tuple[str, float]]], None]


@dataclass
class ReplyStats:
    """What a reply did: characters and tokens sampled, time taken, and why it ended ("stop", "limit" or "interrupted")."""

    chars: int
    tokens: int
    seconds: float
    ended: str
    at_line_start: bool

    @property
    def rate(self) -> float:
        """Characters per second, the figure the stats line shows."""
        return self.chars / self.seconds if self.seconds > 0 else 0.0


def text_writer(out: TextIO) -> Show:
    """Each piece as it is, flushed at once: the plain way to stream a reply."""
    def show(piece: str, spans: Sequence[tuple[str, float]]) -> None:
        out.write(piece)
        out.flush()
    return show


def probs_text_writer(out: TextIO) -> Show:
    """``--probs`` in a pipe or a script: one line per token, the token (escaped) and its probability."""
    def show(piece: str, spans: Sequence[tuple[str, float]]) -> None:
        out.write("".join(probs_line(token, p) for token, p in spans))
        out.flush()
    return show


def probs_colour_writer(console: Console) -> Show:
    """``--probs`` on a terminal: each token in the colour of the model's probability of it."""
    def show(piece: str, spans: Sequence[tuple[str, float]]) -> None:
        console.print(Text.assemble(*((token, band_style(p)) for token, p in spans)), end="", soft_wrap=True)
        console.file.flush()
    return show


def write_reply(stream: sampling.TextStream, show: Show, interrupted: Callable[[], bool]) -> ReplyStats:
    """Show each piece of ``stream`` the moment it is sampled, until it ends or ``interrupted()``.

    The text shown is always the start of ``stream.text``, so its characters
    map back to the tokens they came from (one each for characters, several
    for a BPE token), and with ``--probs`` to their tokens' probabilities.
    """
    start = time.perf_counter()
    last, ended, shown = "\n", "limit", 0

    def emit(piece: str) -> None:
        nonlocal shown
        show(piece, stream.spans(shown, shown + len(piece)) if stream.probs else [])
        shown += len(piece)

    for piece in stream:
        emit(piece)
        last = piece
        if interrupted():
            ended, rest = "interrupted", stream.close()
            if rest:
                emit(rest)  # held back as a possible stop string, but the reply ends here
            last += rest
            break
    if stream.stopped is not None:
        ended = "stop"
    return ReplyStats(len(stream.text), len(stream.ids), time.perf_counter() - start, ended, last.endswith("\n"))


def stats_text(stats: ReplyStats) -> Text:
    """The dim line after a reply: characters (and tokens, for a BPE), characters per second, and how it ended."""
    tokens = f" ({stats.tokens:,} tokens)" if stats.tokens != stats.chars else ""
    line = f"{stats.chars:,} chars{tokens} in {stats.seconds:.2f} s · {stats.rate:,.0f} chars/s"
    if stats.ended == "interrupted":
        line += " · interrupted"
    elif stats.ended == "limit":
        line += " · max_new_tokens reached"
    return Text(line, style="dim")


# --------------------------------------------------------------------------- the two modes


def continue_once(session: Session, text: str, out: TextIO) -> None:
    """Non-interactive mode: stream one continuation of ``text`` to ``out``, and nothing else.

    With ``--probs`` the continuation comes as one ``token<TAB>probability`` line per token.
    """
    ids, _ = session.encode(text)
    show = probs_text_writer(out) if session.probs else text_writer(out)
    with sigint_flag() as interrupted:
        stats = write_reply(session.start(ids), show, interrupted)
    if not (stats.at_line_start or session.probs):
        out.write("\n")  # text ends with a newline, as every Unix text tool's does: the shell's prompt is on its own
    out.flush()
    if stats.ended == "interrupted":
        raise typer.Exit(INTERRUPT_EXIT)


def reply(session: Session, line: str, console: Console) -> None:
    """One turn: the user's line (and its newline) joins the text, the model's reply streams, then the stats."""
    ids, dropped = session.encode(line + "\n" if line else "")
    if dropped:
        console.print(Text(f"dropped {', '.join(map(repr, dropped))} (not in the vocabulary)", style="dim"))
    out = console.file
    show = probs_colour_writer(console) if session.probs else text_writer(out)
    with sigint_flag() as interrupted:
        stream = session.start(ids)
        stats = write_reply(stream, show, interrupted)
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
        console.print(help_table())
        console.print(Text(HELP_END.format(block=session.block_size)))
    elif command == "/show":
        rows = [("run", session.loaded.name), ("weights", session.loaded.weights), ("device", str(session.device)),
                ("context", f"{len(session.history)} of {session.block_size} "
                            f"{tokens.unit(session.loaded.tokenizer)}s"), *session.describe()]
        console.print(Text("\n".join(f"{k:<15} {v}" for k, v in rows)))
    elif command == "/reset":
        session.history = []
        console.print(Text("Conversation cleared.", style="dim"))
    elif command == "/probs":
        top_candidates(session, console)
    elif command == "/set" and len(args) == 2:
        was = session.probs
        value = apply_setting(session, args[0], args[1])
        console.print(Text(f"{args[0]} = {value}", style="dim"))
        if session.probs and not was:
            console.print(probs_legend())
    elif command == "/set":
        raise UsageError("usage: /set NAME VALUE, e.g. /set temperature 0.8 (see /help)")
    else:
        raise UsageError(f"unknown command {command!r}; /help lists the commands")
    return True


def _line_editing() -> None:
    """Arrow keys and input history at the prompt, as in a shell (where this Python has readline)."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401


def evaluations(loaded: LoadedRun) -> str:
    """The val losses a learner wants next to a model: of the weights loaded, and the run's final evaluation."""
    rec = loaded.record
    if loaded.weights == "best" and rec.best_val is not None:
        facts = [f"best val {rec.best_val:.4f} (step {loaded.step}), {rec.bits_per_char(rec.best_val):.4f} bits/char"]
    else:
        found = [m for m in rec.metrics if m.step == loaded.step]
        facts = [f"val {found[-1].val:.4f}, {rec.bits_per_char(found[-1].val):.4f} bits/char"] if found else []
    if rec.final is not None:
        facts.append(f"final val {rec.final.val:.4f} (step {rec.final.step})")
    return " · ".join(facts)


def banner(session: Session) -> Text:
    """What the user is talking to (run, weights, stage, training, size) and how to get help or leave."""
    loaded = session.loaded
    params = sum(p.numel() for p in loaded.model.parameters())
    facts = [loaded.name, f"{loaded.weights} weights", f"stage {loaded.record.stage}",
             f"step {loaded.step}", evaluations(loaded), f"block {session.block_size}", f"{params:,} parameters",
             str(session.device)]
    return Text.assemble(("Chatting with ", "dim"), (" · ".join(f for f in facts if f), "bold"),
                         ("\nType text and the model continues it. /help for commands, Ctrl-D or /bye to exit.", "dim"))


def interactive(session: Session, console: Console) -> None:
    """The terminal loop: read a line, run a command or stream a reply; errors are one line and the loop goes on."""
    _line_editing()
    console.print(banner(session))
    if session.probs:
        console.print(probs_legend())
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


@handle_errors
def chat(
    run: Annotated[Optional[str], typer.Argument(
        help="Run to chat with (default: the one trained most recently).", show_default=False)] = None,
    run_option: Annotated[Optional[str], typer.Option(
        "--run", "-r", help="The same as RUN, as earlier versions named it.", show_default=False)] = None,
    prompt: Annotated[Optional[str], typer.Option(
        "--prompt", "-p", help="Continue this text once, print only the continuation, and exit.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens in one reply (characters, for a character run).")] = 500,
    temperature: Annotated[float, typer.Option(
        "--temperature", "-t", help="0 is greedy (argmax), as is anything under 1e-6; above 1 is wilder.")] = 1.0,
    top_k: Annotated[Optional[int], typer.Option(help="Sample only from the k likeliest characters.")] = None,
    top_p: Annotated[Optional[float], typer.Option(
        help="Sample only from the likeliest characters that make up this much probability.")] = None,
    seed: Annotated[Optional[int], typer.Option(
        help="Random seed: the same run, seed, text and settings give the same reply (default: a fresh one).")] = None,
    stop: Annotated[Optional[list[str]], typer.Option(
        help="End a reply at this text; repeatable; \\n is a newline, '' means none (default: a blank line).")] = None,
    unknown: Annotated[Unknown, typer.Option(case_sensitive=False,
        help="Characters not in the vocabulary: an error, or drop them.")] = Unknown.error,
    overflow: Annotated[Overflow, typer.Option(case_sensitive=False,
        help="Past the block size: refill the cache from the last half block (fast), "
             "or crop and recompute every step (the lecture's exact semantics).")] = Overflow.refill,
    no_cache: Annotated[bool, typer.Option(
        "--no-cache", help="Recompute the whole context for every character (the reference path, slow).")] = False,
    weights: WeightsOpt = Weights.best,
    probs: Annotated[bool, typer.Option(
        "--probs", help="Show how sure the model was of each token: coloured on a terminal; "
                        "piped, one 'token<TAB>probability' line per token (a character, for a character run).")] = False,
    device_name: Annotated[str, typer.Option(
        "--device", help="cpu (fastest for one stream of characters), auto, cuda or mps.")] = "cpu",
) -> None:
    """Chat with a trained run: type text and watch the model continue it, character by character."""
    if run is not None and run_option is not None and run != run_option:
        raise UsageError(f"RUN is {run!r} and --run {run_option!r}; name the run once")
    try:  # torch and the weights load for seconds: a Ctrl-C then leaves the shell's prompt on a line of its own
        _torch.load()
        from tinyshake import checkpoint, sampling
        from tinyshake.training import device

        settings = sampling.SamplingSettings(temperature=temperature, top_k=top_k, top_p=top_p,
                                             max_new_tokens=max_new_tokens, use_cache=not no_cache,
                                             overflow=overflow.value).validate()
        if seed is not None:
            sampling.check_seed(seed)  # with the other settings, before the run loads
        if prompt is not None:
            check_utf8(prompt, "--prompt")
        elif "stdin" in CLOSED_AT_START:
            raise UsageError("standard input is closed: give the text with --prompt, or pipe it in")
        name = record.resolve(run if run is not None else run_option)
        dev = device.resolve(device_name).device
        session = Session(checkpoint.load(name, dev, weights=weights.value), settings, parse_stops(stop), unknown,
                          dev, seed, probs)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        raise typer.Exit(INTERRUPT_EXIT) from None
    with sampling.sampling_threads(session.loaded.model, dev):
        if prompt is None and sys.stdin.isatty():
            interactive(session, make_console())
            return
        continue_once(session, prompt if prompt is not None else read_stdin(), sys.stdout)
