"""``tinyshake inspect``: look inside a trained run: its tokens, its attention on a prompt, its next token, its embeddings.

The numbers come from :mod:`tinyshake.inspection`; this module loads the run,
draws them (Rich on a terminal, plain characters when piped or with NO_COLOR)
or prints them as one JSON object. Torch is imported inside the commands, so
``--help`` stays fast.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.columns import Columns
from rich.console import Console
from rich.text import Text

from tinyshake import tokens
from tinyshake.store import record
from tinyshake.cli import _render, _torch
from tinyshake.cli._options import Weights, WeightsOpt
from tinyshake.cli._output import handle_errors, make_console, use_rich
from tinyshake.errors import UsageError

if TYPE_CHECKING:
    from tinyshake.checkpoint import LoadedRun
    from tinyshake.inspection import AttentionMaps

app = typer.Typer(
    help="Look inside a trained run: its tokens, attention on your prompt, the distribution of the next token, "
         "the embeddings.",
    no_args_is_help=True,
    rich_markup_mode=None,  # click's help: hanging indents, and flags without a metavar, at any width
)

MEAN = "mean"
NEIGHBOURS = 10
SCATTER_HEIGHT = 24
SPEECH = "To be, or not to be, that is the question:\\nWhether 'tis nobler in the mind to suffer"


RunArg = Annotated[Optional[str], typer.Argument(help="The run to look at (default: the most recent).",
                                                 show_default=False)]
PromptOpt = Annotated[str, typer.Option("--prompt", "-p", help="The text to feed the model (\\n is a newline).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a picture.")]


def load_run(run: Optional[str], weights: Weights) -> LoadedRun:
    """The named run, or the most recently trained one, on the CPU: one forward pass needs nothing faster."""
    from tinyshake import checkpoint

    return checkpoint.load(record.resolve(run), "cpu", weights=weights.value)


def decode_prompt(text: str) -> str:
    """``\\n`` typed on the command line means a newline, as in ``chat --stop``."""
    return text.replace("\\n", "\n")


def header(loaded: LoadedRun, fancy: bool, what: str) -> Text:
    stage = loaded.record.stage
    return Text.assemble((loaded.name, "bold cyan" if fancy else ""), f" ({stage}, {loaded.weights} weights): {what}")


def emit(payload: dict[str, Any]) -> None:
    print(json.dumps(payload))


# --------------------------------------------------------------------------- tokens


@app.command("tokens")
@handle_errors
def tokens_of(
    run: RunArg = None,
    text: Annotated[str, typer.Option("--text", "-t", help="The text to cut into tokens (\\n is a newline).")] = SPEECH,
    as_json: JsonOpt = False,
) -> None:
    """Your text cut into the run's tokens (alternating colours; `|` between tokens when piped), and characters per token."""
    name = record.resolve(run)
    tokenizer = tokens.of_run(name)
    decoded = decode_prompt(text)
    pieces = tokens.pieces(tokenizer, decoded)
    per_token = len(decoded) / len(pieces) if pieces else 0.0
    if as_json:
        emit({"run": name, "tokenizer": tokenizer.kind, "vocab_size": tokenizer.vocab_size, "tokens": pieces,
              "ids": tokenizer.encode(decoded), "characters": len(decoded), "chars_per_token": per_token})
        return
    console = make_console()
    fancy = use_rich(console.file)
    console.print(Text.assemble((name, "bold cyan" if fancy else ""), f" ({tokens.describe(tokenizer)}): "
                                "your text cut into its tokens"))
    console.print()
    console.print(_render.token_pieces(pieces, fancy))
    console.print()
    console.print(f"{len(decoded):,} characters in {len(pieces):,} tokens: {per_token:.2f} characters per token",
                  markup=False)


# --------------------------------------------------------------------------- attention


def pick(count: int, chosen: Optional[int], what: str) -> list[int]:
    """The layers or heads to draw: all of them, or the one chosen (checked against how many there are)."""
    if chosen is None:
        return list(range(count))
    if not 0 <= chosen < count:
        raise UsageError(f"--{what} must be between 0 and {count - 1}: this model has {count} {what}s")
    return [chosen]


def parse_head(head: Optional[str]) -> Optional[int | str]:
    if head is None:
        return None
    if head.lower() == MEAN:
        return MEAN
    try:
        return int(head)
    except ValueError:
        raise UsageError(f"--head must be a head's number or `{MEAN}`, not {head!r}") from None


