"""Tokenizers: the lecture's characters, and its sequel's byte-pair encoding (BPE) learned from them.

Both turn text into a list of ids and back, and both know the text of every
id (:attr:`tokens`), which is what bits per character and the pictures of
``inspect`` need. The character tokenizer is the lecture's, unchanged. The BPE
starts from the same characters (its first ids are the character tokenizer's
ids) and adds the merges that Hugging Face ``tokenizers`` learns from the train
split, so every text in the corpus's alphabet encodes and any other character
is refused by name, as the characters are. A BPE is stored with its run as a
small JSON file of our own format (alphabet, merges, the split pattern): it
does not depend on how a version of ``tokenizers`` writes its files.

Nothing here imports torch, and ``tokenizers`` is imported only when a BPE is
trained or rebuilt, so commands that never use one start as fast as before.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Sequence, Union

from tinyshake.errors import UsageError

if TYPE_CHECKING:
    from tokenizers import Tokenizer as HFTokenizer

    from tinyshake.store.record import RunRecord

CHAR, BPE = "char", "bpe"
KINDS = (CHAR, BPE)
MAX_VOCAB = 1 << 16  # far beyond what a few megabytes of text can teach; past it the model is mostly embeddings
# Words with the space before them, numbers, runs of punctuation, and whitespace (a run of it leaves its last
# space to the word that follows): merges never cross these pieces, so tokens stay word-like.
PATTERN = r" ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s"


class UnknownCharacterError(UsageError, ValueError):
    """Text holds characters outside the vocabulary."""

    def __init__(self, chars: list[str]) -> None:
        self.chars = chars
        shown = ", ".join(repr(c) for c in chars)
        super().__init__(f"characters not in the vocabulary: {shown}")


class BadTokenizer(ValueError):
    """Stored tokenizer bytes that are not a tokenizer of this format (the caller names the run)."""


def _unknown(alphabet: set[str] | dict[str, int], text: str) -> list[str]:
    """The distinct characters of ``text`` outside ``alphabet``, in order of appearance."""
    return list(dict.fromkeys(ch for ch in text if ch not in alphabet))


class CharTokenizer:
    """The lecture's tokenizer: the sorted set of characters, each character its index."""

    kind = CHAR

    def __init__(self, chars: list[str]) -> None:
        self.chars = list(chars)
        self.stoi = {ch: i for i, ch in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def tokens(self) -> list[str]:
        """The text of every id: one character each."""
        return self.chars

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of ``text`` that are not in the vocabulary, in order of appearance."""
        return _unknown(self.stoi, text)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[ch] for ch in text]
        except KeyError:
            raise UnknownCharacterError(self.unknown(text)) from None

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)


class BPETokenizer:
    """Byte-pair encoding over a corpus's characters: ids 0.. are the characters, then one id per merge.

    ``merges`` are pairs of token texts in the order they were learned; the
    token of merge ``i`` has id ``len(alphabet) + i`` (a merge that makes a text
    already in the vocabulary adds no id). Encoding is Hugging Face's BPE model
    over the :data:`PATTERN` pieces; decoding joins the tokens' texts.
    """

    kind = BPE

    def __init__(self, alphabet: Sequence[str], merges: Sequence[tuple[str, str]], pattern: str = PATTERN) -> None:
        self.chars = list(alphabet)
        self.merges = [(a, b) for a, b in merges]
        self.pattern = pattern
        self._alphabet = set(self.chars)
        self.tokens = list(self.chars)
        self._ids = {text: i for i, text in enumerate(self.tokens)}
        for a, b in self.merges:
            if a not in self._ids or b not in self._ids:
                raise BadTokenizer(f"the merge {a!r} + {b!r} uses a token that no earlier merge made")
            if a + b not in self._ids:
                self._ids[a + b] = len(self.tokens)
                self.tokens.append(a + b)
        self._encoder: HFTokenizer | None = None  # built on first use: importing tokenizers takes a moment

    @classmethod
    def train(cls, text: str, vocab_size: int, alphabet: Sequence[str] | None = None) -> "BPETokenizer":
        """Learn merges from ``text`` (the train split) until there are ``vocab_size`` tokens, or no pair repeats.

        ``alphabet`` is the whole corpus's characters (default: ``text``'s), so
        a character that only the val split holds still has its id.
        """
        from tokenizers import Tokenizer, models, trainers

        chars = sorted(set(alphabet if alphabet is not None else text))
        check_vocab_size(vocab_size, len(chars))
        learner = Tokenizer(models.BPE())
        learner.pre_tokenizer = _splitter(PATTERN)
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=chars, special_tokens=[],
                                      min_frequency=2, show_progress=False)
        learner.train_from_iterator([text], trainer=trainer)
        merges = json.loads(learner.to_str())["model"]["merges"]
        return cls(chars, [(a, b) for a, b in merges])

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of ``text`` outside the alphabet, in order of appearance."""
        return _unknown(self._alphabet, text)

    def encode(self, text: str) -> list[int]:
        missing = self.unknown(text)
        if missing:
            raise UnknownCharacterError(missing)
        return self._built().encode(text).ids if text else []

    def decode(self, ids: list[int]) -> str:
        return "".join(self.tokens[i] for i in ids)

    def to_json(self) -> bytes:
        """The tokenizer as the bytes a run stores: alphabet, merges and split pattern, in a stable order."""
        body = {"kind": BPE, "alphabet": self.chars, "merges": [list(m) for m in self.merges], "pattern": self.pattern}
        return (json.dumps(body, ensure_ascii=False, indent=0) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> "BPETokenizer":
        """The tokenizer :meth:`to_json` wrote; :class:`BadTokenizer` for anything else."""
        try:
            body = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise BadTokenizer("the tokenizer file is not UTF-8 JSON") from None
        if not _well_formed(body):
            raise BadTokenizer("the tokenizer file is not a BPE of this format")
        return cls(body["alphabet"], [(a, b) for a, b in body["merges"]], body["pattern"])

    def _built(self) -> "HFTokenizer":
        """Hugging Face's BPE model over this vocabulary and these merges, with the split pattern."""
        if self._encoder is None:
            from tokenizers import Tokenizer, models

            encoder = Tokenizer(models.BPE(vocab=dict(self._ids), merges=list(self.merges)))
            encoder.pre_tokenizer = _splitter(self.pattern)
            self._encoder = encoder
        return self._encoder


def _splitter(pattern: str) -> Any:
    """A pre-tokenizer that cuts text into the pieces ``pattern`` matches, keeping every character."""
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Split(Regex(pattern), behavior="isolated")


def _well_formed(body: Any) -> bool:
    if not isinstance(body, dict) or body.get("kind") != BPE or not isinstance(body.get("pattern"), str):
        return False
    alphabet, merges = body.get("alphabet"), body.get("merges")
    return (isinstance(alphabet, list) and len(alphabet) > 0 and len(set(alphabet)) == len(alphabet)
            and all(isinstance(c, str) and len(c) == 1 for c in alphabet)
            and isinstance(merges, list)
            and all(isinstance(m, list) and len(m) == 2 and all(isinstance(t, str) and t for t in m) for m in merges))


Tokenizer = Union[CharTokenizer, BPETokenizer]


def check_kind(kind: str) -> str:
    """``kind`` if it is a tokenizer tinyshake has; else a one-line usage error."""
    if kind not in KINDS:
        raise UsageError(f"unknown tokenizer {kind!r}; choose {' or '.join(KINDS)}")
    return kind


def check_vocab_size(vocab_size: int, alphabet: int) -> int:
    """A BPE's size: at least the corpus's characters (it starts from them), at most :data:`MAX_VOCAB`."""
    if vocab_size < alphabet:
        raise UsageError(f"--vocab-size {vocab_size:,} is below the corpus's {alphabet} characters: a BPE starts from "
                         f"them and adds merges, so give at least {alphabet}")
    if vocab_size > MAX_VOCAB:
        raise UsageError(f"--vocab-size {vocab_size:,} is absurdly large for a character corpus: at most "
                         f"{MAX_VOCAB:,} (a few thousand already make most words one token)")
    return vocab_size


def characters(tokenizer: Tokenizer, ids: Sequence[int]) -> int:
    """How many characters the tokens ``ids`` stand for."""
    lengths = [len(text) for text in tokenizer.tokens]
    return sum(lengths[i] for i in ids)


def pieces(tokenizer: Tokenizer, text: str) -> list[str]:
    """``text`` cut at its token boundaries: the texts of its tokens, in order (they join back to ``text``)."""
    return [tokenizer.tokens[i] for i in tokenizer.encode(text)]


def of_record(stored: RunRecord) -> Tokenizer:
    """The tokenizer of a run's verified record: its vocabulary, or the BPE file the record names and seals."""
    from tinyshake.store import record

    if stored.tokenizer == CHAR:
        return CharTokenizer(list(stored.vocab))
    try:
        bpe = BPETokenizer.from_json(record.read_file(stored, "tokenizer"))
    except BadTokenizer as exc:
        raise record.Damaged(stored.name, str(exc)) from None
    if bpe.chars != list(stored.vocab):
        raise record.Damaged(stored.name, "its tokenizer's characters are not its vocabulary")
    return bpe


def of_run(name: str) -> Tokenizer:
    """The tokenizer a trained run reads and writes with, from its verified record (no torch needed)."""
    from tinyshake.store import record

    return record.consistent(name, of_record)


def unit(tokenizer: Tokenizer) -> str:
    """What one id stands for, in words: ``character`` (the lecture's) or ``token`` (a BPE's)."""
    return "character" if tokenizer.kind == CHAR else "token"


def describe(tokenizer: Tokenizer) -> str:
    """The tokenizer in a few words, for headers: ``65 characters`` or ``BPE of 512 tokens over 65 characters``."""
    if tokenizer.kind == CHAR:
        return f"{tokenizer.vocab_size} characters"
    return f"BPE of {tokenizer.vocab_size:,} tokens over {len(tokenizer.chars)} characters"

