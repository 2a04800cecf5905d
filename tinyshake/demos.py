"""The lecture's self-attention steps as small, live computations.

Each demo is a plain function that computes its tensors from a seed and returns
a :class:`Demo`: a title, a short explanation and the steps to show, each step a
code-like label with the value it produced. Nothing here is stored; with the
default seeds the numbers are the lecture notebook's. Rendering (Rich panels,
heatmaps, bars) is the command line's job, so this module imports neither Rich
nor Typer.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, NamedTuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from tinyshake import corpus as corpora
from tinyshake.errors import UsageError
from tinyshake.models.model import ModelConfig, build
from tinyshake.sampling import check_seed
from tinyshake.training.train import estimate_loss, get_batch

View = Literal["value", "heatmap", "bars", "pieces"]
Value = Union[torch.Tensor, torch.Size, bool, float, int, str, list, tuple, dict]

NOTEBOOK_SEED = 1337
MATMUL_SEED = 42
SOFTMAX_LOGITS = (0.1, -0.2, 0.3, -0.3, 0.5)
SHARPEN = 8
HEAD_SIZE = 16
LECTURE_BATCH, LECTURE_BLOCK = 4, 8  # the lecture's first look at a batch
SCRIPT_BATCH, SCRIPT_EVAL_ITERS = 32, 200  # the bigram script's batches and loss estimate
BPE_TEXT = "O Romeo, Romeo! wherefore art thou Romeo?"  # one word, learned a merge at a time
BPE_MERGES = 6


@dataclass(frozen=True)
class Step:
    """One thing to show: ``code`` that ran (may be empty), then ``label`` and the ``value`` it gave.

    ``view`` asks the renderer for a picture as well as the numbers: a heatmap for
    a matrix of weights, bars for a probability vector, the text cut at its
    token boundaries for a list of token texts.
    """

    label: str
    value: Value
    code: str = ""
    view: View = "value"


@dataclass(frozen=True)
class Demo:
    """What one demo computed: ``seed`` is the one used (None when nothing was random)."""

    name: str
    title: str
    explanation: str
    steps: tuple[Step, ...]
    seed: int | None


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's global generator as the notebook does, restoring the caller's state afterwards."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        yield


def _causal_mask(size: int) -> torch.Tensor:
    return torch.tril(torch.ones(size, size))


# -- the lecture's first half: tokens, batches, the loss to expect ---------------------


def _corpus() -> corpora.Corpus:
    """The cached tiny Shakespeare, verified: these demos show the lecture's numbers from the real text."""
    return corpora.load(corpora.DEFAULT_CORPUS)


def tokens(seed: int | None = None) -> Demo:
    """The character vocabulary and the encode/decode pair that turn text into integers and back."""
    data = _corpus()
    chars, encode = data.tokenizer.chars, data.tokenizer.encode
    steps = (
        Step("len(text)", len(data.text), "with open('input.txt', 'r', encoding='utf-8') as f:\n    text = f.read()"),
        Step("print(text[:100])", data.text[:100]),
        Step("print(''.join(chars))", "".join(chars), "chars = sorted(list(set(text)))\nvocab_size = len(chars)"),
        Step("vocab_size", len(chars)),
        Step(
            'encode("hii there")', encode("hii there"),
            "stoi = { ch:i for i,ch in enumerate(chars) }\nitos = { i:ch for i,ch in enumerate(chars) }\n"
            "encode = lambda s: [stoi[c] for c in s]\ndecode = lambda l: ''.join([itos[i] for i in l])",
        ),
        Step('print(decode(encode("hii there")))', data.tokenizer.decode(encode("hii there"))),
    )
    explanation = (
        f"The model reads characters. The vocabulary is every distinct character of the text, sorted: "
        f"{len(chars)} of them, from the newline and the space to 'z'. A character's number is its place in that "
        "list, so encoding is a lookup and decoding the reverse lookup. Real tokenizers (GPT-2's has 50,257 "
        "sub-word tokens) trade a bigger vocabulary for shorter sequences; characters keep both the code and the "
        "model tiny."
    )
    return Demo("tokens", "Characters to integers and back", explanation, steps, None)


