"""Where tinyshake keeps its data: one home folder with ``corpus/`` and ``runs/`` inside."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

HOME_ENV = "TINYSHAKE_HOME"


def home() -> Path:
    """The data home: ``$TINYSHAKE_HOME`` if set (tests use a temporary one), else the user data dir."""
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_data_dir("tinyshake", appauthor=False))


def home_source() -> str:
    """Where :func:`home` came from, in words for ``tinyshake info``."""
    if os.environ.get(HOME_ENV):
        return f"from {HOME_ENV}"
    return f"the user data folder; set {HOME_ENV} to move it"


def corpus_root() -> Path:
    return home() / "corpus"


def runs_root() -> Path:
    return home() / "runs"


def cache_root() -> Path:
    """Facts measured on this machine (the tuned routes, the running processes): ``<home>/cache`` under
    ``$TINYSHAKE_HOME``, so tests stay isolated, else the user cache dir. Losing it costs a second of measuring."""
    if os.environ.get(HOME_ENV):
        return home() / "cache"
    return Path(platformdirs.user_cache_dir("tinyshake", appauthor=False))
