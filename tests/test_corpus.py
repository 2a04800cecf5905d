"""The core: the character tokenizer, the lecture's split, and the verified cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tinyshake import atomic, corpus
from tinyshake.errors import TinyshakeError, UsageError


@pytest.fixture(scope="module")
def text(corpus_file: Path) -> str:
    return corpus_file.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def tokenizer(text: str) -> corpus.CharTokenizer:
    return corpus.CharTokenizer.from_text(text)


def test_vocabulary_is_the_lectures(tokenizer):
    assert tokenizer.vocab_size == 65
    assert "".join(tokenizer.chars) == "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    assert tokenizer.encode("hii there") == [46, 47, 47, 1, 58, 46, 43, 56, 43]
    assert tokenizer.decode([46, 47, 47, 1, 58, 46, 43, 56, 43]) == "hii there"


def test_round_trip_of_the_whole_corpus(tokenizer, text):
    ids = tokenizer.encode(text)
    assert len(ids) == 1_115_394 and min(ids) == 0 and max(ids) == 64
    assert tokenizer.decode(ids) == text


def test_unknown_characters_are_named(tokenizer):
    with pytest.raises(corpus.UnknownCharacterError) as caught:
        tokenizer.encode("naïve café, naïve€")
    assert caught.value.chars == ["ï", "é", "€"]
    assert "'ï', 'é', '€'" in str(caught.value)
    assert isinstance(caught.value, UsageError) and isinstance(caught.value, ValueError)
    assert caught.value.exit_code == 2


def test_load_gives_the_lectures_split_as_long_tensors(cached):
    loaded = corpus.load()
    assert loaded.train.dtype == torch.long and loaded.val.dtype == torch.long
    assert loaded.train.shape == (1_003_854,) and loaded.val.shape == (111_540,)
    assert loaded.train[:10].tolist() == [18, 47, 56, 57, 58, 1, 15, 47, 58, 47]  # "First Citi"
    assert loaded.tokenizer.decode(loaded.val[:5].tolist()) == loaded.text[1_003_854:1_003_859]
    assert loaded.sha256 == corpus.KNOWN[corpus.DEFAULT_CORPUS].sha256


def test_describe_reports_the_facts(cached):
    info = corpus.describe(corpus.DEFAULT_CORPUS)
    assert (info.characters, info.vocab_size, info.train_chars, info.val_chars) == (1_115_394, 65, 1_003_854, 111_540)
    assert info.size_bytes == 1_115_394 and info.path == cached


def test_missing_corpus_says_how_to_fetch(home):
    with pytest.raises(corpus.CorpusError, match="run `tinyshake fetch`"):
        corpus.load()
    assert corpus.cached_names() == [] and not corpus.is_cached(corpus.DEFAULT_CORPUS)


def test_truncated_cache_is_not_cached(cached):
    assert corpus.is_cached(corpus.DEFAULT_CORPUS) and corpus.cached_names() == [corpus.DEFAULT_CORPUS]
    cached.write_bytes(cached.read_bytes()[:-1])
    assert not corpus.is_cached(corpus.DEFAULT_CORPUS)
    with pytest.raises(corpus.CorpusError, match="tinyshake fetch --force"):
        corpus.describe(corpus.DEFAULT_CORPUS)


def test_custom_corpus_without_meta_is_corrupt(cached, home):
    folder = corpus.corpus_dir("mine")
    folder.mkdir(parents=True)
    (folder / "input.txt").write_text("hello\n")
    assert not corpus.is_cached("mine") and "mine" in corpus.cached_names()
    with pytest.raises(corpus.CorpusError, match="record .* is missing or damaged; import it again with `tinyshake fetch --from PATH --corpus mine --force`"):
        corpus.load("mine")


@pytest.mark.parametrize("name", ["", "../up", "a/b", ".hidden", "x" * 65])
def test_bad_corpus_names_are_refused(name):
    with pytest.raises(UsageError, match="invalid corpus name"):
        corpus.corpus_dir(name)


def test_atomic_write_failure_keeps_the_old_file(tmp_path):
    dest = tmp_path / "file.txt"
    atomic.write_bytes(dest, b"old")
    with pytest.raises(RuntimeError), atomic.atomic_writer(dest) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("interrupted")
    assert dest.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_atomic_write_into_a_file_is_one_line_error(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(TinyshakeError, match="cannot create folder"):
        atomic.write_bytes(blocker / "sub" / "file.txt", b"data")


def test_cached_files_get_the_umask_permissions_not_mkstemps_0600(cached):
    """Atomic writes go through mkstemp (0600); the finished file must be readable as any other file the user makes."""
    expected = 0o666 & ~atomic._umask()
    for path in (cached, corpus.meta_path(corpus.DEFAULT_CORPUS)):
        assert path.stat().st_mode & 0o777 == expected
