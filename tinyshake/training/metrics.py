"""``train --metrics FILE``: every evaluation of a run as one JSON line.

The file is the user's: it passes the rule every output passes
(:func:`tinyshake.store.atomic.output_target`), so a path in the data folder, or one
that is a device, a FIFO or a folder, is refused before training starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from tinyshake.store.atomic import output_target, write_output
from tinyshake.errors import UsageError

if TYPE_CHECKING:
    from tinyshake.training.events import Evaluated


WHAT = "metrics"


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
        target = output_target(path, WHAT)  # refused here, before training starts
        if resume and target.exists():
            try:
                self.lines = target.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
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
        write_output(self.path, "".join(self.lines).encode(), WHAT)
