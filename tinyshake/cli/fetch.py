"""``tinyshake fetch``: download (or import) and verify a corpus, then show its facts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Iterable, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from tinyshake import corpus
from tinyshake.cli._output import handle_errors, make_console, use_rich
from tinyshake.errors import UsageError


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


def print_facts(info: corpus.CorpusInfo, console: Console) -> None:
    console.print(f"characters: {info.characters:,}")
    console.print(f"vocabulary: {info.vocab_size} distinct characters")
    console.print(f"split:      {info.train_chars:,} train / {info.val_chars:,} val characters")
    console.print(f"sha256:     {info.sha256}")


def ensure_corpus(name: str, console: Console) -> None:
    """Fetch the default corpus first when a command needs it and it is missing."""
    if corpus.text_path(name).is_file() or name != corpus.DEFAULT_CORPUS:
        return
    console.print(f"The {name} corpus is not cached yet; fetching it first.")
    render_fetch(corpus.fetch(name), console)


@handle_errors
def fetch(
    url: Annotated[Optional[str], typer.Option(
        help=rf"Mirror to download from: http, https or file \[env: {corpus.URL_ENV}].")] = None,
    from_path: Annotated[
        Optional[Path], typer.Option("--from", help="Import a local UTF-8 text file instead of downloading.")
    ] = None,
    corpus_name: Annotated[
        str, typer.Option("--corpus", help="Name to store the corpus under.")
    ] = corpus.DEFAULT_CORPUS,
    force: Annotated[bool, typer.Option(
        "--force", help="Fetch again even if a valid copy is cached; replace an existing custom corpus.")] = False,
    timeout: Annotated[float, typer.Option(
        help="Seconds to wait to connect and for each read before trying again.")] = corpus.DEFAULT_TIMEOUT,
    deadline: Annotated[float, typer.Option(
        help="Seconds the whole download may take, every attempt included.")] = corpus.DEFAULT_DEADLINE,
    max_bytes: Annotated[int, typer.Option(
        help="Refuse a text larger than this many bytes (default 1 GiB).")] = corpus.DEFAULT_MAX_BYTES,
    retries: Annotated[int, typer.Option(help="Attempts before giving up.", min=1, max=10)] = 3,
) -> None:
    """Download the tiny Shakespeare corpus (or import a text) into the verified cache."""
    console = make_console()
    corpus.check_download_limits(timeout, deadline)  # wrong values are refused even where --from needs none
    if from_path is not None:
        if url is not None:
            raise UsageError("give --url or --from, not both")
        events = corpus.import_file(from_path, corpus_name, force=force, max_bytes=max_bytes)
    elif corpus_name != corpus.DEFAULT_CORPUS and url is None:
        raise corpus.CorpusError(f"corpus {corpus_name!r} has no download source; use --from PATH to import a text")
    else:
        events = corpus.fetch(corpus_name, url=url, force=force, timeout=timeout, retries=retries,
                              deadline=deadline, max_bytes=max_bytes)
    print_facts(render_fetch(events, console), console)
