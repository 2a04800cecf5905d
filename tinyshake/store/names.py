"""The one rule for the names a user gives runs and corpora: each is one folder name in the data home.

Written once, so that ``--run`` and ``--corpus`` accept and refuse the same
names in the same words. No torch: ``runs`` and ``--help`` check names and
must start fast.
"""

from __future__ import annotations

import re

from tinyshake.errors import UsageError

# One folder name: no separator, no leading dot or dash, at most 64 characters. Anchored with \A and \Z as well as
# matched whole, so that a caller's .match cannot accept a prefix or a name that ends in a newline (``$`` would).
NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


def is_valid(name: object) -> bool:
    """Whether ``name`` is a string that follows the rule (file names in a run's folder follow it too)."""
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None


def check(name: str, kind: str) -> str:
    """``name`` itself if valid, else a UsageError that says which ``kind`` of name (run, corpus) was refused."""
    if not is_valid(name):
        raise UsageError(f"invalid {kind} name {name!r}: use letters, digits, '.', '_' or '-'")
    return name
