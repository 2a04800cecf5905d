"""Shared fixtures: a temporary data home for every test, and the tiny Shakespeare corpus wherever it is.

The corpus is looked for in this order, each candidate checked by its SHA-256:
1. ``$TINYSHAKE_TEST_CORPUS`` (a path; if set, it must be the corpus),
2. ``../shared/data/tinyshakespeare/input.txt`` beside the checkout (CI),
3. the user's own cache, as ``tinyshake fetch`` (or the README's ``tinyshake train``) wrote it.
With none of them, the tests that need the corpus are skipped, all with one reason, and all others run.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterator

import pytest
import torch

from tinyshake import corpus

TEST_CORPUS_ENV = "TINYSHAKE_TEST_CORPUS"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
NOTEBOOK = SHARED / "reference" / "lecture-notebook.txt"


def find_test_corpus(shared: Path = SHARED) -> Path | str:
    """The tiny Shakespeare file the tests read, or the reason there is none.

    Reads ``TINYSHAKE_HOME`` (through :mod:`tinyshake.paths`) as the user set it, so it must run before the
    autouse ``home`` fixture points that variable at a temporary folder.
    """
    known = corpus.KNOWN[corpus.DEFAULT_CORPUS]
    explicit = os.environ.get(TEST_CORPUS_ENV)
    if explicit:
        candidates = [Path(explicit).expanduser()]
    else:
        candidates = [shared / "data" / "tinyshakespeare" / "input.txt", corpus.text_path(corpus.DEFAULT_CORPUS)]
    for path in candidates:
        try:
            if path.stat().st_size == known.size and hashlib.sha256(path.read_bytes()).hexdigest() == known.sha256:
                return path
        except OSError:
            continue
    if explicit:
        return f"${TEST_CORPUS_ENV}={explicit} is not the tiny Shakespeare corpus (missing, or its SHA-256 differs)"
    looked = ", ".join(str(p) for p in candidates)
    return f"needs the tiny Shakespeare corpus: run `tinyshake fetch` (or set ${TEST_CORPUS_ENV}); looked in {looked}"


FOUND = find_test_corpus()  # now, at import: the user's TINYSHAKE_HOME is still the user's


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty TINYSHAKE_HOME, and no colours leak in."""
    path = tmp_path / "home"
    monkeypatch.setenv("TINYSHAKE_HOME", str(path))
    monkeypatch.delenv("TINYSHAKE_CORPUS_URL", raising=False)
    monkeypatch.setenv("COLUMNS", "120")
    return path


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread; on a busy 2-core machine more threads spin for ages."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def corpus_file() -> Path:
    """The verified tiny Shakespeare file (read only: it may be the user's own cache)."""
    if isinstance(FOUND, str):
        if os.environ.get(TEST_CORPUS_ENV):  # asked for by name: a wrong path is a failure, not a skip
            pytest.fail(FOUND)
        pytest.skip(FOUND)
    return FOUND


@pytest.fixture
def cached(home: Path, corpus_file: Path) -> Path:
    """The tiny Shakespeare corpus imported into the temporary home; returns its cached path."""
    for _ in corpus.import_file(corpus_file):
        pass
    return corpus.text_path(corpus.DEFAULT_CORPUS)


@pytest.fixture(scope="session")
def notebook() -> str:
    """The lecture notebook's text, where a checkout has ../shared/reference (skipped elsewhere)."""
    if not NOTEBOOK.is_file():
        pytest.skip(f"needs the lecture notebook at {NOTEBOOK}")
    return NOTEBOOK.read_text(encoding="utf-8")


def subprocess_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for running the installed ``tinyshake`` entry point in a subprocess."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TINYSHAKE_CORPUS_URL")}
    env.update({"TINYSHAKE_HOME": str(home), "PYTHONUNBUFFERED": "1"}, **extra)
    return env