def _lessons(x: torch.Tensor, y: torch.Tensor) -> str:
    """What one block teaches: each prefix of the input, and the character that follows it."""
    return "\n".join(f"when input is {x[: t + 1].tolist()} the target: {int(y[t])}" for t in range(len(x)))


def batch(seed: int | None = None) -> Demo:
    """The 90/10 split, one block and the eight lessons in it, and a random batch of blocks."""
    seed = NOTEBOOK_SEED if seed is None else seed
    data = _corpus()
    whole = torch.cat([data.train, data.val])
    block = LECTURE_BLOCK
    x, y = data.train[:block], data.train[1 : block + 1]
    with _seeded(seed):
        xb, yb = get_batch(data.train, LECTURE_BATCH, block)
    steps = (
        Step("data.shape, data.dtype", (whole.shape, whole.dtype), "data = torch.tensor(encode(text), dtype=torch.long)"),
        Step("len(train_data), len(val_data)", (len(data.train), len(data.val)),
             "n = int(0.9*len(data)) # first 90% will be train, rest val\ntrain_data = data[:n]\nval_data = data[n:]"),
        Step("train_data[:block_size+1]", data.train[: block + 1], f"block_size = {block}"),
        Step("", _lessons(x, y),
             "x = train_data[:block_size]\ny = train_data[1:block_size+1]\nfor t in range(block_size):\n"
             "    context = x[:t+1]\n    target = y[t]\n"
             "    print(f\"when input is {context.tolist()} the target: {target}\")"),
        Step("xb", xb, f"torch.manual_seed({seed})\nbatch_size = {LECTURE_BATCH}\nxb, yb = get_batch('train')"),
        Step("yb", yb),
    )
    explanation = (
        "The text becomes one long tensor of character ids. The first 90% is for training, the last 10% is held "
        "out to check that the model generalises rather than memorises. Training never reads the whole text at "
        "once: it reads blocks of block_size + 1 characters, and each block holds block_size lessons, one per "
        "prefix, from a context of one character up to block_size; that is why the model can later start from "
        "any shorter context. A batch stacks blocks from random places, processed independently and in parallel; "
        "yb holds each position's target, the character after it."
    )
    return Demo("batch", "The split, a block, a batch", explanation, steps, seed)


def loss(seed: int | None = None) -> Demo:
    """The loss an untrained model should start at, and why the bigram's initial loss is higher."""
    seed = NOTEBOOK_SEED if seed is None else seed
    data = _corpus()
    vocab = data.tokenizer.vocab_size
    config = ModelConfig(vocab_size=vocab, arch="bigram")
    with _seeded(seed):
        xb, yb = get_batch(data.train, LECTURE_BATCH, LECTURE_BLOCK)
        torch.manual_seed(seed)
        model = build(config)
        logits, first = model(xb, yb)
        table = model.token_embedding_table.weight
        spread, logsumexp = table.std(), torch.logsumexp(table, dim=-1).mean()
        uniform = F.cross_entropy(torch.zeros(xb.numel(), vocab), yb.flatten())
    with _seeded(seed):
        scripted = estimate_loss(build(config), {"train": data.train, "val": data.val}, SCRIPT_BATCH,
                                 LECTURE_BLOCK, SCRIPT_EVAL_ITERS)
    steps = (
        Step(f"-torch.log(torch.tensor(1/{vocab}))", -torch.log(torch.tensor(1 / vocab)),
             "# knowing nothing, the best guess gives every character the same chance"),
        Step("loss", first,
             f"torch.manual_seed({seed})\nxb, yb = get_batch('train')   # the batch of `demo batch`\n"
             f"torch.manual_seed({seed})\nm = BigramLanguageModel(vocab_size)\nlogits, loss = m(xb, yb)"),
        Step("m.token_embedding_table.weight.std()", spread, "# nn.Embedding draws its table from N(0, 1)"),
        Step("torch.logsumexp(m.token_embedding_table.weight, dim=-1).mean()", logsumexp),
        Step(f"math.log({vocab}) + 0.5", math.log(vocab) + 0.5,
             "# for random N(0, 1) logits, logsumexp averages about ln(vocab) + variance / 2"),
        Step(f"F.cross_entropy(torch.zeros({xb.numel()}, {vocab}), yb.flatten())", uniform,
             "# equal logits are the uniform guess"),
        Step("{split: round(l, 4) for split, l in estimate_loss().items()}",
             {split: round(value, 4) for split, value in scripted.items()},
             f"# the bigram script: seed {seed}, the model, then {SCRIPT_EVAL_ITERS} batches of "
             f"{SCRIPT_BATCH} x {LECTURE_BLOCK} per split\n"
             f"torch.manual_seed({seed})\nmodel = BigramLanguageModel(vocab_size)"),
    )
    explanation = (
        f"Cross-entropy is -ln of the probability the model gave the right character. A model that knows nothing "
        f"should give each of the {vocab} characters 1/{vocab}, a loss of -ln(1/{vocab}) = {math.log(vocab):.4f}. "
        "The untrained bigram starts higher: its logits are random numbers of standard deviation 1, so its guesses "
        "are confidently uneven, and confidence in the wrong character costs more than it gains on the right one "
        "(on average the loss is about ln(vocab) + 1/2). Its step-0 estimate, 4.7305 in the lecture's log, is this "
        "excess; zeroing the logits would bring it down to exactly the uniform loss, and training soon passes it."
    )
    return Demo("loss", "The loss to expect before training", explanation, steps, seed)


