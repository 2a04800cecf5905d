"""``tinyshake fetch`` against real local HTTP servers: success, faults, retries, proxies, imports."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

import pytest
from conftest import subprocess_env
from typer.testing import CliRunner

from tinyshake import corpus
from tinyshake.store import paths
from tinyshake.cli import app

try:
    import resource
except ImportError:  # pragma: no cover - not POSIX
    resource = None

Respond = Callable[[BaseHTTPRequestHandler], None]
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
FACTS = ("characters: 1,115,394", "vocabulary: 65 distinct characters", "1,003,854 train / 111,540 val")
TAMPER_HINTS = {corpus.DEFAULT_CORPUS: "run `tinyshake fetch --force`", "mine": "fetch --from PATH --corpus mine --force"}


# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy in the outer environment must not capture requests to 127.0.0.1."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture(scope="module")
def data(corpus_file: Path) -> bytes:
    return corpus_file.read_bytes()


class _Server(ThreadingHTTPServer):
    """The test's HTTP server, quiet when a client hangs up early (a fetch that refuses the bytes stops reading).

    socketserver prints such a traceback from its own thread, whenever it
    happens; it could land in the output of the next command a test runs.
    """

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@contextlib.contextmanager
def _server(respond: Respond) -> Iterator[tuple[str, list[str]]]:
    """A ThreadingHTTPServer on a random local port; yields its corpus URL and the paths it was asked for."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            hits.append(self.path)
            respond(self)

        def log_message(self, *args: object) -> None:
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/input.txt", hits
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Respond], tuple[str, list[str]]]]:
    """Start servers for one test; each is given how to answer every GET."""
    with contextlib.ExitStack() as stack:
        yield lambda respond: stack.enter_context(_server(respond))


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    """Released at teardown, so that a server told to hang lets its thread go."""
    event = threading.Event()
    yield event
    event.set()


def send(body: bytes, status: int = 200, length: int | None = None) -> Respond:
    """Answer with ``body``, announcing ``length`` bytes (its real length by default)."""

    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(body) if length is None else length))
        handler.end_headers()
        handler.wfile.write(body)

    return respond


def raw(payload: bytes) -> Respond:
    """Write ``payload`` as the whole response, then close."""
    return lambda handler: handler.wfile.write(payload)


