"""Fetching a corpus on screen: ``fetch`` itself, and every command that fetches the default corpus first."""

from __future__ import annotations

import os
from typing import Iterable

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from tinyshake import corpus
from tinyshake.cli._output import use_rich


def render_fetch(events: Iterable[corpus.FetchEvent], console: Console) -> corpus.CorpusInfo:
    """Show fetch events (a Rich bar on a terminal, plain lines otherwise); return the stored corpus."""
    progress: Progress | None = None
    task = None
    try:
        for event in events:
            if isinstance(event, corpus.DownloadStarted):
                console.print(f"Downloading {event.url}" + (f" (attempt {event.attempt})" if event.attempt > 1 else ""))
                if use_rich(console.file) and progress is None:
                    progress = Progress(
                        TextColumn("[bold blue]input.txt"), BarColumn(), DownloadColumn(),
                        TransferSpeedColumn(), TimeRemainingColumn(), console=console, transient=True,
                    )
                    progress.start()
                if progress is not None:
                    task = progress.add_task("download", total=event.total)
            elif isinstance(event, corpus.DownloadProgress):
                if progress is not None and task is not None:
                    progress.update(task, completed=event.done)
            elif isinstance(event, corpus.DownloadRetry):
                console.print(f"Retrying in {event.wait:g}s after attempt {event.attempt} failed: {event.reason}")
            elif isinstance(event, corpus.AlreadyCached):
                console.print(f"{event.info.name} is already cached and verified at {event.info.path} (use --force to fetch again)")
                return event.info
            elif isinstance(event, corpus.CorpusReady):
                if progress is not None:
                    progress.stop()
                    progress = None
                console.print(f"Verified and stored {event.info.name} at {event.info.path}")
                return event.info
    finally:
        if progress is not None:
            progress.stop()
    raise RuntimeError("fetch ended without a result")  # pragma: no cover - the core always ends with one


def ensure_corpus(name: str, console: Console) -> None:
    """Fetch the default corpus first when a command needs it and it is missing."""
    if os.path.lexists(corpus.text_path(name)) or name != corpus.DEFAULT_CORPUS:
        return  # whatever is there, loading it checks it (and names what is damaged)
    console.print(f"The {name} corpus is not cached yet; fetching it first.")
    render_fetch(corpus.fetch(name), console)
