"""``tinyshake info``: where things live, versions, the device, the CPU's threads and routes, the cached corpora.

It measures nothing (that is ``tinyshake bench --retune``, or the first
training run): it reads the free cores in 0.15 s and the tuning cache.
"""

from __future__ import annotations

import platform

from typing import TYPE_CHECKING, Optional

from rich.table import Table
from rich.text import Text

from tinyshake import __version__, corpus
from tinyshake.store import paths
from tinyshake.cli._output import handle_errors, make_console

if TYPE_CHECKING:
    from tinyshake.training.tuning import Routes

NOT_MEASURED = "not measured yet for {threads}; `tinyshake bench --retune` measures (so does the first `train`)"


def _routes(routes: Optional[Routes], threads: int) -> list[tuple[str, str]]:
    """The tuning rows: the routes measured for this thread count and their margins, or how to measure them."""
    from tinyshake.models import onednn

    if routes is None:
        rows = [("routes", NOT_MEASURED.format(threads=f"{threads} thread{'s' if threads != 1 else ''}"))]
        if not onednn.available():
            rows.append(("layers", f"float32 layers through the default BLAS ({onednn.MISSING})"))
        return rows
    from tinyshake.training import sizing

    speed = sizing.REFERENCE_STEP / routes.modern_step
    return [("layers", routes.describe_linear()),
            ("attention", f"{routes.describe_attention()}; measured {routes.measured}"),
            ("speed", f"a modern step's forward and backward in {routes.modern_step * 1000:.0f} ms: {speed:.2f}x "
                      f"the speed of {sizing.REFERENCE_MACHINE}, where --time-budget's sizes were measured")]


@handle_errors
def info() -> None:
    """Show where data lives, the versions, the device that would be used and the cached corpora."""
    import torch

    from tinyshake.training import device, machine, threads, tuning

    console = make_console()
    choice = device.resolve("auto")
    cpu = threads.plan()
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("tinyshake", __version__),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("device", f"{choice.device} ({choice.reason})"),
        ("cpu", machine.cpu_model()),
        ("threads", f"{cpu.describe()}; --threads N overrides"),
        *_routes(tuning.cached(cpu.threads), cpu.threads),
        ("home", f"{paths.home()} ({paths.home_source()})"),
        ("corpora", str(paths.corpus_root())),
        ("runs", str(paths.runs_root())),
    ]
    names = corpus.cached_names()
    status = [f"{n} ({'verified' if corpus.is_cached(n) else 'CORRUPT: ' + corpus.repair_hint(n)})" for n in names]
    rows.append(("cached", ", ".join(status) if status else "none (run `tinyshake fetch`)"))
    for key, value in rows:
        table.add_row(key, Text(value))  # paths and names are data, never Rich markup
    console.print(table)