def tiles(maps: AttentionMaps, layers: list[int], head: Optional[int | str], shown: int, fancy: bool) -> list[Text]:
    """One heatmap per layer and head (or per layer, for the mean over heads), of the last ``shown`` positions."""
    tokens = maps.tokens[-shown:]
    weights = maps.weights[:, :, -shown:, -shown:]
    found = []
    if head == MEAN and weights.shape[1] == 1:  # the mean of one head is that head: name it so
        head = 0
    for layer in layers:
        if head == MEAN:
            found.append((f"layer {layer} \u00b7 mean of {weights.shape[1]} heads", weights[layer].mean(dim=0)))
            continue
        for h in pick(weights.shape[1], head if isinstance(head, int) else None, "head"):
            found.append((f"layer {layer} \u00b7 head {h}", weights[layer, h]))
    return [_render.heatmap(m.tolist(), tokens, tokens, fancy, title=title) for title, m in found]


def fits(console: Console, tokens: list[str]) -> int:
    """How many positions one heatmap can show in the console's width (two columns per key, the rest for labels).

    Tokens of several characters label their rows with position and text (see :func:`_render.heatmap`).
    """
    label = 1 if all(len(t) == 1 for t in tokens) else 3 + max(len(_render.visible(t)) for t in tokens)
    return max(1, min(len(tokens), (console.width - label - 2) // 2))


@app.command("attention")
@handle_errors
def attention(
    run: RunArg = None,
    prompt: PromptOpt = "To be, or not to be",
    layer: Annotated[Optional[int], typer.Option(help="Only this layer (from 0; default: every layer).")] = None,
    head: Annotated[Optional[str], typer.Option(
        help="Only this head (from 0), or `mean` for the mean over each layer's heads (the default).",
        show_default=False)] = None,
    all_heads: Annotated[bool, typer.Option("--all-heads", help="Every head's map, not their mean per layer.")] = False,
    weights: WeightsOpt = Weights.best,
    as_json: JsonOpt = False,
) -> None:
    """The attention weights of a trained run on your prompt: rows are queries, columns the keys they look at.

    One map per layer, the mean over its heads, unless --head or --all-heads asks for the heads themselves.
    """
    _torch.load()
    from tinyshake import inspection

    if all_heads and head is not None:
        raise UsageError("--all-heads shows every head and --head one of them; give one of the two")
    chosen_head = parse_head(head) if head is not None else None if all_heads else MEAN
    if as_json and (layer is not None or head is not None):
        raise UsageError("--json prints every layer and head; leave out --layer and --head")
    loaded = load_run(run, weights)
    text = decode_prompt(prompt)
    maps = inspection.attention_maps(loaded.model, loaded.tokenizer, text)
    if as_json:
        emit({"run": loaded.name, "weights": loaded.weights, "tokens": maps.tokens,
              "attention": maps.weights.round(decimals=6).tolist()})
        return
    layers = pick(maps.weights.shape[0], layer, "layer")
    if isinstance(chosen_head, int):
        pick(maps.weights.shape[1], chosen_head, "head")
    console = make_console()
    fancy = use_rich(console.file)
    shown = fits(console, maps.tokens)
    console.print(header(loaded, fancy, "attention weights, rows are queries and columns the keys they attend to"))
    notes = []
    if len(text) > len("".join(maps.tokens)):
        notes.append(f"the model sees only the last {len(maps.tokens)} {tokens.unit(loaded.tokenizer)}s "
                     "(its block size)")
    if shown < len(maps.tokens):
        notes.append(f"showing the last {shown} positions, all that fit this terminal's width")
    for note in notes:
        console.print(Text(note, style="dim" if fancy else ""))
    console.print()
    console.print(Columns(tiles(maps, layers, chosen_head, shown, fancy), padding=(1, 3)))
    console.print(_render.legend(fancy))


# --------------------------------------------------------------------------- next


@app.command("next")
@handle_errors
def next_char(
    run: RunArg = None,
    prompt: PromptOpt = "To be, or not to be",
    top_k: Annotated[Optional[int], typer.Option(
        help="How many tokens (characters) to show (default: 10; with --json, every one).", min=1,
        show_default=False)] = None,
    weights: WeightsOpt = Weights.best,
    as_json: JsonOpt = False,
) -> None:
    """The distribution of the token (character) after your prompt: the likeliest as bars, and its entropy in bits."""
    _torch.load()
    from tinyshake import inspection

    loaded = load_run(run, weights)
    text = decode_prompt(prompt)
    dist = inspection.next_distribution(loaded.model, loaded.tokenizer, text)
    entropy = inspection.entropy_bits(dist)
    context = [loaded.tokenizer.tokens[i] for i in inspection.context_ids(loaded.model, loaded.tokenizer, text)]
    unit = tokens.unit(loaded.tokenizer)
    if as_json:
        emit({"run": loaded.name, "weights": loaded.weights, "tokens": context,
              "next": [{"char": c, "p": p} for c, p in dist[:top_k]], "entropy_bits": entropy})
        return
    top = dist[: top_k or 10]
    console = make_console()
    fancy = use_rich(console.file)
    seen = "".join(_render.visible(c) for c in context[-40:])
    console.print(header(loaded, fancy, f"the next {unit} after {'…' if len(context) > 40 else ''}{seen}"))
    console.print()
    console.print(_render.bars([f"  {_render.visible(c)}" for c, _ in top], [p for _, p in top], fancy))
    rest = 1.0 - sum(p for _, p in top)
    if len(top) < len(dist):
        console.print(f"  the other {len(dist) - len(top)} {unit}s: {rest:.4f}", markup=False)
    console.print()
    console.print(f"entropy {entropy:.2f} bits (0 is certain; {math.log2(len(dist)):.2f} is a uniform guess "
                  f"among {len(dist)} {unit}s)", markup=False)


# --------------------------------------------------------------------------- embeddings


def char_style(char: str) -> str:
    """Colour by kind, so the groups the model learned stand out: capitals, vowels, consonants, the rest."""
    if char.isupper():
        return "bold cyan"
    if char in "aeiou":
        return "bold magenta"
    if char.islower():
        return "green"
    return "yellow"


@app.command("embeddings")
@handle_errors
def embeddings(
    run: RunArg = None,
    char: Annotated[Optional[str], typer.Option(
        "--char", "-c", help="List this character's (or token's) nearest neighbours by cosine similarity "
                             "(\\n is a newline).",
        show_default=False)] = None,
    weights: WeightsOpt = Weights.best,
    as_json: JsonOpt = False,
) -> None:
    """The token embedding table as a map of the characters (PCA to 2-D); a bigram's table as a heatmap."""
    _torch.load()
    from tinyshake import inspection

    loaded = load_run(run, weights)
    chars = loaded.tokenizer.tokens
    table = inspection.embedding_table(loaded.model)
    target = decode_prompt(char) if char is not None else None
    neighbours = inspection.nearest(table, chars, target, NEIGHBOURS) if target is not None else None
    bigram = not hasattr(loaded.model, "blocks")
    if as_json:
        payload: dict[str, Any] = {"run": loaded.name, "weights": loaded.weights, "tokens": chars}
        if bigram:
            payload["next_probabilities"] = inspection.bigram_probabilities(loaded.model).round(decimals=6).tolist()
        else:
            projection = inspection.project(table, chars)
            payload.update(points=projection.points.tolist(), explained=list(projection.explained))
        if neighbours is not None:
            payload["neighbours"] = [{"char": c, "cosine": s} for c, s in neighbours]
        emit(payload)
        return
    console = make_console()
    fancy = use_rich(console.file)
    if neighbours is not None:
        console.print(header(loaded, fancy, f"the {tokens.unit(loaded.tokenizer)}s whose embeddings are nearest "
                                            f"{_render.visible(target)}'s"))
        console.print(_render.bars([f"  {_render.visible(c)}" for c, _ in neighbours], [s for _, s in neighbours],
                                   fancy))
        return
    if bigram:
        console.print(header(loaded, fancy, "its table as next-character probabilities: row = this character, "
                                            "column = the next"))
        probs = inspection.bigram_probabilities(loaded.model)
        console.print(_render.heatmap(probs.tolist(), chars, chars, fancy, cell=1))
        console.print(_render.legend(fancy))
        return
    projection = inspection.project(table, chars)
    width = max(20, min(console.width, 100))
    alphabet = loaded.tokenizer.chars  # a BPE's longer tokens would not fit a cell: its characters are drawn
    picture, hidden = _render.scatter([tuple(p) for p in projection.points[:len(alphabet)].tolist()],
                                      [_render.visible(c) for c in alphabet], width, SCATTER_HEIGHT,
                                      [char_style(c) for c in alphabet] if fancy else ())
    first, second = (f"{share:.0%}" for share in projection.explained)
    console.print(header(loaded, fancy, f"its {table.shape[1]}-wide token embeddings, projected onto their two "
                                        f"principal components ({first} and {second} of the variance)"))
    console.print(picture)
    if len(alphabet) < len(chars):
        console.print(f"the {len(alphabet)} characters of its {len(chars):,} tokens are drawn (--json has them all)",
                      markup=False)
    if hidden:
        console.print(f"{hidden} characters overlap others and are not shown", markup=False)
    if fancy:
        console.print(Text.assemble(("capitals", "bold cyan"), "  ", ("vowels", "bold magenta"), "  ",
                                    ("consonants", "green"), "  ", ("the rest", "yellow")))
