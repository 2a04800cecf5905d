"""The corpus: download or import it, verify it, cache it, and load it as tensors.

A corpus lives in ``<home>/corpus/<name>/`` as ``input.txt`` plus ``meta.json``
(its size, SHA-256 and source). Every source (a URL, a local file, the default
mirror) streams through the same checks before anything is cached: a size cap,
UTF-8, not empty, and for a known corpus its exact size and SHA-256. A download
also has a deadline for the whole transfer. Every write goes through a temporary
file and a rename, so a failed or interrupted fetch leaves the cache as it was.

Nothing here needs torch except :func:`load`, which imports it itself, so that
``tinyshake fetch`` starts without loading it.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import http.client
import json
import math
import os
import re
import socket
import stat
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable, Iterable, Iterator, Union

from tinyshake import __version__
from tinyshake.store import names, paths
from tinyshake.store.atomic import atomic_writer, write_bytes
from tinyshake.errors import TinyshakeError, UsageError
from tinyshake.tokens import BPETokenizer, CharTokenizer, Tokenizer

if TYPE_CHECKING:
    import torch

DEFAULT_CORPUS = "tinyshakespeare"
URL_ENV = "TINYSHAKE_CORPUS_URL"
CANONICAL_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SCHEMES = ("http", "https", "file")
TRAIN_FRACTION = 0.9
CHUNK = 64 * 1024
DEFAULT_TIMEOUT = 30.0
DEFAULT_DEADLINE = 600.0
MAX_SECONDS = 7 * 24 * 3600  # sockets cannot wait much longer (OverflowError), and nobody means more
DEFAULT_MAX_BYTES = 1 << 30
META_LIMIT = 64 * 1024  # a meta.json is a few hundred bytes; a huge one is damage, not a record to parse


@dataclass(frozen=True)
class Expected:
    """What a known corpus must be, byte for byte."""

    size: int
    sha256: str


KNOWN = {
    DEFAULT_CORPUS: Expected(1_115_394, "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
}
SHA256_RE = re.compile(r"[0-9a-f]{64}")


class CorpusError(TinyshakeError):
    """A corpus is missing, corrupt, or could not be fetched."""


class CorpusMissing(CorpusError):
    """The corpus asked for is not in the cache: like an unknown run, the user's input (exit code 2)."""

    exit_code = 2


# --------------------------------------------------------------------------- cache layout


def validate_name(name: str) -> str:
    """``name`` if it follows the one rule for names (:mod:`tinyshake.store.names`), else a UsageError."""
    return names.check(name, "corpus")


def corpus_dir(name: str) -> Path:
    return paths.corpus_root() / validate_name(name)


def text_path(name: str) -> Path:
    return corpus_dir(name) / "input.txt"


def meta_path(name: str) -> Path:
    return corpus_dir(name) / "meta.json"


def read_meta(name: str) -> dict | None:
    """The corpus's meta record, or None when it is missing, too large, not JSON or not a JSON object."""
    try:
        with meta_path(name).open("rb") as handle:
            raw = handle.read(META_LIMIT + 1)
        meta = json.loads(raw) if len(raw) <= META_LIMIT else None
    except (OSError, ValueError, RecursionError):  # RecursionError: deeply nested brackets
        return None
    return meta if isinstance(meta, dict) else None


def expected_for(name: str) -> Expected | None:
    """The recorded size and hash of a corpus: built in for known ones, else from a well-formed meta.json."""
    if name in KNOWN:
        return KNOWN[name]
    meta = read_meta(name) or {}
    size, digest = meta.get("size"), meta.get("sha256")
    if type(size) is int and size > 0 and isinstance(digest, str) and SHA256_RE.fullmatch(digest):
        return Expected(size, digest)
    return None  # missing, or damaged: a size of "abc", null, 1e400 or true is no size


def repair_hint(name: str) -> str:
    """How to mend a damaged cached corpus: fetch the known one again, or import a custom one again."""
    if name in KNOWN:
        return "run `tinyshake fetch --force` to fix it"
    return f"import it again with `tinyshake fetch --from PATH --corpus {name} --force`"


def _verified_digest(name: str, blocks: Iterable[bytes]) -> str:
    """Check a cached corpus's bytes (as ``blocks``) against its record; its SHA-256, or a CorpusError."""
    path = text_path(name)
    expected = expected_for(name)
    if expected is None:
        raise CorpusError(f"the record {meta_path(name)} of corpus {name!r} is missing or damaged; {repair_hint(name)}")
    check = _Check(str(path), expected.size, name, CorpusError, expected)
    try:
        for block in blocks:
            check.feed(block)
        return check.finish()
    except CorpusError:
        raise CorpusError(f"the cached corpus {path} is changed or corrupt; {repair_hint(name)}") from None