# -- bow ----------------------------------------------------------------------


def bow(seed: int | None = None) -> Demo:
    """Running averages over the past, by a loop, by a triangular matmul and by masked softmax."""
    seed = NOTEBOOK_SEED if seed is None else seed
    B, T, C = 4, 8, 2
    with _seeded(seed):
        x = torch.randn(B, T, C)
    xbow = torch.zeros(B, T, C)
    for b in range(B):
        for t in range(T):
            xbow[b, t] = x[b, : t + 1].mean(0)
    tril = _causal_mask(T)
    xbow2 = (tril / tril.sum(1, keepdim=True)) @ x
    xbow3 = F.softmax(tril.masked_fill(tril == 0, float("-inf")), dim=-1) @ x
    steps = (
        Step("x[0]", x[0], f"torch.manual_seed({seed})\nB, T, C = 4, 8, 2\nx = torch.randn(B, T, C)"),
        Step(
            "xbow[0]",
            xbow[0],
            "xbow = torch.zeros(B, T, C)\nfor b in range(B):\n    for t in range(T):\n"
            "        xbow[b, t] = x[b, :t+1].mean(0)",
        ),
        Step(
            "torch.allclose(xbow, xbow2, atol=1e-6)",
            torch.allclose(xbow, xbow2, atol=1e-6),
            "wei = torch.tril(torch.ones(T, T))\nwei = wei / wei.sum(1, keepdim=True)\nxbow2 = wei @ x",
        ),
        Step(
            "torch.allclose(xbow, xbow3, atol=1e-6)",
            torch.allclose(xbow, xbow3, atol=1e-6),
            "tril = torch.tril(torch.ones(T, T))\nwei = tril.masked_fill(tril == 0, float('-inf'))\n"
            "wei = F.softmax(wei, dim=-1)\nxbow3 = wei @ x",
        ),
    )
    explanation = (
        "A token may only learn from the tokens before it. The crudest way to let it is to replace each "
        "position by the average of itself and everything earlier: a bag of words. Written as a double loop "
        "this is slow, but the same averages come from one matrix product with a row-normalised "
        "lower-triangular matrix, or from a softmax over a matrix whose future entries are -inf, which is "
        "the form self-attention builds on."
    )
    return Demo("bow", "Bag-of-words averaging, three ways", explanation, steps, seed)


# -- matmul -------------------------------------------------------------------

