"""Shared fixtures: a temporary data home for every test, and the corpus from ../shared."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest
import torch

from tinyshake import corpus

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CORPUS_FILE = SHARED / "data" / "tinyshakespeare" / "input.txt"
NOTEBOOK = SHARED / "reference" / "lecture-notebook.txt"


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
    if not CORPUS_FILE.is_file():
        pytest.fail(f"the shared corpus is missing at {CORPUS_FILE}")
    return CORPUS_FILE


@pytest.fixture
def cached(home: Path, corpus_file: Path) -> Path:
    """The tiny Shakespeare corpus imported into the temporary home; returns its cached path."""
    for _ in corpus.import_file(corpus_file):
        pass
    return corpus.text_path(corpus.DEFAULT_CORPUS)


@pytest.fixture(scope="session")
def notebook() -> str:
    """The lecture notebook's text: its printed numbers are what the fidelity tests check."""
    return NOTEBOOK.read_text(encoding="utf-8")


def subprocess_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for running the installed ``tinyshake`` entry point in a subprocess."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TINYSHAKE_CORPUS_URL")}
    env.update({"TINYSHAKE_HOME": str(home), "PYTHONUNBUFFERED": "1"}, **extra)
    return env