def _open_cached(name: str) -> IO[bytes]:
    """The cached text of ``name``, opened for reading only if it is a regular file; else a CorpusError.

    Opened without blocking and checked on the open descriptor: a FIFO put in
    its place would otherwise wait for a writer for ever, and a device never end.
    """
    path = text_path(name)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise CorpusError(f"the cached corpus {path} is damaged: it is not a regular file; {repair_hint(name)}")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def is_cached(name: str) -> bool:
    """True when the corpus file exists and passes every check against its recorded size and hash."""
    try:
        with _open_cached(name) as handle:
            _verified_digest(name, iter(lambda: handle.read(CHUNK), b""))
    except (OSError, CorpusError):
        return False
    return True


def cached_names() -> list[str]:
    """Every corpus folder that holds a text or a record, good or damaged (``info`` says which)."""
    root = paths.corpus_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if os.path.lexists(p / "input.txt") or (p / "meta.json").is_file())


def _cached_already(name: str, force: bool) -> bool:
    """Whether a good copy of a known corpus can stay; a custom corpus is never replaced unless forced."""
    if force:
        return False
    if name in KNOWN:
        return is_cached(name)
    if text_path(name).exists() or meta_path(name).exists():
        raise UsageError(f"corpus {name!r} already exists in {corpus_dir(name)}; add --force to replace it")
    return False