_MATMUL_FORMS: tuple[tuple[str, Callable[[], torch.Tensor]], ...] = (
    ("a = torch.ones(3, 3)", lambda: torch.ones(3, 3)),
    ("a = torch.tril(torch.ones(3, 3))", lambda: _causal_mask(3)),
    (
        "a = torch.tril(torch.ones(3, 3))\na = a / torch.sum(a, 1, keepdim=True)",
        lambda: _causal_mask(3) / _causal_mask(3).sum(1, keepdim=True),
    ),
)


def matmul(seed: int | None = None) -> Demo:
    """How multiplying by a (normalised) lower-triangular matrix sums or averages the rows above."""
    seed = MATMUL_SEED if seed is None else seed
    with _seeded(seed):
        b = torch.randint(0, 10, (3, 2)).float()
    setup = f"torch.manual_seed({seed})\nb = torch.randint(0, 10, (3, 2)).float()\n"
    steps: list[Step] = []
    for index, (code, make_a) in enumerate(_MATMUL_FORMS):
        a = make_a()
        prefix = setup if index == 0 else ""
        steps += [Step("a", a, f"{prefix}{code}\nc = a @ b"), Step("b", b), Step("c", a @ b)]
    explanation = (
        "Row i of a @ b is a weighted sum of the rows of b, weighted by row i of a. With a matrix of ones "
        "every row of c is the sum of all of b. Keeping only the lower triangle makes row i sum just rows "
        "0..i, and dividing each row of a by its sum turns those sums into running averages."
    )
    return Demo("matmul", "The triangular-matmul trick", explanation, tuple(steps), seed)


# -- attention and scaling share the notebook's random stream ------------------


class _Head(NamedTuple):
    key: nn.Linear
    query: nn.Linear
    value: nn.Linear


def _make_head(C: int, head_size: int = HEAD_SIZE) -> _Head:
    """Key, query and value projections, created in the notebook's order (so from the same draws)."""
    key = nn.Linear(C, head_size, bias=False)
    query = nn.Linear(C, head_size, bias=False)
    value = nn.Linear(C, head_size, bias=False)
    return _Head(key, query, value)


def _notebook_head() -> tuple[torch.Tensor, _Head]:
    """The attention cell's draws: ``x`` of shape (4, 8, 32), then the head (call inside ``_seeded``)."""
    x = torch.randn(4, 8, 32)
    return x, _make_head(32)


