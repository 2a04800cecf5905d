"""``train --metrics FILE``: every evaluation of a run as one JSON line.

The metrics file is the user's, outside the data home: a path among the runs
or corpora is refused, since a rewrite there could replace a checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from tinyshake import paths
from tinyshake.atomic import write_bytes
from tinyshake.errors import UsageError

if TYPE_CHECKING:
    from tinyshake.events import Evaluated


def _refuse_data_home(path: Path) -> None:
    """A metrics file must not land among the runs or corpora, where it could replace a checkpoint."""
    where = path.resolve()
    for root in (paths.runs_root(), paths.corpus_root()):
        if where == root.resolve() or root.resolve() in where.parents:
            raise UsageError(f"cannot write metrics to {path}: it is inside tinyshake's data folder {root}; "
                             "choose a path elsewhere")


class MetricsLog:
    """Every evaluation as one JSON line, its losses per token and in bits per character. A new run starts the
    file afresh; a resumed run adds to it.

    The whole file is rewritten atomically at each evaluation (there are few),
    so a crash never leaves half a line; a bad path is refused before training.
    The evaluation of the final weights, beyond the lecture's, carries ``"final": true``.
    ``path`` None writes nothing (no ``--metrics``, or a rank other than 0).
    """

    def __init__(self, path: Optional[Path], resume: bool) -> None:
        self.path = path
        self.lines: list[str] = []
        if path is None:
            return
        if path.is_dir() or not path.parent.is_dir():
            raise UsageError(f"cannot write metrics to {path}: its folder does not exist or it is a folder")
        _refuse_data_home(path)
        if resume and path.is_file():
            try:
                self.lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
            except OSError as exc:
                raise UsageError(f"cannot read metrics file {path}: {exc.strerror or exc}") from None

    def write(self, event: Evaluated) -> None:
        """Add ``event``'s line and rewrite the file whole."""
        if self.path is None:
            return
        row: dict[str, Any] = {"step": event.step, "train": event.train, "val": event.val,
                               "train_bpc": event.train_bpc, "val_bpc": event.val_bpc, "elapsed": round(event.elapsed, 3)}
        if event.final:
            row["final"] = True
        self.lines.append(json.dumps(row) + "\n")
        write_bytes(self.path, "".join(self.lines).encode())
