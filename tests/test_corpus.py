"""The core: the character tokenizer, the lecture's split, and the verified cache."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TEST_CORPUS_ENV, find_test_corpus, subprocess_env
from typer.testing import CliRunner

from tinyshake import corpus, tokens
from tinyshake.store import atomic
from tinyshake.cli import app
from tinyshake.errors import TinyshakeError, UsageError


@pytest.fixture(scope="module")
def text(corpus_file: Path) -> str:
    return corpus_file.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def tokenizer(text: str) -> tokens.CharTokenizer:
    return tokens.CharTokenizer.from_text(text)


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
    with pytest.raises(tokens.UnknownCharacterError) as caught:
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


@pytest.mark.parametrize("name", ["", "../up", "a/b", ".hidden", "x" * 65, "nl\n", "mine\n", "\nmine"])
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


def test_the_next_write_in_a_folder_removes_dead_writers_leftovers(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [f".input.txt.{dead.pid}.part", f".meta.json.{dead.pid}.k2_x9q.part", ".config.json.99999999999.ab.part"]
    kept = [f".meta.json.{os.getpid()}.live01.part", "notes.1.part", ".config.json.abc_def.part"]  # live, not ours
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"half")
    atomic.write_bytes(tmp_path / "meta.json", b"{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["meta.json"])


# --------------------------------------------------------------------------- a damaged record


TEXT = "a small custom corpus\n"
SHA = hashlib.sha256(TEXT.encode()).hexdigest()
SIZE = len(TEXT.encode())
DAMAGED_META = {
    "size-text": f'{{"size": "abc", "sha256": "{SHA}"}}',
    "size-null": f'{{"size": null, "sha256": "{SHA}"}}',
    "size-1e400": f'{{"size": 1e400, "sha256": "{SHA}"}}',
    "size-float": f'{{"size": {SIZE}.0, "sha256": "{SHA}"}}',
    "size-true": f'{{"size": true, "sha256": "{SHA}"}}',
    "size-negative": f'{{"size": -{SIZE}, "sha256": "{SHA}"}}',
    "sha-number": f'{{"size": {SIZE}, "sha256": 5}}',
    "sha-short": f'{{"size": {SIZE}, "sha256": "{SHA[:10]}"}}',
    "a-string": '"just a string"',
    "a-list": f'[{SIZE}, "{SHA}"]',
    "null": "null",
    "nested": "[" * 100_000,
    "not-json": "{size: 1",
    "not-utf8": "\udcff",
    "empty": "",
    "too-large": f'{{"pad": "{"x" * corpus.META_LIMIT}", "size": {SIZE}, "sha256": "{SHA}"}}',
}


@pytest.mark.parametrize("meta", list(DAMAGED_META.values()), ids=list(DAMAGED_META))
def test_a_damaged_meta_record_is_reported_never_a_traceback(meta, home):
    folder = corpus.corpus_dir("mine")
    folder.mkdir(parents=True)
    (folder / "input.txt").write_text(TEXT)
    (folder / "meta.json").write_bytes(meta.encode("utf-8", "surrogateescape"))
    assert corpus.expected_for("mine") is None and not corpus.is_cached("mine")
    assert corpus.cached_names() == ["mine"]
    with pytest.raises(corpus.CorpusError, match="meta.json of corpus 'mine' is missing or damaged"):
        corpus.load("mine")
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0 and result.exception is None and "mine (CORRUPT" in result.output


def test_a_well_formed_meta_record_is_verified(home):
    folder = corpus.corpus_dir("mine")
    folder.mkdir(parents=True)
    (folder / "input.txt").write_text(TEXT)
    (folder / "meta.json").write_text(f'{{"size": {SIZE}, "sha256": "{SHA}"}}')
    assert corpus.is_cached("mine") and corpus.load("mine").text == TEXT


def test_cached_bytes_that_are_not_utf8_are_never_verified(home):
    """Even a record that matches them cannot make bytes that are not text a corpus."""
    data = b"caf\xe9\n"
    folder = corpus.corpus_dir("mine")
    folder.mkdir(parents=True)
    (folder / "input.txt").write_bytes(data)
    (folder / "meta.json").write_text(f'{{"size": {len(data)}, "sha256": "{hashlib.sha256(data).hexdigest()}"}}')
    assert not corpus.is_cached("mine")
    with pytest.raises(corpus.CorpusError, match="changed or corrupt"):
        corpus.load("mine")


# --------------------------------------------------------------------------- no torch for fetch


@pytest.mark.parametrize("imports", ["import tinyshake.corpus", "import tinyshake.cli.fetch"],
                         ids=["corpus", "cli-fetch"])
def test_fetch_needs_no_torch(imports):
    code = f"{imports}; import sys; assert 'torch' not in sys.modules, 'torch was imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------- where the tests find the corpus


@pytest.fixture
def nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No corpus anywhere: no variable, no ../shared, an empty user cache (TINYSHAKE_HOME or platformdirs')."""
    monkeypatch.delenv(TEST_CORPUS_ENV, raising=False)
    monkeypatch.setenv("TINYSHAKE_HOME", str(tmp_path / "user-home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    return tmp_path / "no-shared"


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_no_corpus_anywhere_gives_one_reason_naming_fetch(nowhere):
    reason = find_test_corpus(nowhere)
    assert isinstance(reason, str) and "run `tinyshake fetch`" in reason and TEST_CORPUS_ENV in reason


def test_the_lookup_order(nowhere, tmp_path, corpus_file, monkeypatch):
    data = corpus_file.read_bytes()
    user = put(tmp_path / "user-home" / "corpus" / corpus.DEFAULT_CORPUS / "input.txt", data)
    assert find_test_corpus(nowhere) == user  # the user's cache, as TINYSHAKE_HOME places it
    shared = put(tmp_path / "shared" / "data" / "tinyshakespeare" / "input.txt", data)
    assert find_test_corpus(tmp_path / "shared") == shared  # ../shared comes before the cache
    mine = put(tmp_path / "elsewhere.txt", data)
    monkeypatch.setenv(TEST_CORPUS_ENV, str(mine))
    assert find_test_corpus(tmp_path / "shared") == mine  # the variable comes first
    monkeypatch.setenv(TEST_CORPUS_ENV, str(tmp_path / "typo.txt"))
    reason = find_test_corpus(tmp_path / "shared")
    assert isinstance(reason, str) and "typo.txt is not the tiny Shakespeare corpus" in reason  # and no fallback


def test_a_user_cache_is_checked_by_its_sha256(nowhere, tmp_path, corpus_file):
    data = corpus_file.read_bytes()
    put(tmp_path / "user-home" / "corpus" / corpus.DEFAULT_CORPUS / "input.txt", data.replace(b"ROMEO", b"ROMEA", 1))
    assert isinstance(find_test_corpus(nowhere), str)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG_DATA_HOME places platformdirs' folder on Linux")
def test_the_platformdirs_cache_without_tinyshake_home(nowhere, tmp_path, corpus_file, monkeypatch):
    monkeypatch.delenv("TINYSHAKE_HOME")
    user = put(tmp_path / "xdg" / "tinyshake" / "corpus" / corpus.DEFAULT_CORPUS / "input.txt", corpus_file.read_bytes())
    assert find_test_corpus(nowhere) == user


def test_a_checkout_without_shared_skips_then_uses_the_fetched_cache(tmp_path, corpus_file):
    """The README's `pytest` on a fresh clone: skipped with the reason, then run once `tinyshake fetch` filled the cache."""
    tests = tmp_path / "clone" / "tests"  # no ../shared beside this checkout
    tests.mkdir(parents=True)
    shutil.copy(Path(__file__).with_name("conftest.py"), tests)
    (tests / "test_probe.py").write_text("def test_needs(corpus_file):\n    pass\n\n\ndef test_other():\n    pass\n")
    user_home = tmp_path / "user-home"
    env = subprocess_env(user_home, XDG_DATA_HOME=str(tmp_path / "xdg"))
    env.pop(TEST_CORPUS_ENV, None)
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tests)]

    proc = subprocess.run(command, env=env, cwd=tests, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed, 1 skipped" in proc.stdout and "needs the tiny Shakespeare corpus: run `tinyshake fetch`" in proc.stdout

    fetch = subprocess.run([str(Path(sys.executable).with_name("tinyshake")), "fetch", "--from", str(corpus_file)],
                           env=env, capture_output=True, text=True, timeout=120)
    assert fetch.returncode == 0, fetch.stderr
    proc = subprocess.run(command, env=env, cwd=tests, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "2 passed" in proc.stdout, proc.stdout + proc.stderr


def test_a_corpus_that_is_not_cached_is_a_usage_error_that_says_how_to_import_it(home):
    from test_train import assert_one_line_error
    from typer.testing import CliRunner

    from tinyshake.cli import app

    result = CliRunner().invoke(app, ["train", "--corpus", "nosuch", "--max-iters", "1"])
    assert_one_line_error(result, "corpus 'nosuch' is not cached", "`tinyshake fetch --from PATH --corpus nosuch`")