@contextlib.contextmanager
def _removed_if_left_empty(folder: Path) -> Iterator[None]:
    """On any failure, remove ``folder`` if nothing is in it (the fetch made it, and stored nothing)."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            folder.rmdir()  # fails, as it should, when the folder holds anything
        raise


def _record(name: str, size: int, digest: str, source: str) -> "CorpusInfo":
    """Write the meta record of a text that was just checked and stored."""
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


# --------------------------------------------------------------------------- the checks every source passes


ANOTHER_TEXT = " (to store another text, give it a name with --corpus NAME)"


class _Check:
    """Bytes as they arrive, checked the same way whatever their source, before any of them is kept.

    A size cap (a known corpus's own size, else ``limit``), UTF-8 decoded incrementally so that the first bad
    byte's offset can be named, not empty, and for a known corpus its SHA-256.
    """

    def __init__(
        self, source: str, limit: int, name: str, error: type[TinyshakeError], expected: Expected | None
    ) -> None:
        self.source, self.limit, self.name, self.error, self.expected = source, limit, name, error, expected
        self.size = 0
        self._sha = hashlib.sha256()
        self._pending = b""  # the first bytes of a character that the next block completes

    def refuse_size(self, size: int) -> None:
        """Raise if ``size`` bytes (received, or announced by the source) is more than may be kept."""
        if self.expected and size > self.expected.size:
            raise CorpusError(
                f"{self.source} has more than the {self.expected.size:,} bytes of the {self.name} corpus{ANOTHER_TEXT}"
            )
        if size > self.limit:
            raise self.error(f"{self.source} has more than {self.limit:,} bytes (raise the limit with --max-bytes)")

    def feed(self, block: bytes) -> None:
        self.refuse_size(self.size + len(block))
        data = self._pending + block
        try:
            _, used = codecs.utf_8_decode(data, "strict", False)
        except UnicodeDecodeError as exc:
            offset = self.size - len(self._pending) + exc.start
            raise self.error(f"{self.source} is not UTF-8 text (bad byte at offset {offset})") from None
        self._pending = data[used:]
        self.size += len(block)
        self._sha.update(block)

    def finish(self) -> str:
        """The SHA-256 of everything fed, once the whole is known to pass."""
        if self.size == 0:
            raise self.error(f"{self.source} is empty")
        if self._pending:
            offset = self.size - len(self._pending)
            raise self.error(f"{self.source} is not UTF-8 text (it ends inside a character at offset {offset})")
        digest = self._sha.hexdigest()
        if self.expected and self.size != self.expected.size:
            raise CorpusError(
                f"{self.source} has {self.size:,} bytes; the {self.name} corpus has {self.expected.size:,}{ANOTHER_TEXT}"
            )
        if self.expected and digest != self.expected.sha256:
            raise CorpusError(
                f"checksum mismatch for {self.source}: got sha256 {digest[:16]}..., "
                f"expected {self.expected.sha256[:16]}...{ANOTHER_TEXT}"
            )
        return digest


def _seconds(value: float, option: str) -> float:
    if not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
        raise UsageError(f"{option} must be a number of seconds above 0 and at most {MAX_SECONDS:,} (a week), not {value:g}")
    return value


def check_download_limits(timeout: float, deadline: float) -> tuple[float, float]:
    """``--timeout`` and ``--deadline`` if both are seconds above 0 and at most a week; else a UsageError."""
    return _seconds(timeout, "--timeout"), _seconds(deadline, "--deadline")


def _byte_limit(value: int) -> int:
    if value < 1:
        raise UsageError(f"--max-bytes must be at least 1, not {value}")
    return value


def check_url(url: str) -> str:
    """``url`` if it is one that can be downloaded (http, https or file); else a UsageError, before any attempt."""
    if not url.strip():
        raise UsageError("the URL is empty: give one, or leave out --url to use the default mirror")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # a port that is not a number from 0 to 65535 raises ValueError here
    except ValueError as exc:
        raise UsageError(f"invalid URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if not scheme:
        raise UsageError(f"invalid URL {url!r}: it has no scheme such as https://")
    if scheme not in SCHEMES:
        raise UsageError(
            f"unsupported URL scheme {scheme!r} in {url!r}: use http, https or file (or --from PATH for a local file)"
        )
    if scheme != "file" and (not parts.hostname or port == 0):
        raise UsageError(f"invalid URL {url!r}: it names no host, or port 0")
    if scheme == "file":
        _check_file_url(url, Path(urllib.request.url2pathname(parts.path)))
    return url


def _check_file_url(url: str, path: Path) -> None:
    """A ``file:`` URL must name a regular file or a device: opening a FIFO with no writer would wait for ever.

    What is not there is left to the download, which says so as for any source.
    """
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode)):
        raise UsageError(f"{url} is not a regular file (a FIFO, a socket or a folder); "
                         "to read a pipe, use --from PATH")


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


class _Deadline:
    """The time the whole download may take, every attempt and every wait between them included.

    ``--timeout`` bounds each connect and each read, so a dead server is noticed quickly; it cannot stop a
    server that keeps sending a byte now and then. The deadline is checked before every read, and no read may
    wait past it by more than one ``--timeout``.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def check(self, url: str, received: int) -> None:
        if self.left() <= 0:
            raise CorpusError(
                f"download from {url} did not finish within the {self.seconds:g} s deadline "
                f"({received:,} bytes received; allow more with --deadline)"
            )


class _Watchdog:
    """Shuts an attempt's sockets down when the deadline passes, which ends a read that is still waiting.

    ``--timeout`` bounds each read, and the loop checks the deadline between
    reads, but a server can drip its headers a byte at a time inside one read
    of urllib's: only closing the socket under it stops that.
    """

    def __init__(self, clock: _Deadline) -> None:
        self.sockets: list[socket.socket] = []
        self.timer = threading.Timer(max(0.0, clock.left()), self.fire)
        self.timer.daemon = True
        self.fired = False

    def watch(self, sock: socket.socket) -> None:
        self.sockets.append(sock)
        if self.fired:
            self.fire()

    def fire(self) -> None:
        self.fired = True
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> "_Watchdog":
        self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.cancel()


def _opener(watchdog: _Watchdog) -> urllib.request.OpenerDirector:
    """urllib's opener, with every connection's socket handed to ``watchdog`` as soon as it is connected."""

    def watched(base: type[http.client.HTTPConnection]) -> Callable[..., http.client.HTTPConnection]:
        class Watched(base):  # type: ignore[valid-type, misc]
            def connect(self) -> None:
                super().connect()
                watchdog.watch(self.sock)

        return Watched

    class HTTP(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(watched(http.client.HTTPConnection), req)

    class HTTPS(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(watched(http.client.HTTPSConnection), req, context=self._context)

    return urllib.request.build_opener(HTTP, HTTPS)


def default_url() -> str:
    return os.environ.get(URL_ENV) or CANONICAL_URL


def _describe_http(exc: urllib.error.HTTPError, url: str) -> str:
    return f"HTTP {exc.code} {exc.reason} from {url}"


def _download_once(
    url: str, dest: IO[bytes], check: _Check, timeout: float, clock: _Deadline, attempt: int
) -> Iterator[FetchEvent]:
    """Stream ``url`` through ``check`` into ``dest`` (a temporary file), yielding progress; raise on any fault."""
    clock.check(url, 0)
    with _Watchdog(clock) as watchdog:
        try:
            yield from _transfer(url, dest, check, timeout, clock, attempt, watchdog)
        except _Retryable:
            clock.check(url, check.size)  # a read the watchdog cut off is the deadline, not a fault to retry
            raise


def _transfer(
    url: str, dest: IO[bytes], check: _Check, timeout: float, clock: _Deadline, attempt: int, watchdog: _Watchdog
) -> Iterator[FetchEvent]:
    """One attempt's request and reads (see :func:`_download_once`)."""
    # A fresh opener each time, so proxy variables are read now (urlopen caches them for the process).
    opener = _opener(watchdog)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": f"tinyshake/{__version__}"})
        response = opener.open(request, timeout=max(0.01, min(timeout, clock.left())))
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
        if total is not None:
            if check.expected and total != check.expected.size:
                raise CorpusError(f"{url} offers {total:,} bytes; expected {check.expected.size:,}")
            check.refuse_size(total)
        yield DownloadStarted(url, total, attempt)
        # read1 returns what one receive brings; read(CHUNK) would wait for a whole chunk of a dripping server.
        read = getattr(response, "read1", response.read)
        while True:
            clock.check(url, check.size)
            try:
                block = read(CHUNK)
            except (TimeoutError, OSError, http.client.HTTPException) as exc:
                reason = str(exc) or type(exc).__name__
                raise _Retryable(f"download from {url} broke off after {check.size:,} bytes: {reason}") from None
            if not block:
                break
            check.feed(block)
            dest.write(block)
            yield DownloadProgress(check.size, total)
        if total is not None and check.size < total:
            raise _Retryable(f"download from {url} broke off after {check.size:,} of {total:,} bytes")


def fetch(
    name: str = DEFAULT_CORPUS,
    url: str | None = None,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = 3,
    backoff: float = 1.0,
    deadline: float = DEFAULT_DEADLINE,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Iterator[FetchEvent]:
    """Download a corpus into the cache, yielding progress events; the last event says where it is.

    ``url`` None means the default mirror; an empty one is refused, as is any scheme but http, https and file.
    The bytes stream through the checks into a temporary file beside the cached copy, which they replace only
    once they pass. Any failure (HTTP error, timeout, the deadline, truncation, wrong bytes, Ctrl-C) removes
    the temporary file and raises, so an older good copy survives.
    """
    timeout, deadline = check_download_limits(timeout, deadline)
    max_bytes = _byte_limit(max_bytes)
    url = check_url(default_url() if url is None else url)
    if _cached_already(name, force):
        yield AlreadyCached(describe(name))
        return
    clock = _Deadline(deadline)
    with _removed_if_left_empty(corpus_dir(name)):
        for attempt in range(1, retries + 1):
            check = _Check(url, max_bytes, name, CorpusError, KNOWN.get(name))
            try:
                with atomic_writer(text_path(name)) as handle:
                    yield from _download_once(url, handle, check, timeout, clock, attempt)
                    digest = check.finish()
                break
            except _Retryable as exc:
                wait = backoff * 2 ** (attempt - 1)
                if attempt == retries or clock.left() <= wait:
                    why = (f"gave up after {attempt} attempt{'s' * (attempt > 1)}"
                           + ("" if attempt == retries else f", the {deadline:g} s deadline is near"))
                    raise CorpusError(f"{exc} ({why}; offline, import a copy with `tinyshake fetch --from PATH`)") from None
                yield DownloadRetry(attempt, str(exc), wait)
                time.sleep(wait)
        info = _record(name, check.size, digest, url)
    yield CorpusReady(info)


def _blocks(handle: IO[bytes], source: Path) -> Iterator[bytes]:
    """The blocks of an open local file; a read error is the user's input failing, not the cache's disk."""
    while True:
        try:
            block = handle.read(CHUNK)
        except OSError as exc:
            raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from None
        if not block:
            return
        yield block


def _check_readable(path: Path, source: Path) -> None:
    """Refuse a path that does not exist, is a folder or may not be read, without opening it (a FIFO would block)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise UsageError(f"cannot read {source}: Is a directory")
    if not os.access(path, os.R_OK):
        raise UsageError(f"cannot read {source}: Permission denied")


def import_file(
    source: Path, name: str = DEFAULT_CORPUS, force: bool = False, max_bytes: int = DEFAULT_MAX_BYTES
) -> Iterator[FetchEvent]:
    """Store a local UTF-8 text as corpus ``name``, through the same checks as a download.

    A known corpus must match its hash; an existing custom corpus is replaced only with ``force``. The file is
    streamed, so a device such as /dev/zero stops at the size cap instead of filling memory.
    """
    max_bytes, folder = _byte_limit(max_bytes), corpus_dir(name)  # a bad name is refused before anything is read
    path = Path(source).expanduser()
    _check_readable(path, source)  # a wrong path is an error even where the corpus is cached already
    if _cached_already(name, force):
        yield AlreadyCached(describe(name))
        return
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from None
    with handle:
        check = _Check(str(source), max_bytes, name, UsageError, KNOWN.get(name))
        with _removed_if_left_empty(folder):
            mode = os.fstat(handle.fileno())
            if stat.S_ISREG(mode.st_mode):
                check.refuse_size(mode.st_size)  # refuse an oversized file before reading any of it
            with atomic_writer(text_path(name)) as out:
                for block in _blocks(handle, source):
                    check.feed(block)
                    out.write(block)
                digest = check.finish()
            info = _record(name, check.size, digest, str(path.resolve()))
    yield CorpusReady(info)


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
    """A verified corpus, its tokenizer and its 90/10 split as ``torch.long`` tensors of token ids.

    The split is made on the text (the first ``int(0.9 * len(text))`` characters
    are train), then each part is encoded: for characters that is the lecture's
    split of the ids, and a BPE learned from the train part never sees val.
    """

    name: str
    text: str
    sha256: str
    tokenizer: Tokenizer
    train: "torch.Tensor"
    val: "torch.Tensor"

    def split_text(self, split: str) -> str:
        """The characters of ``split`` ("train" or "val")."""
        n = split_point(len(self.text))
        return self.text[:n] if split == "train" else self.text[n:]

    def chars_per_token(self, split: str) -> float:
        """How many characters a token of ``split`` stands for on average: 1 for characters, about 2 to 4 for a BPE."""
        return len(self.split_text(split)) / len(getattr(self, split))

    def with_tokenizer(self, tokenizer: Tokenizer) -> "Corpus":
        """The same text and split, encoded by ``tokenizer``."""
        return _encoded(self.name, self.text, self.sha256, tokenizer)

    def with_bpe(self, vocab_size: int) -> "Corpus":
        """The same text in the tokens of a BPE of ``vocab_size`` learned from the train split alone.

        It starts from every character of the corpus, so val text always encodes.
        """
        return self.with_tokenizer(BPETokenizer.train(self.split_text("train"), vocab_size, alphabet=self.text))


def split_point(n: int) -> int:
    """The lecture's split: the first ``int(0.9 * n)`` characters (the lecture's ids) are train, the rest val."""
    return int(TRAIN_FRACTION * n)


def read_verified_text(name: str) -> tuple[str, str]:
    """The corpus text and its SHA-256, after checking it against its recorded hash."""
    path = text_path(name)
    try:
        with _open_cached(name) as handle:
            data = handle.read()
    except FileNotFoundError:
        if meta_path(name).exists():  # its record stayed: replacing it takes --force
            raise CorpusError(f"the cached corpus {path} is missing; {repair_hint(name)}") from None
        how = ("run `tinyshake fetch`" if name in KNOWN
               else f"import it with `tinyshake fetch --from PATH --corpus {name}`")
        raise CorpusMissing(f"corpus {name!r} is not cached; {how}") from None
    except OSError as exc:
        raise CorpusError(f"cannot read {path}: {exc.strerror or exc}") from None
    digest = _verified_digest(name, [data])
    return data.decode("utf-8"), digest


def load(name: str = DEFAULT_CORPUS) -> Corpus:
    """Load and verify a cached corpus and make the lecture's character train/val tensors."""
    text, digest = read_verified_text(name)
    return _encoded(name, text, digest, CharTokenizer.from_text(text))


def _encoded(name: str, text: str, digest: str, tokenizer: Tokenizer) -> Corpus:
    import torch  # here, not at the top: fetch and info need no tensors

    n = split_point(len(text))
    train, val = (torch.tensor(tokenizer.encode(part), dtype=torch.long) for part in (text[:n], text[n:]))
    return Corpus(name, text, digest, tokenizer, train, val)


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
