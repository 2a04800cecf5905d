"""``tinyshake info``: where things live, versions, the device, and the cached corpora."""

from __future__ import annotations

import platform

from rich.table import Table

from tinyshake import __version__, corpus, paths
from tinyshake.cli._output import handle_errors, make_console


@handle_errors
def info() -> None:
    """Show where data lives, the versions, the device that would be used and the cached corpora."""
    import torch

    from tinyshake import device, onednn

    console = make_console()
    choice = device.resolve("auto")
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("tinyshake", __version__),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("device", f"{choice.device} ({choice.reason})"),
        ("cpu", f"{torch.get_num_threads()} threads; float32 layers through "
                f"{'oneDNN' if onednn.available() else 'the default BLAS (TINYSHAKE_ONEDNN=0, or no oneDNN in this build)'}"),
        ("home", f"{paths.home()} (set {paths.HOME_ENV} to move it)"),
        ("corpora", str(paths.corpus_root())),
        ("runs", str(paths.runs_root())),
    ]
    names = corpus.cached_names()
    status = [f"{n} ({'verified' if corpus.is_cached(n) else 'CORRUPT: run tinyshake fetch --force'})" for n in names]
    rows.append(("cached", ", ".join(status) if status else "none (run `tinyshake fetch`)"))
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
