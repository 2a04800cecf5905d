"""``tinyshake fetch``: download (or import) and verify a corpus, then show its facts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from tinyshake import corpus
from tinyshake.cli._corpus import render_fetch
from tinyshake.cli._output import handle_errors, make_console
from tinyshake.errors import UsageError


def print_facts(info: corpus.CorpusInfo, console: Console) -> None:
    console.print(f"characters: {info.characters:,}")
    console.print(f"vocabulary: {info.vocab_size} distinct characters")
    console.print(f"split:      {info.train_chars:,} train / {info.val_chars:,} val characters")
    console.print(f"sha256:     {info.sha256}")


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
