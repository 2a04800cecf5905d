"""Shared fixtures: a temporary data home for every test, the tiny Shakespeare corpus wherever it is, and a
pseudo-terminal to run the installed ``tinyshake`` on.

The corpus is looked for in this order, each candidate checked by its SHA-256:
1. ``$TINYSHAKE_TEST_CORPUS`` (a path; if set, it must be the corpus),
2. ``../shared/data/tinyshakespeare/input.txt`` beside the checkout (CI),
3. the user's own cache, as ``tinyshake fetch`` (or the README's ``tinyshake train``) wrote it.
With none of them, the tests that need the corpus are skipped, all with one reason, and all others run.
"""

from __future__ import annotations

import codecs
import fcntl
import hashlib
import json
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
from pathlib import Path
from typing import Iterator, Optional

import pytest
import torch

from tinyshake import corpus

TEST_CORPUS_ENV = "TINYSHAKE_TEST_CORPUS"
TINYSHAKE = str(Path(sys.executable).with_name("tinyshake"))  # the installed entry point of this venv
SGR = re.compile(r"\x1b\[([0-9;]*)m")  # Select Graphic Rendition: colours and attributes (bold, dim, ...)
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def find_test_corpus(shared: Path = SHARED) -> Path | str:
    """The tiny Shakespeare file the tests read, or the reason there is none.

    Reads ``TINYSHAKE_HOME`` (through :mod:`tinyshake.store.paths`) as the user set it, so it must run before the
    autouse ``home`` fixture points that variable at a temporary folder.
    """
    known = corpus.KNOWN[corpus.DEFAULT_CORPUS]
    explicit = os.environ.get(TEST_CORPUS_ENV)
    if explicit:
        candidates = [Path(explicit).expanduser()]
    else:
        candidates = [shared / "data" / "tinyshakespeare" / "input.txt", corpus.text_path(corpus.DEFAULT_CORPUS)]
    for path in candidates:
        try:
            if path.stat().st_size == known.size and hashlib.sha256(path.read_bytes()).hexdigest() == known.sha256:
                return path
        except OSError:
            continue
    if explicit:
        return f"${TEST_CORPUS_ENV}={explicit} is not the tiny Shakespeare corpus (missing, or its SHA-256 differs)"
    looked = ", ".join(str(p) for p in candidates)
    return f"needs the tiny Shakespeare corpus: run `tinyshake fetch` (or set ${TEST_CORPUS_ENV}); looked in {looked}"


