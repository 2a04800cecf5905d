"""The corpus: download or import it, verify it, cache it, and load it as tensors.

A corpus lives in ``<home>/corpus/<name>/`` as ``input.txt`` plus ``meta.json``
(its size, SHA-256 and source). Nothing is written there before it has been
verified, and every write goes through a temporary file and a rename, so a
failed or interrupted fetch leaves the cache exactly as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Union

import torch

from tinyshake import __version__, paths
from tinyshake.atomic import ensure_dir, write_bytes
from tinyshake.errors import TinyshakeError, UsageError

DEFAULT_CORPUS = "tinyshakespeare"
URL_ENV = "TINYSHAKE_CORPUS_URL"
CANONICAL_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TRAIN_FRACTION = 0.9
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Expected:
    """What a known corpus must be, byte for byte."""

    size: int
    sha256: str


KNOWN = {
    DEFAULT_CORPUS: Expected(1_115_394, "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class CorpusError(TinyshakeError):
    """A corpus is missing, corrupt, or could not be fetched."""


class UnknownCharacterError(UsageError, ValueError):
    """Text holds characters outside the vocabulary."""

    def __init__(self, chars: list[str]) -> None:
        self.chars = chars
        shown = ", ".join(repr(c) for c in chars)
        super().__init__(f"characters not in the vocabulary: {shown}")


# --------------------------------------------------------------------------- tokenizer


class CharTokenizer:
    """The lecture's tokenizer: the sorted set of characters, each character its index."""

    def __init__(self, chars: list[str]) -> None:
        self.chars = list(chars)
        self.stoi = {ch: i for i, ch in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of ``text`` that are not in the vocabulary, in order of appearance."""
        return list(dict.fromkeys(ch for ch in text if ch not in self.stoi))

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[ch] for ch in text]
        except KeyError:
            raise UnknownCharacterError(self.unknown(text)) from None

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)


# --------------------------------------------------------------------------- cache layout


def validate_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise UsageError(f"invalid corpus name {name!r}: use letters, digits, '.', '_' or '-'")
    return name


def corpus_dir(name: str) -> Path:
    return paths.corpus_root() / validate_name(name)


def text_path(name: str) -> Path:
    return corpus_dir(name) / "input.txt"


def meta_path(name: str) -> Path:
    return corpus_dir(name) / "meta.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def read_meta(name: str) -> dict | None:
    try:
        return json.loads(meta_path(name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def expected_for(name: str) -> Expected | None:
    """The recorded size and hash of a corpus: built in for known ones, else from its meta.json."""
    if name in KNOWN:
        return KNOWN[name]
    meta = read_meta(name)
    if meta and "sha256" in meta and "size" in meta:
        return Expected(int(meta["size"]), str(meta["sha256"]))
    return None


def is_cached(name: str) -> bool:
    """True when the corpus file exists and matches its recorded size and hash."""
    path, expected = text_path(name), expected_for(name)
    if expected is None or not path.is_file():
        return False
    return path.stat().st_size == expected.size and sha256_file(path) == expected.sha256


def cached_names() -> list[str]:
    root = paths.corpus_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "input.txt").is_file())


def _store(name: str, data: bytes | Path, source: str) -> "CorpusInfo":
    """Move verified content into the cache: the text first, then its meta record."""
    dest = text_path(name)
    if isinstance(data, Path):
        os.replace(data, dest)
        digest, size = sha256_file(dest), dest.stat().st_size
    else:
        write_bytes(dest, data)
        digest, size = hashlib.sha256(data).hexdigest(), len(data)
    meta = {
        "name": name,
        "size": size,
        "sha256": digest,
        "source": source,
        "stored_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tinyshake": __version__,
    }
    write_bytes(meta_path(name), (json.dumps(meta, indent=2) + "\n").encode())
    return describe(name)


# --------------------------------------------------------------------------- download


@dataclass(frozen=True)
class DownloadStarted:
    url: str
    total: int | None
    attempt: int


@dataclass(frozen=True)
class DownloadProgress:
    done: int
    total: int | None


@dataclass(frozen=True)
class DownloadRetry:
    attempt: int
    reason: str
    wait: float


@dataclass(frozen=True)
class AlreadyCached:
    info: "CorpusInfo"


@dataclass(frozen=True)
class CorpusReady:
    info: "CorpusInfo"


FetchEvent = Union[DownloadStarted, DownloadProgress, DownloadRetry, AlreadyCached, CorpusReady]


class _Retryable(Exception):
    """A failure worth another try (timeouts, resets, 5xx)."""


def default_url() -> str:
    return os.environ.get(URL_ENV) or CANONICAL_URL


def _describe_http(exc: urllib.error.HTTPError, url: str) -> str:
    return f"HTTP {exc.code} {exc.reason} from {url}"


def _download_once(
    url: str, dest: Path, timeout: float, expected: Expected | None, attempt: int
) -> Iterator[FetchEvent]:
    """Stream ``url`` into ``dest`` (a temporary file), yielding progress; raise on any fault."""
    # A fresh opener each time, so proxy variables are read now (urlopen caches them for the process).
    opener = urllib.request.build_opener()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": f"tinyshake/{__version__}"})
        response = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        message = _describe_http(exc, url)
        if exc.code >= 500 or exc.code in (408, 429):
            raise _Retryable(message) from None
        raise CorpusError(message) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        text = getattr(reason, "strerror", None) or str(reason)
        raise _Retryable(f"cannot reach {url}: {text}") from None
    except (TimeoutError, OSError) as exc:
        raise _Retryable(f"cannot reach {url}: {exc}") from None
    except (ValueError, http.client.InvalidURL) as exc:
        raise UsageError(f"invalid URL {url!r}: {exc}") from None
    except http.client.HTTPException as exc:
        raise _Retryable(f"{url} did not answer with valid HTTP ({type(exc).__name__})") from None
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if expected and total is not None and total != expected.size:
            raise CorpusError(f"{url} offers {total:,} bytes; expected {expected.size:,}")
        yield DownloadStarted(url, total, attempt)
        done = 0
        with dest.open("wb") as handle:
            while True:
                try:
                    block = response.read(CHUNK)
                except (TimeoutError, OSError, http.client.HTTPException) as exc:
                    reason = str(exc) or type(exc).__name__
                    raise _Retryable(f"download from {url} broke off after {done:,} bytes: {reason}") from None
                if not block:
                    break
                handle.write(block)
                done += len(block)
                if expected and done > expected.size:
                    raise CorpusError(f"{url} sent more than the expected {expected.size:,} bytes")
                yield DownloadProgress(done, total)
            handle.flush()
            os.fsync(handle.fileno())
        if total is not None and done < total:
            raise _Retryable(f"download from {url} broke off after {done:,} of {total:,} bytes")


def _verify(path: Path, expected: Expected | None, url: str) -> None:
    size = path.stat().st_size
    if size == 0:
        raise CorpusError(f"{url} sent an empty file")
    if expected is None:
        return
    if size != expected.size:
        raise CorpusError(f"{url} sent {size:,} bytes; expected {expected.size:,}")
    digest = sha256_file(path)
    if digest != expected.sha256:
        raise CorpusError(f"checksum mismatch for {url}: got sha256 {digest[:16]}..., expected {expected.sha256[:16]}...")


def fetch(
    name: str = DEFAULT_CORPUS,
    url: str | None = None,
    force: bool = False,
    timeout: float = 30.0,
    retries: int = 3,
    backoff: float = 1.0,
) -> Iterator[FetchEvent]:
    """Download a corpus into the cache, yielding progress events; the last event says where it is.

    The bytes go to a temporary file beside the cached copy and replace it only
    once their size and SHA-256 match. Any failure (HTTP error, timeout,
    truncation, wrong bytes, Ctrl-C) removes the temporary file and raises, so
    an older good copy survives.
    """
    if not force and is_cached(name):
        yield AlreadyCached(describe(name))
        return
    url = url or default_url()
    expected = KNOWN.get(name)
    folder = corpus_dir(name)
    ensure_dir(folder)
    part = folder / f".input.txt.{os.getpid()}.part"
    try:
        part.touch()  # fail on an unwritable folder before downloading anything
        for attempt in range(1, retries + 1):
            try:
                yield from _download_once(url, part, timeout, expected, attempt)
                break
            except _Retryable as exc:
                if attempt == retries:
                    raise CorpusError(f"{exc} (gave up after {retries} attempt{'s' * (retries > 1)}; "
                                      "offline, import a copy with `tinyshake fetch --from PATH`)") from None
                wait = backoff * 2 ** (attempt - 1)
                yield DownloadRetry(attempt, str(exc), wait)
                time.sleep(wait)
        _verify(part, expected, url)
        info = _store(name, part, url)
    except OSError as exc:  # network faults are handled above; this is the local disk
        raise CorpusError(f"cannot write to {folder}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            part.unlink()
    yield CorpusReady(info)


def import_file(source: Path, name: str = DEFAULT_CORPUS, force: bool = False) -> Iterator[FetchEvent]:
    """Store a local UTF-8 text as corpus ``name``; a known corpus must match its hash."""
    if not force and is_cached(name) and name in KNOWN:
        yield AlreadyCached(describe(name))
        return
    try:
        data = Path(source).expanduser().read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from None
    if not data:
        raise UsageError(f"{source} is empty")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{source} is not UTF-8 text (bad byte at offset {exc.start})") from None
    expected = KNOWN.get(name)
    if expected and (len(data) != expected.size or hashlib.sha256(data).hexdigest() != expected.sha256):
        raise CorpusError(
            f"{source} is not the {name} corpus (size or SHA-256 differs); use --corpus NAME to store your own text"
        )
    yield CorpusReady(_store(name, data, str(Path(source).resolve())))


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class CorpusInfo:
    """Facts about a cached corpus, for ``fetch`` and ``info`` to show."""

    name: str
    path: Path
    size_bytes: int
    characters: int
    vocab_size: int
    train_chars: int
    val_chars: int
    sha256: str


@dataclass
class Corpus:
    """A verified corpus, its tokenizer and its 90/10 split as ``torch.long`` tensors."""

    name: str
    text: str
    sha256: str
    tokenizer: CharTokenizer
    train: torch.Tensor
    val: torch.Tensor


def split_point(n: int) -> int:
    """The lecture's split: the first ``int(0.9 * n)`` ids are train, the rest val."""
    return int(TRAIN_FRACTION * n)


def read_verified_text(name: str) -> tuple[str, str]:
    """The corpus text and its SHA-256, after checking it against its recorded hash."""
    path = text_path(name)
    if not path.is_file():
        raise CorpusError(f"corpus {name!r} is not cached; run `tinyshake fetch`")
    expected = expected_for(name)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if expected is None or len(data) != expected.size or digest != expected.sha256:
        raise CorpusError(f"the cached corpus {path} is changed or corrupt; run `tinyshake fetch --force` to fix it")
    return data.decode("utf-8"), digest


def load(name: str = DEFAULT_CORPUS) -> Corpus:
    """Load and verify a cached corpus and make the lecture's train/val tensors."""
    text, digest = read_verified_text(name)
    tokenizer = CharTokenizer.from_text(text)
    data = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    n = split_point(len(data))
    return Corpus(name, text, digest, tokenizer, data[:n], data[n:])


def describe(name: str) -> CorpusInfo:
    text, digest = read_verified_text(name)
    n = split_point(len(text))
    return CorpusInfo(
        name=name,
        path=text_path(name),
        size_bytes=len(text.encode("utf-8")),
        characters=len(text),
        vocab_size=len(set(text)),
        train_chars=n,
        val_chars=len(text) - n,
        sha256=digest,
    )