def _attend(head: _Head, x: torch.Tensor, mask: bool, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One head of self-attention on ``x``: the weights and the output."""
    wei = head.query(x) @ head.key(x).transpose(-2, -1) * scale
    if mask:
        T = x.shape[-2]
        wei = wei.masked_fill(_causal_mask(T) == 0, float("-inf"))
    wei = F.softmax(wei, dim=-1)
    return wei, wei @ head.value(x)


@torch.no_grad()
def attention(seed: int | None = None, mask: bool = True) -> Demo:
    """One head of self-attention: data-dependent weights, causal (decoder) or not (encoder)."""
    seed = NOTEBOOK_SEED if seed is None else seed
    with _seeded(seed):
        x, head = _notebook_head()
    wei, out = _attend(head, x, mask)
    masking = "wei = wei.masked_fill(tril == 0, float('-inf'))\n" if mask else ""
    code = (
        f"torch.manual_seed({seed})\nB, T, C = 4, 8, 32\nx = torch.randn(B, T, C)\nhead_size = 16\n"
        "key = nn.Linear(C, head_size, bias=False)\nquery = nn.Linear(C, head_size, bias=False)\n"
        "value = nn.Linear(C, head_size, bias=False)\nk, q, v = key(x), query(x), value(x)\n"
        "wei = q @ k.transpose(-2, -1)\n" + ("tril = torch.tril(torch.ones(T, T))\n" if mask else "")
        + masking + "wei = F.softmax(wei, dim=-1)\nout = wei @ v"
    )
    steps = (Step("wei[0]", wei[0], code, view="heatmap"), Step("out.shape", out.shape))
    if mask:
        title = "One head of causal self-attention"
        form = (
            "The triangular mask keeps the future hidden: row t only spreads its weight over tokens 0..t, "
            "which is what a decoder that predicts the next character needs."
        )
    else:
        title = "One head of self-attention, unmasked (encoder form)"
        form = (
            "Without the mask every token talks to every other, past and future: the encoder form, used "
            "when the whole sequence is known, as in sentiment analysis or translation's source side."
        )
    explanation = (
        "Instead of a flat average, each token emits a query (what it looks for) and a key (what it holds). "
        "Their dot products are the affinities, a softmax turns each row into weights, and the output "
        "mixes the tokens' values by those weights, so how much a token listens now depends on the data. "
        + form
    )
    return Demo("attention", title, explanation, steps, seed)


def scaling(seed: int | None = None) -> Demo:
    """Why the scores are multiplied by head_size ** -0.5 before the softmax."""
    seed = NOTEBOOK_SEED if seed is None else seed
    B, T = 4, 8
    with _seeded(seed):
        _notebook_head()  # the attention cell's draws come first in the notebook's stream
        k = torch.randn(B, T, HEAD_SIZE)
        q = torch.randn(B, T, HEAD_SIZE)
    raw = q @ k.transpose(-2, -1)
    scaled = raw * HEAD_SIZE**-0.5
    code = (
        f"torch.manual_seed({seed})\n# ... the attention demo's x, key, query and value ...\n"
        "k = torch.randn(B, T, head_size)\nq = torch.randn(B, T, head_size)\nwei = q @ k.transpose(-2, -1)"
    )
    steps = (
        Step("k.var()", k.var(), code),
        Step("q.var()", q.var()),
        Step("wei.var()", raw.var()),
        Step("F.softmax(wei[0, -1], dim=-1)", F.softmax(raw[0, -1], dim=-1), view="bars"),
        Step("wei.var()", scaled.var(), "wei = q @ k.transpose(-2, -1) * head_size**-0.5"),
        Step("F.softmax(wei[0, -1], dim=-1)", F.softmax(scaled[0, -1], dim=-1), view="bars"),
    )
    explanation = (
        "With unit-variance keys and queries, each score (a query dotted with a key) is a sum of head_size "
        "products, so its variance grows to about head_size. Fed such large scores, softmax saturates: it puts nearly all "
        "the weight on one token and a node learns from little else, especially at initialisation. "
        "Multiplying by head_size ** -0.5 brings the variance back to about 1 and keeps the weights diffuse."
    )
    return Demo("scaling", "Why attention scores are scaled", explanation, steps, seed)


# -- softmax ------------------------------------------------------------------


def softmax(seed: int | None = None) -> Demo:
    """Softmax of some scores and of the same scores times 8: bigger scores, peakier weights."""
    if seed is None:
        logits = torch.tensor(SOFTMAX_LOGITS)
        code = f"logits = torch.tensor({list(SOFTMAX_LOGITS)})"
    else:
        with _seeded(seed):
            logits = torch.randn(len(SOFTMAX_LOGITS))
        code = f"torch.manual_seed({seed})\nlogits = torch.randn({len(SOFTMAX_LOGITS)})"
    steps = (
        Step("torch.softmax(logits, dim=-1)", torch.softmax(logits, dim=-1), code, view="bars"),
        Step(f"torch.softmax(logits * {SHARPEN}, dim=-1)", torch.softmax(logits * SHARPEN, dim=-1), view="bars"),
    )
    explanation = (
        "Softmax turns scores into weights that sum to one. Multiply the same scores by 8 and the weights "
        "sharpen towards the largest: the distribution converges to one-hot. That is what unscaled "
        "attention scores do, and why they are scaled."
    )
    return Demo("softmax", "Softmax sharpening", explanation, steps, seed)


# -- beyond the notebook ---------------------------------------------------------


def _normalise(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Zero mean and unit variance along ``dim``, as BatchNorm (dim 0) or LayerNorm (dim 1) do."""
    return (x - x.mean(dim, keepdim=True)) / (x.var(dim, keepdim=True, unbiased=False) + 1e-5).sqrt()


def _tidy(t: torch.Tensor) -> torch.Tensor:
    """Round to 4 decimals (and turn -0. into 0.) so statistics print without float noise."""
    return t.round(decimals=4) + 0.0


def layernorm(seed: int | None = None) -> Demo:
    """Normalising rows (LayerNorm) versus columns (BatchNorm)."""
    seed = NOTEBOOK_SEED if seed is None else seed
    with _seeded(seed):
        x = torch.randn(4, 6) * 3 + 1
    bn, ln = _normalise(x, 0), _normalise(x, 1)
    code = (
        f"torch.manual_seed({seed})\nx = torch.randn(4, 6) * 3 + 1   # 4 rows (tokens), 6 features\n"
        "def norm(x, dim):   # zero mean, unit variance along dim\n"
        "    return (x - x.mean(dim, keepdim=True)) / (x.var(dim, keepdim=True, unbiased=False) + 1e-5).sqrt()"
    )
    steps = (
        Step("x", x, code),
        Step("bn.mean(0).round(decimals=4)", _tidy(bn.mean(0)), "bn = norm(x, 0)   # BatchNorm: each column"),
        Step("bn.std(0, unbiased=False).round(decimals=4)", _tidy(bn.std(0, unbiased=False))),
        Step("ln.mean(1).round(decimals=4)", _tidy(ln.mean(1)), "ln = norm(x, 1)   # LayerNorm: each row"),
        Step("ln.std(1, unbiased=False).round(decimals=4)", _tidy(ln.std(1, unbiased=False))),
        Step(
            "torch.allclose(ln, F.layer_norm(x, (6,)), atol=1e-5)",
            torch.allclose(ln, F.layer_norm(x, (6,)), atol=1e-5),
        ),
        Step("torch.allclose(norm(x[:2], 1)[0], ln[0])", torch.allclose(_normalise(x[:2], 1)[0], ln[0])),
        Step("torch.allclose(norm(x[:2], 0)[0], bn[0])", torch.allclose(_normalise(x[:2], 0)[0], bn[0])),
    )
    explanation = (
        "BatchNorm normalises each feature (column) across the batch, so a row's result depends on which "
        "other rows share its batch, and inference needs running averages. LayerNorm normalises each row "
        "across its own features: every token is handled alone, the same in training and in generation. "
        "The transformer uses LayerNorm, applied before attention and the feed-forward layer."
    )
    return Demo("layernorm", "LayerNorm against BatchNorm", explanation, steps, seed)


def _permuted(head: _Head, x: torch.Tensor, x_perm: torch.Tensor, perm: torch.Tensor, code: str) -> list[Step]:
    """Whether the head's outputs for the shuffled input are its outputs for the input, shuffled."""
    _, out = _attend(head, x, mask=False, scale=HEAD_SIZE**-0.5)
    _, out_perm = _attend(head, x_perm, mask=False, scale=HEAD_SIZE**-0.5)
    return [
        Step("torch.allclose(out_perm, out[perm], atol=1e-5)", torch.allclose(out_perm, out[perm], atol=1e-5), code),
        Step("(out_perm - out[perm]).abs().max()", (out_perm - out[perm]).abs().max()),
    ]


@torch.no_grad()
def positions(seed: int | None = None) -> Demo:
    """Without position embeddings, attention cannot tell the order of its tokens."""
    seed = NOTEBOOK_SEED if seed is None else seed
    T, C, vocab = 6, 32, 65
    with _seeded(seed):
        idx = torch.randint(0, vocab, (T,))
        perm = torch.randperm(T)
        tok_emb, pos_emb = nn.Embedding(vocab, C), nn.Embedding(T, C)
        head = _make_head(C)
    pos = pos_emb(torch.arange(T))
    setup = (
        f"torch.manual_seed({seed})\nidx = torch.randint(0, 65, (6,))   # six tokens\n"
        "perm = torch.randperm(6)           # a shuffle of them\n"
        "tok_emb, pos_emb = nn.Embedding(65, 32), nn.Embedding(6, 32)\n"
        "head = ...                         # one unmasked, scaled head, head_size 16"
    )
    steps = [Step("idx", idx, setup), Step("idx[perm]", idx[perm])]
    steps += _permuted(
        head, tok_emb(idx), tok_emb(idx[perm]), perm,
        "out = head(tok_emb(idx))\nout_perm = head(tok_emb(idx[perm]))",
    )
    steps += _permuted(
        head, tok_emb(idx) + pos, tok_emb(idx[perm]) + pos, perm,
        "pos = pos_emb(torch.arange(6))\nout = head(tok_emb(idx) + pos)\n"
        "out_perm = head(tok_emb(idx[perm]) + pos)",
    )
    explanation = (
        "Attention acts on a set of vectors: it has no notion of where a token sits. Shuffle the tokens and "
        "an unmasked head only shuffles its outputs the same way, so 'to be' and 'be to' look alike to it. "
        "Adding a learned position embedding to each token embedding breaks that symmetry, which is why the "
        "model adds one."
    )
    return Demo("positions", "Why tokens need position embeddings", explanation, tuple(steps), seed)


# -- the sequel: byte-pair encoding ----------------------------------------------


def get_stats(ids: list[int]) -> dict[tuple[int, int], int]:
    """How often each pair of neighbouring ids occurs, in order of first appearance (so ``max`` breaks ties early)."""
    counts: dict[tuple[int, int], int] = {}
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids: list[int], pair: tuple[int, int], idx: int) -> list[int]:
    """``ids`` with every occurrence of ``pair``, read left to right, replaced by ``idx``."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(idx)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


@dataclass(frozen=True)
class Merge:
    """One step of BPE: the most frequent pair, how often it occurred, the token it became, and the ids after."""

    pair: tuple[int, int]
    count: int
    idx: int
    token: str
    ids: list[int]


def bpe_merges(text: str, most: int) -> tuple[list[str], list[int], list[Merge]]:
    """The sequel's training loop on ``text``: up to ``most`` merges, while some pair still occurs twice.

    Starts from the text's sorted characters (the lecture's ids) and returns
    those tokens (with the merged ones appended), the starting ids and each merge.
    """
    tokens = sorted(set(text))
    ids = start = [tokens.index(ch) for ch in text]
    merges = []
    for _ in range(most):
        stats = get_stats(ids)
        pair = max(stats, key=stats.get) if stats else None
        if pair is None or stats[pair] < 2:
            break
        tokens.append(tokens[pair[0]] + tokens[pair[1]])
        ids = merge(ids, pair, len(tokens) - 1)
        merges.append(Merge(pair, stats[pair], len(tokens) - 1, tokens[-1], ids))
    return tokens, start, merges


def _merge_steps(tokens: list[str], step: Merge) -> list[Step]:
    return [
        Step("pair, stats[pair]", (step.pair, step.count),
             "stats = get_stats(ids)\npair = max(stats, key=stats.get)   # the most frequent; on a tie, the first"),
        Step("idx, tokens[idx]", (step.idx, step.token),
             "idx = len(tokens)\ntokens.append(tokens[pair[0]] + tokens[pair[1]])\nids = merge(ids, pair, idx)"),
        Step("[tokens[i] for i in ids]", [tokens[i] for i in step.ids], view="pieces"),
        Step("len(ids)", len(step.ids)),
    ]


def bpe(seed: int | None = None) -> Demo:
    """The sequel's byte-pair encoding, merge by merge, on one line of Romeo and Juliet."""
    tokens, ids, merges = bpe_merges(BPE_TEXT, BPE_MERGES)
    first = get_stats(ids)
    setup = (f"text = {BPE_TEXT!r}\ntokens = sorted(set(text))   # the characters are the first tokens\n"
             "ids = [tokens.index(c) for c in text]")
    code = ("def get_stats(ids):\n    counts = {}\n    for pair in zip(ids, ids[1:]):\n"
            "        counts[pair] = counts.get(pair, 0) + 1\n    return counts\n"
            "def merge(ids, pair, idx):   # every pair, left to right, becomes idx\n    out, i = [], 0\n"
            "    while i < len(ids):\n        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:\n"
            "            out.append(idx); i += 2\n        else:\n            out.append(ids[i]); i += 1\n"
            "    return out")
    steps = [
        Step("len(ids), len(tokens)", (len(ids), len(set(BPE_TEXT))), setup),
        Step("ids", ids),
        Step("sorted(((n, tokens[a] + tokens[b]) for (a, b), n in get_stats(ids).items()), reverse=True)[:5]",
             sorted(((n, tokens[a] + tokens[b]) for (a, b), n in first.items()), reverse=True)[:5], code),
    ]
    for step in merges:
        steps += _merge_steps(tokens, step)
    last = merges[-1].ids if merges else ids
    steps.append(Step("''.join(tokens[i] for i in ids) == text", "".join(tokens[i] for i in last) == BPE_TEXT))
    explanation = (
        "The sequel lecture's tokenizer, GPT's: byte-pair encoding. Start from the characters, count every pair of "
        "neighbouring tokens, and make the most frequent pair a new token; replace it everywhere, and repeat. Each "
        "merge adds one token to the vocabulary and shortens the sequence, so the model sees more text in the same "
        "block. Here the word Romeo is learned a piece at a time. `tinyshake train --tokenizer bpe` learns "
        "thousands of merges from the train split this way (with Hugging Face's `tokenizers`, which is fast)."
    )
    return Demo("bpe", "Byte-pair encoding, merge by merge", explanation, tuple(steps), None)