FOUND = find_test_corpus()  # now, at import: the user's TINYSHAKE_HOME is still the user's


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty TINYSHAKE_HOME, and no colours leak in."""
    path = tmp_path / "home"
    monkeypatch.setenv("TINYSHAKE_HOME", str(path))
    monkeypatch.delenv("TINYSHAKE_CORPUS_URL", raising=False)
    monkeypatch.setenv("COLUMNS", "120")
    return path


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread; on a busy 2-core machine more threads spin for ages."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def corpus_file() -> Path:
    """The verified tiny Shakespeare file (read only: it may be the user's own cache)."""
    if isinstance(FOUND, str):
        if os.environ.get(TEST_CORPUS_ENV):  # asked for by name: a wrong path is a failure, not a skip
            pytest.fail(FOUND)
        pytest.skip(FOUND)
    return FOUND


@pytest.fixture
def cached(home: Path, corpus_file: Path) -> Path:
    """The tiny Shakespeare corpus imported into the temporary home; returns its cached path."""
    for _ in corpus.import_file(corpus_file):
        pass
    return corpus.text_path(corpus.DEFAULT_CORPUS)


def default_sigint() -> None:
    """``preexec_fn`` for a child that takes Ctrl-C as a shell's foreground job does.

    A job that a script starts with ``&`` (pytest run that way, say) inherits
    SIGINT ignored, and so would every ``tinyshake`` it starts: a Ctrl-C test
    would then wait for ever on a signal that never arrives.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def subprocess_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for running the installed ``tinyshake`` entry point in a subprocess."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TINYSHAKE_CORPUS_URL")}
    env.update({"TINYSHAKE_HOME": str(home), "PYTHONUNBUFFERED": "1"}, **extra)
    return env


class Terminal:
    """The installed ``tinyshake`` on a pseudo-terminal (width ``columns``); every read is kept with its time.

    The pty is the child's controlling terminal, so a ^C typed there is a real
    SIGINT, and Rich sees a terminal as a user's shell would give it.
    """

    def __init__(self, home: Path, *args: str, columns: int = 120, **env: str) -> None:
        environ = subprocess_env(home, **{"TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": "40", **env})
        argv = [TINYSHAKE, *args]
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            try:
                default_sigint()
                os.execve(argv[0], argv, environ)
            finally:
                os._exit(127)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.output = ""
        self.raw = b""
        self.reads: list[tuple[float, int, str]] = []  # (time, offset in output, text)
        self.status: Optional[int] = None

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            data = b""
        if not data:
            return False
        self.raw += data
        text = self.decoder.decode(data)
        self.reads.append((time.perf_counter(), len(self.output), text))
        self.output += text
        return True

    def expect(self, pattern: str, after: int = 0, timeout: float = 60.0) -> re.Match:
        """Read until ``pattern`` matches the output from offset ``after``; fails with the output so far."""
        deadline = time.perf_counter() + timeout
        while True:
            match = re.compile(pattern).search(self.output, after)
            if match:
                return match
            remaining = deadline - time.perf_counter()
            if remaining <= 0 or not self._read(min(remaining, 0.5)):
                raise AssertionError(f"never saw {pattern!r}; output:\n{self.output[after:]!r}")

    def send(self, text: str) -> int:
        """Type ``text``; returns the output offset from which its answer will appear."""
        mark = len(self.output)
        os.write(self.fd, text.encode())
        return mark

    def wait(self, timeout: float = 60.0) -> int:
        """Read everything until the command exits; returns its exit status."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            self._read(0.1)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                while self._read(0.1) and select.select([self.fd], [], [], 0)[0]:
                    pass  # what it wrote just before it ended
                self.status = os.waitstatus_to_exitcode(status)
                return self.status
        raise AssertionError(f"tinyshake did not exit; output:\n{self.output[-2000:]!r}")

    def close(self) -> None:
        if self.status is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


@pytest.fixture
def terminal() -> Iterator[type[Terminal]]:
    """Start :class:`Terminal` sessions (``terminal(home, *args)``); whatever is still running is killed after the test."""
    opened: list[Terminal] = []

    def start(home: Path, *args: str, **kwargs: object) -> Terminal:
        opened.append(Terminal(home, *args, **kwargs))  # type: ignore[arg-type]
        return opened[-1]

    yield start  # type: ignore[misc]
    for term in opened:
        term.close()


def table_cells(line: str) -> list[str]:
    """The cells of one line of a piped table, whose columns two spaces or more set apart."""
    return re.split(r" {2,}", line.strip())


def colours(text: str) -> set[str]:
    """The colours that the SGR codes in ``text`` set: foreground as ``31`` or ``38;5;208``, background as ``bg 41``.

    Other attributes (bold, dim, italic, underline, reset) are not colours, so ``NO_COLOR`` may keep them.
    """
    found = set()
    for params in SGR.findall(text):
        codes = params.split(";")
        while codes:
            code = codes.pop(0)
            if code in ("38", "48"):  # extended: 38;5;N or 38;2;R;G;B, and the same for backgrounds
                size = 2 if codes[:1] == ["5"] else 4
                value = ";".join(["38", *codes[:size]])
                found.add(value if code == "38" else f"bg {value[1:]}")
                del codes[:size]
            elif re.fullmatch(r"3[0-7]|9[0-7]", code):
                found.add(code)
            elif re.fullmatch(r"4[0-7]|10[0-7]", code):
                found.add(f"bg {code}")
    return found


def trained_home(factory: pytest.TempPathFactory, corpus_file: Path, runs: dict[str, list[str]]) -> Path:
    """A data home with tiny Shakespeare imported and ``runs`` trained (name: train's options), for a module to share."""
    from typer.testing import CliRunner

    from tinyshake.cli import app

    home = factory.mktemp("trained-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TINYSHAKE_HOME", str(home))
        for _ in corpus.import_file(corpus_file):
            pass
        for name, args in runs.items():
            result = CliRunner().invoke(app, ["train", "--run", name, *args])
            assert result.exit_code == 0, result.output
    return home


def on_disk(run: str) -> dict:
    """A run's config.json as JSON, read straight from its folder: what a save wrote, for tests of what is stored."""
    from tinyshake.store import record

    return json.loads((record.run_dir(run) / record.CONFIG).read_text())