def refused_url() -> str:
    """A URL on a port that was bound and then closed, so nothing listens there."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/input.txt"


def invoke(*args: str, **env: str):
    result = CliRunner().invoke(app, list(args), env=env or None)
    assert "Traceback" not in result.output
    return result


def assert_ok(result) -> None:
    assert result.exit_code == 0, result.output
    for fact in FACTS:
        assert fact in result.output


def assert_one_error(result, *needles: str, code: int | None = None) -> str:
    """A non-zero exit with exactly one ``Error:`` line (naming ``needles``) and no traceback."""
    assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught exception
    assert result.exit_code != 0 and (code is None or result.exit_code == code), result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def snapshot(home: Path) -> dict[str, str]:
    """Every file under the home with its SHA-256: equal snapshots mean the cache was not touched."""
    return {
        str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(home.rglob("*"))
        if p.is_file()
    }


def tinyshake_exe() -> str:
    exe = Path(sys.executable).with_name("tinyshake")
    return str(exe) if exe.exists() else "tinyshake"


def run_exe(home: Path, *args: str, preexec: Callable[[], None] | None = None, **env: str):
    return subprocess.run(
        [tinyshake_exe(), *args], env=subprocess_env(home, **env), capture_output=True,
        text=True, timeout=300, preexec_fn=preexec,
    )


# --------------------------------------------------------------------------- success


def test_fetch_through_the_entry_point_with_the_env_url(serve, data, home, corpus_file):
    url, hits = serve(send(data))
    proc = run_exe(home, "fetch", TINYSHAKE_CORPUS_URL=url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    for fact in FACTS:
        assert fact in proc.stdout
    assert hits == ["/input.txt"]
    assert corpus.text_path(corpus.DEFAULT_CORPUS).read_bytes() == data
    assert "\x1b[" not in proc.stdout  # not a terminal: plain text


def test_fetch_with_url_option_stores_verified_copy_and_meta(serve, data, home):
    url, hits = serve(send(data))
    result = invoke("fetch", "--url", url)
    assert_ok(result)
    assert f"Downloading {url}" in result.output
    assert hits == ["/input.txt"]
    assert corpus.is_cached(corpus.DEFAULT_CORPUS)
    meta = json.loads(corpus.meta_path(corpus.DEFAULT_CORPUS).read_text())
    assert meta["sha256"] == hashlib.sha256(data).hexdigest() and meta["source"] == url
    assert sorted(p.name for p in corpus.corpus_dir(corpus.DEFAULT_CORPUS).iterdir()) == ["input.txt", "meta.json"]


def test_url_option_beats_env_var(serve, data):
    url, hits = serve(send(data))
    assert_ok(invoke("fetch", "--url", url, "--retries", "1", TINYSHAKE_CORPUS_URL=refused_url()))
    assert hits == ["/input.txt"]


def test_env_var_is_used_in_process(serve, data):
    url, hits = serve(send(data))
    assert_ok(invoke("fetch", TINYSHAKE_CORPUS_URL=url))
    assert hits == ["/input.txt"]


def test_cached_copy_is_left_alone_and_force_downloads_again(serve, data, cached, home):
    url, hits = serve(send(data))
    os.utime(cached, ns=(10**18, 10**18))
    before = snapshot(home)
    result = invoke("fetch", "--url", url)
    assert_ok(result)
    assert "already cached" in result.output
    assert hits == [] and cached.stat().st_mtime_ns == 10**18 and snapshot(home) == before

    result = invoke("fetch", "--url", url, "--force")
    assert_ok(result)
    assert "Downloading" in result.output and hits == ["/input.txt"]
    assert cached.stat().st_mtime_ns != 10**18 and cached.read_bytes() == data


def test_tampered_cache_is_fetched_again_without_force(serve, data, cached):
    url, hits = serve(send(data))
    cached.write_bytes(data.replace(b"First Citizen", b"Frist Citizen", 1))
    assert_ok(invoke("fetch", "--url", url))
    assert hits == ["/input.txt"] and cached.read_bytes() == data


def test_retry_after_503_succeeds_in_the_core(serve, data):
    answers = iter([send(b"busy", status=503)])
    url, hits = serve(lambda handler: next(answers, send(data))(handler))
    events = list(corpus.fetch(url=url, retries=2, backoff=0.01))
    retries = [e for e in events if isinstance(e, corpus.DownloadRetry)]
    assert len(retries) == 1 and "503" in retries[0].reason and retries[0].wait == 0.01
    assert isinstance(events[-1], corpus.CorpusReady) and events[-1].info.characters == 1_115_394
    assert len(hits) == 2 and corpus.is_cached(corpus.DEFAULT_CORPUS)


def test_retry_is_reported_by_the_cli(serve, data):
    answers = iter([send(b"busy", status=503)])
    url, _ = serve(lambda handler: next(answers, send(data))(handler))
    result = invoke("fetch", "--url", url, "--retries", "2")
    assert_ok(result)
    assert "Retrying in 1s after attempt 1 failed: HTTP 503" in result.output
    assert "(attempt 2)" in result.output


def test_http_proxy_is_honoured(serve, data, monkeypatch):
    proxy, hits = serve(send(data))
    # Fetch once without the proxy first: a cached urllib opener would then ignore it.
    direct, _ = serve(send(data))
    assert_ok(invoke("fetch", "--url", direct, "--corpus", "direct"))
    monkeypatch.setenv("http_proxy", proxy.removesuffix("/input.txt"))
    monkeypatch.setenv("no_proxy", "")
    assert_ok(invoke("fetch", "--url", "http://example.invalid/input.txt"))
    assert hits == ["http://example.invalid/input.txt"]  # the proxy got the absolute URL


# --------------------------------------------------------------------------- faults


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n"  # promises 1,024 bytes


def _cut_off(data: bytes) -> Respond:
    return send(data[: len(data) // 2], length=len(data))


FAULTS: dict[str, tuple[Callable[[bytes, threading.Event], Respond | None], list[str], list[str]]] = {
    "404": (lambda d, s: send(b"gone", status=404), [], ["HTTP 404", "Not Found"]),
    "cut-off": (lambda d, s: _cut_off(d), [], ["broke off after 557,697 of 1,115,394 bytes"]),
    "wrong-bytes": (lambda d, s: send(d.upper()), [], ["checksum mismatch"]),
    "wrong-length": (lambda d, s: send(b"hello"), [], ["offers 5 bytes; expected 1,115,394"]),
    "chunk-cut": (lambda d, s: raw(CHUNKED + d[:9]), [], ["broke off after 9 bytes: IncompleteRead("]),
    "not-http": (lambda d, s: raw(b"garbage\r\n\r\n"), [], ["did not answer with valid HTTP (BadStatusLine)"]),
    "timeout": (lambda d, s: lambda h: s.wait(10), ["--timeout", "0.3", "--retries", "2"], ["timed out", "after 2 attempts"]),
    "refused": (lambda d, s: None, [], ["Connection refused (gave up after 1 attempt;", "tinyshake fetch --from PATH"]),
}


@pytest.mark.parametrize("prior", ["empty", "cached"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_download_fault_leaves_cache_untouched(fault, prior, serve, stop, data, home, request):
    make, extra, needles = FAULTS[fault]
    respond = make(data, stop)
    url = refused_url() if respond is None else serve(respond)[0]
    args = ["fetch", "--url", url, *(extra or ["--retries", "1"])]
    if prior == "cached":
        request.getfixturevalue("cached")
        args.append("--force")
    before = snapshot(home)
    result = invoke(*args)
    assert_one_error(result, *needles, code=1)
    assert snapshot(home) == before
    assert corpus.is_cached(corpus.DEFAULT_CORPUS) == (prior == "cached")
    assert corpus.corpus_dir(corpus.DEFAULT_CORPUS).exists() == (prior == "cached")  # no empty folder left behind


def test_fault_through_the_entry_point_is_one_stderr_line(serve, home):
    url, _ = serve(send(b"gone", status=404))
    proc = run_exe(home, "fetch", "--url", url)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"Error: HTTP 404 Not Found from {url}"]
    assert snapshot(home) == {}


@pytest.mark.parametrize("url", ["not-a-url", "http://127.0.0.1:notaport/input.txt"])
def test_malformed_url_is_a_usage_error(url, home):
    assert_one_error(invoke("fetch", "--url", url), f"invalid URL {url!r}", code=2)
    assert snapshot(home) == {}


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))


@pytest.mark.skipif(resource is None, reason="needs POSIX file-size limits")
@pytest.mark.parametrize("source", ["download", "import"])
def test_full_disk_keeps_the_good_copy(source, serve, data, cached, home, corpus_file):
    """A write that fails part-way (as on a full disk) is one line, and the cached copy survives."""
    url, _ = serve(send(data))
    args = ["--url", url] if source == "download" else ["--from", str(corpus_file)]
    before = snapshot(home)
    proc = run_exe(home, "fetch", "--force", *args, preexec=_limit_file_size)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("Error: cannot write")
    assert snapshot(home) == before


@pytest.mark.parametrize("where", ["file", "under-file"])
@pytest.mark.parametrize("source", ["download", "import"])
def test_home_that_cannot_be_written(where, source, serve, data, tmp_path, corpus_file, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("keep me")
    monkeypatch.setenv("TINYSHAKE_HOME", str(blocker if where == "file" else blocker / "home"))
    url, hits = serve(send(data))
    args = ["--url", url] if source == "download" else ["--from", str(corpus_file)]
    assert_one_error(invoke("fetch", *args), "cannot", str(blocker))
    assert blocker.read_text() == "keep me" and hits == []


@pytest.mark.parametrize("locked", ["home", "corpus folder"])
def test_read_only_home(locked, serve, data, home):
    folder = home if locked == "home" else corpus.corpus_dir(corpus.DEFAULT_CORPUS)
    folder.mkdir(parents=True)
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("this user (root) can write despite the folder's permissions")
        url, hits = serve(send(data))
        assert_one_error(invoke("fetch", "--url", url), "cannot", "ermission denied")
        assert snapshot(home) == {} and hits == []
    finally:
        folder.chmod(0o700)


# --------------------------------------------------------------------------- --from and named corpora


def test_import_named_corpus_records_hash_and_loads(tmp_path, home):
    text = "Wherefore art thou, naïve Roméo?\n" * 50
    source = tmp_path / "mytext.txt"
    source.write_text(text, encoding="utf-8")
    result = invoke("fetch", "--from", str(source), "--corpus", "mine")
    assert result.exit_code == 0, result.output
    assert f"characters: {len(text):,}" in result.output
    meta = json.loads(corpus.meta_path("mine").read_text())
    assert meta["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert meta["size"] == len(source.read_bytes()) and meta["source"] == str(source.resolve())
    loaded = corpus.load("mine")
    assert loaded.text == text and loaded.tokenizer.decode(loaded.train.tolist() + loaded.val.tolist()) == text


def test_import_the_default_corpus_from_a_file(corpus_file):
    assert_ok(invoke("fetch", "--from", str(corpus_file)))
    assert corpus.is_cached(corpus.DEFAULT_CORPUS)


def test_import_other_text_as_the_default_corpus_is_refused(tmp_path, home):
    source = tmp_path / "other.txt"
    source.write_text("not shakespeare\n")
    assert_one_error(invoke("fetch", "--from", str(source)), "--corpus NAME", code=1)
    assert snapshot(home) == {}


@pytest.mark.parametrize(
    "content, needle",
    [(b"caf\xe9 au lait\n", "not UTF-8 text (bad byte at offset 3)"), (b"", "is empty")],
    ids=["not-utf8", "empty"],
)
@pytest.mark.parametrize("name", [corpus.DEFAULT_CORPUS, "mine"])
def test_bad_from_file_is_a_usage_error(content, needle, name, tmp_path, cached, home):
    source = tmp_path / "bad.txt"
    source.write_bytes(content)
    before = snapshot(home)
    assert_one_error(invoke("fetch", "--from", str(source), "--corpus", name, "--force"), needle, code=2)
    assert snapshot(home) == before
    assert corpus.corpus_dir(name).exists() == (name == corpus.DEFAULT_CORPUS)  # the cached one; no empty "mine"


@pytest.mark.parametrize(
    "args, needle",
    [(["--corpus", "mine"], "no download source"), (["--corpus", "../up", "--from", "x.txt"], "invalid corpus name")],
)
def test_bad_corpus_options(args, needle, home):
    assert_one_error(invoke("fetch", *args), needle)
    assert snapshot(home) == {}


@pytest.mark.parametrize("name", [corpus.DEFAULT_CORPUS, "mine"])
def test_tampered_cached_corpus_fails_to_load(name, corpus_file, home):
    for _ in corpus.import_file(corpus_file, name):
        pass
    path = corpus.text_path(name)
    path.write_bytes(path.read_bytes().replace(b"ROMEO", b"ROMEA", 1))
    with pytest.raises(corpus.CorpusError, match=re.escape(TAMPER_HINTS[name])):
        corpus.load(name)
    assert f"{name} (CORRUPT" in invoke("info").output


# --------------------------------------------------------------------------- every source gets the same checks


def drip(body: bytes, stop: threading.Event, every: float = 0.05) -> Respond:
    """Announce ``body`` whole, then send it a byte at a time: every read is quick, the whole takes for ever."""

    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        with contextlib.suppress(OSError):  # the client hung up
            for i in range(len(body)):
                if stop.wait(every):
                    return
                handler.wfile.write(body[i : i + 1])

    return respond


def test_deadline_cuts_off_a_server_that_drips(serve, stop, data, home):
    url, hits = serve(drip(data, stop))
    result = invoke("fetch", "--url", url, "--deadline", "0.5", "--timeout", "5", "--retries", "1")
    assert_one_error(result, f"download from {url} did not finish within the 0.5 s deadline", "--deadline", code=1)
    assert hits == ["/input.txt"] and snapshot(home) == {}
    assert not corpus.corpus_dir(corpus.DEFAULT_CORPUS).exists()


def test_deadline_covers_the_retries_too(serve, home):
    url, hits = serve(send(b"busy", status=503))
    with pytest.raises(corpus.CorpusError, match="HTTP 503 .*the 1 s deadline is near"):
        list(corpus.fetch(url=url, retries=10, backoff=0.2, deadline=1.0))
    assert 1 < len(hits) < 10 and snapshot(home) == {}


@pytest.mark.parametrize("name", [corpus.DEFAULT_CORPUS, "mine"])
def test_download_that_is_not_utf8_is_never_cached(name, serve, data, home):
    url, _ = serve(send(data[:100] + b"\xff" + data[101:]))  # the corpus's length, one byte wrong
    result = invoke("fetch", "--url", url, "--corpus", name)
    assert_one_error(result, f"{url} is not UTF-8 text (bad byte at offset 100)", code=1)
    assert snapshot(home) == {} and corpus.cached_names() == []
    info = invoke("info")
    assert info.exit_code == 0 and "verified" not in info.output and "none (run `tinyshake fetch`)" in info.output


def test_character_split_between_reads_is_utf8_and_a_bad_byte_is_placed_exactly(tmp_path, home):
    source = tmp_path / "split.txt"
    text = "a" * (corpus.CHUNK - 1) + "é\n"  # the two bytes of é straddle the first block's end
    source.write_text(text, encoding="utf-8")
    assert invoke("fetch", "--from", str(source), "--corpus", "split").exit_code == 0
    assert corpus.load("split").text == text
    source.write_bytes(text.encode() + b"b" * 5 + b"\xc3(")
    result = invoke("fetch", "--from", str(source), "--corpus", "bad")
    assert_one_error(result, f"not UTF-8 text (bad byte at offset {corpus.CHUNK + 7})", code=2)


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "until-close"])
def test_download_larger_than_max_bytes_is_refused(announced, serve, home):
    body = b"To be, or not to be\n" * 100
    respond = send(body) if announced else raw(b"HTTP/1.0 200 OK\r\n\r\n" + body)
    url, _ = serve(respond)
    result = invoke("fetch", "--url", url, "--corpus", "mine", "--max-bytes", "1000", "--retries", "1")
    assert_one_error(result, f"{url} has more than 1,000 bytes", "--max-bytes", code=1)
    assert snapshot(home) == {} and not corpus.corpus_dir("mine").exists()


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
@pytest.mark.parametrize(
    "args, needle, code",
    [
        (["--from", "/dev/zero"], "/dev/zero has more than the 1,115,394 bytes of the tinyshakespeare corpus", 1),
        (["--from", "/dev/zero", "--corpus", "zeros", "--max-bytes", "100000"], "/dev/zero has more than 100,000 bytes", 2),
        (["--url", "file:///dev/zero", "--corpus", "zeros", "--max-bytes", "1000"], "file:///dev/zero has more than 1,000", 1),
    ],
    ids=["known-corpus", "from", "file-url"],
)
def test_an_endless_source_stops_at_the_cap(args, needle, code, home):
    assert_one_error(invoke("fetch", *args), needle, code=code)
    assert snapshot(home) == {} and not paths.corpus_root().joinpath("zeros").exists()


def test_an_existing_custom_corpus_is_replaced_only_with_force(serve, tmp_path, home):
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text("the first text\n")
    second.write_text("the second text\n")
    assert invoke("fetch", "--from", str(first), "--corpus", "mine").exit_code == 0
    before = snapshot(home)
    url, hits = serve(send(second.read_bytes()))
    for source in (["--from", str(second)], ["--url", url]):
        assert_one_error(invoke("fetch", *source, "--corpus", "mine"), "corpus 'mine' already exists", "--force", code=2)
    assert snapshot(home) == before and hits == []
    assert invoke("fetch", "--from", str(second), "--corpus", "mine", "--force").exit_code == 0
    assert corpus.load("mine").text == "the second text\n"


# --------------------------------------------------------------------------- options that are refused at once


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0", "1e300"])
@pytest.mark.parametrize("option", ["--timeout", "--deadline"])
def test_seconds_that_are_not_a_finite_positive_number(option, value, home):
    result = invoke("fetch", "--url", refused_url(), option, value)
    assert_one_error(result, f"{option} must be a number of seconds above 0", code=2)
    assert snapshot(home) == {}


@pytest.mark.parametrize("value", ["0", "-5"])
def test_max_bytes_below_one(value, home):
    assert_one_error(invoke("fetch", "--max-bytes", value), "--max-bytes must be at least 1", code=2)


def test_an_empty_url_is_refused_not_taken_for_the_default(serve, data, home):
    url, hits = serve(send(data))
    result = invoke("fetch", "--url", "", TINYSHAKE_CORPUS_URL=url)
    assert_one_error(result, "the URL is empty", code=2)
    assert hits == [] and snapshot(home) == {}


def test_url_and_from_together_are_refused(corpus_file, home):
    assert_one_error(invoke("fetch", "--url", refused_url(), "--from", str(corpus_file)), "not both", code=2)


@pytest.mark.parametrize("url", ["gopher://x", "ftp://127.0.0.1/input.txt", "data:,hello"])
def test_unsupported_scheme_is_refused_at_once(url, home):
    result = invoke("fetch", "--url", url, "--retries", "3")
    assert_one_error(result, f"unsupported URL scheme {url.split(':')[0]!r}", "use http, https or file", code=2)
    assert "Retrying" not in result.output and snapshot(home) == {}


def test_unsupported_scheme_through_the_entry_point(home):
    proc = run_exe(home, "fetch", "--url", "gopher://x")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "Error: unsupported URL scheme 'gopher' in 'gopher://x': use http, https or file (or --from PATH for a local file)"
    ]


def test_a_name_ending_in_a_newline_is_refused(corpus_file, home):
    assert_one_error(invoke("fetch", "--from", str(corpus_file), "--corpus", "nl\n"), "invalid corpus name", code=2)
    assert not paths.corpus_root().exists() or list(paths.corpus_root().iterdir()) == []


# --------------------------------------------------------------------------- leftovers


def test_a_killed_fetch_leaves_a_part_file_that_the_next_write_removes(serve, stop, data, home, tmp_path):
    url, _ = serve(drip(data, stop, every=0.01))
    folder = corpus.corpus_dir("mine")
    proc = subprocess.Popen([tinyshake_exe(), "fetch", "--url", url, "--corpus", "mine"], env=subprocess_env(home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):  # up to a minute for the download to begin
            if folder.is_dir() and any(p.name.endswith(".part") for p in folder.iterdir()):
                break
            stop.wait(0.1)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    leftovers = [p.name for p in folder.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".input.txt.") and leftovers[0].endswith(".part")
    source = tmp_path / "text.txt"
    source.write_text("a small text\n")
    assert invoke("fetch", "--from", str(source), "--corpus", "mine").exit_code == 0
    assert sorted(p.name for p in folder.iterdir()) == ["input.txt", "meta.json"]


@pytest.mark.parametrize("source", ["/nonexistent/input.txt", "."], ids=["missing", "a-folder"])
@pytest.mark.parametrize("name", [corpus.DEFAULT_CORPUS, "mine"])
def test_from_a_path_that_cannot_be_read_is_refused_even_when_the_corpus_is_cached(source, name, cached, corpus_file,
                                                                                    home):
    for _ in corpus.import_file(corpus_file, "mine"):
        pass
    before = snapshot(home)
    assert_one_error(invoke("fetch", "--from", source, "--corpus", name), f"cannot read {source}", code=2)
    assert snapshot(home) == before


@pytest.mark.parametrize("option", ["--timeout", "--deadline"])
@pytest.mark.parametrize("value", ["-1", "0"])
def test_download_limits_are_checked_with_from_too(option, value, corpus_file, home):
    assert_one_error(invoke("fetch", "--from", str(corpus_file), option, value), f"{option} must be", code=2)
    assert snapshot(home) == {}


def test_from_a_fifo_with_no_writer_does_not_wait_when_the_corpus_is_cached(cached, tmp_path, home):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    proc = subprocess.run([tinyshake_exe(), "fetch", "--from", str(fifo)], env=subprocess_env(home),
                          capture_output=True, text=True, timeout=60)  # opening the FIFO would block for ever
    assert proc.returncode == 0 and "already cached" in proc.stdout, proc.stderr


def test_a_custom_corpus_whose_text_is_gone_says_to_import_it_again_with_force(corpus_file, home):
    for _ in corpus.import_file(corpus_file, "mine"):
        pass
    corpus.text_path("mine").unlink()
    with pytest.raises(corpus.CorpusError, match="is missing; import it again with .*--corpus mine --force"):
        corpus.load("mine")


# --------------------------------------------------------------------------- issue #24: nothing hangs, exit 2 for bad URLs


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/x", "http://127.0.0.1:0/x", "https://127.0.0.1:65536/x",
                                 "http://:80/x", "http:///x", "http://127.0.0.1:-1/x"])
def test_a_port_out_of_range_or_a_missing_host_is_a_usage_error_before_any_attempt(url, home):
    assert_one_error(invoke("fetch", "--url", url, "--corpus", "x", "--retries", "1"), f"invalid URL {url!r}", code=2)
    assert snapshot(home) == {}


def drip_headers(stop: threading.Event, every: float = 0.3) -> Respond:
    """A status line, then one header a byte at a time: each read is quick, the headers never end."""

    def respond(handler: BaseHTTPRequestHandler) -> None:
        with contextlib.suppress(OSError):
            handler.wfile.write(b"HTTP/1.0 200 OK\r\n")
            for _ in range(100000):
                if stop.wait(every):
                    return
                handler.wfile.write(b"x")
                handler.wfile.flush()

    return respond


def test_the_deadline_covers_headers_that_drip(serve, stop, home):
    url, hits = serve(drip_headers(stop))
    proc = run_exe(home, "fetch", "--url", url, "--corpus", "x", "--timeout", "1", "--deadline", "2",
                   "--retries", "2")  # before: it read on for as long as the server dripped (30 s, then timed out)
    assert proc.returncode == 1 and proc.stderr.splitlines() == [
        f"Error: download from {url} did not finish within the 2 s deadline (0 bytes received; allow more with "
        "--deadline)"]
    assert len(hits) == 1 and snapshot(home) == {}


@pytest.mark.parametrize("kind", ["fifo", "socket", "folder"])
def test_a_file_url_that_names_no_regular_file_is_refused_without_opening_it(kind, tmp_path, home):
    target = tmp_path / kind
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(target))
    else:
        target.mkdir()
    proc = run_exe(home, "fetch", "--url", target.as_uri(), "--corpus", "x")  # a FIFO with no writer blocked for ever
    assert proc.returncode == 2 and proc.stderr.splitlines() == [
        f"Error: {target.as_uri()} is not a regular file (a FIFO, a socket or a folder); to read a pipe, use --from PATH"]
    assert snapshot(home) == {}


@pytest.fixture
def fifo_corpus(cached: Path) -> Path:
    """The cached corpus's text replaced by a FIFO with no writer (its record stays)."""
    cached.unlink()
    os.mkfifo(cached)
    return cached


@pytest.mark.parametrize("command", ["train", "eval"])
def test_a_cached_corpus_that_is_a_fifo_is_damaged_not_waited_on(cached, home, command):
    from test_train import tiny_run

    tiny_run("r")  # eval reads the corpus of a run that exists
    cached.unlink()
    os.mkfifo(cached)
    args = ["--max-iters", "1"] if command == "train" else []
    proc = run_exe(home, command, *args, "--device", "cpu")  # before: both waited for a writer for ever
    assert proc.returncode == 1 and proc.stderr.splitlines() == [
        f"Error: the cached corpus {cached} is damaged: it is not a regular file; run `tinyshake fetch --force` to "
        "fix it"]


def test_info_calls_a_cached_fifo_corrupt_and_fetch_replaces_it(fifo_corpus, home, serve, data):
    proc = run_exe(home, "info")
    assert proc.returncode == 0 and "tinyshakespeare (CORRUPT" in proc.stdout
    url, _ = serve(send(data))
    proc = run_exe(home, "fetch", "--url", url)
    assert proc.returncode == 0 and fifo_corpus.is_file() and corpus.is_cached(corpus.DEFAULT_CORPUS)