# -- the table ------------------------------------------------------------------


class DemoSpec(NamedTuple):
    """A row of :data:`DEMOS`: the one-line description, the function, and whether it takes ``mask``."""

    summary: str
    func: Callable[..., Demo]
    takes_mask: bool = False
    takes_seed: bool = True

    def build(self, seed: int | None, mask: bool) -> Demo:
        return self.func(seed, mask=mask) if self.takes_mask else self.func(seed)


DEMOS: dict[str, DemoSpec] = {
    "tokens": DemoSpec("the 65 characters, encode and decode", tokens, takes_seed=False),
    "batch": DemoSpec("the 90/10 split, a block's eight lessons, a 4 x 8 batch", batch),
    "loss": DemoSpec("why an untrained model starts near -ln(1/65) = 4.1744, and the bigram above it", loss),
    "bow": DemoSpec("bag-of-words averaging: a loop, a triangular matmul, a masked softmax", bow),
    "matmul": DemoSpec("the triangular-matmul trick: sums and running averages by a @ b", matmul),
    "attention": DemoSpec("one head of causal self-attention and its weights (--no-mask: encoder)", attention, True),
    "scaling": DemoSpec("why scores are scaled by head_size ** -0.5 before the softmax", scaling),
    "softmax": DemoSpec("softmax sharpening: the same scores, times 8", softmax),
    "layernorm": DemoSpec("normalising rows versus columns: LayerNorm against BatchNorm", layernorm),
    "positions": DemoSpec("without position embeddings, shuffling tokens only shuffles outputs", positions),
    "bpe": DemoSpec("the sequel's byte-pair encoding: count pairs, merge the most frequent, repeat", bpe,
                    takes_seed=False),
}
ALL = "all"


def select(name: str) -> list[str]:
    """The demos ``name`` stands for (``all`` is every demo, in order); a UsageError for anything else."""
    key = name.strip().lower()
    if key == ALL:
        return list(DEMOS)
    if key in DEMOS:
        return [key]
    raise UsageError(f"unknown demo {name!r}; choose one of: {', '.join(DEMOS)}, or {ALL}")


def run(name: str, seed: int | None = None, mask: bool = True) -> Iterator[Demo]:
    """Check ``name`` and the options now, then compute the demos one at a time as they are consumed."""
    names = select(name)
    if seed is not None:
        check_seed(seed)
    if seed is not None and not any(DEMOS[n].takes_seed for n in names):
        raise UsageError(f"--seed does not apply to the {names[0]} demo: it draws no random numbers")
    if not mask and not any(DEMOS[n].takes_mask for n in names):
        takers = " and ".join(n for n, spec in DEMOS.items() if spec.takes_mask)
        raise UsageError(f"--no-mask only applies to the {takers} demo, not {names[0]}")
    return (DEMOS[n].build(seed, mask) for n in names)
