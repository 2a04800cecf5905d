"""One owner per run: an exclusive OS lock on ``<home>/runs/.locks/<name>.lock``.

``train`` holds it for the whole run and ``runs rm`` while it deletes, so two
trainings of one run, or a deletion under a training, are refused instead of
replacing each other's files. The lock is the operating system's (``flock`` on
POSIX, ``msvcrt.locking`` on Windows), so it is released when its process
ends, however it ends: a killed training never leaves a run locked. The file
holds the owner's pid and purpose, for the refusal message. Lock files are
left in place: deleting one while another process opens it would let two
processes each hold "the" lock.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Iterator

from tinyshake.atomic import ensure_dir
from tinyshake.errors import TinyshakeError, UsageError

LOCKS = ".locks"
WAIT_FOR_INFO = 1.0  # seconds a refusal waits for a new owner to write its pid
WINDOWS_LOCK_AT = 1 << 30  # Windows locks bytes, which then cannot be read: lock one far past the text

try:
    import fcntl
except ImportError:  # Windows
    import msvcrt

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, WINDOWS_LOCK_AT, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, WINDOWS_LOCK_AT, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def lock_path(name: str) -> Path:
    from tinyshake.record import run_dir  # the name check; record imports this module

    return run_dir(name).parent / LOCKS / f"{name}.lock"


def _info(fd: int) -> tuple[int, str] | None:
    """The owner's pid and purpose from the lock file, or None while it has not written them yet."""
    os.lseek(fd, 0, os.SEEK_SET)
    pid, _, purpose = os.read(fd, 256).decode("utf-8", "replace").strip().partition(" ")
    return (int(pid), purpose or "?") if pid.isdigit() else None


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise TinyshakeError(f"cannot open the lock file {path}: {exc.strerror or exc}") from None


def _write_info(fd: int, path: Path, purpose: str) -> None:
    try:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()} {purpose}\n".encode())
    except OSError as exc:
        raise TinyshakeError(f"cannot write the lock file {path}: {exc.strerror or exc}") from None


def _owner(fd: int) -> tuple[int, str] | None:
    """None once ``fd`` holds the lock; else the owner's pid and purpose (pid 0: not written yet)."""
    deadline = time.monotonic() + WAIT_FOR_INFO
    while not _try_lock(fd):
        # a new owner writes its pid right after locking, and holder() locks for an instant: look again
        owner = _info(fd)
        if owner is not None:
            return owner
        if time.monotonic() > deadline:
            return 0, "?"
        time.sleep(0.01)
    return None


@contextlib.contextmanager
def hold(name: str, purpose: str = "train") -> Iterator[None]:
    """Own run ``name`` for the ``with`` block, or raise a UsageError naming the process that owns it."""
    path = lock_path(name)
    ensure_dir(path.parent)
    fd = _open(path)
    try:
        owner = _owner(fd)
        if owner is not None:
            pid, what = owner
            raise UsageError(f"run {name!r} is in use by process {pid or '(starting)'} ({what}); "
                             "wait for it to end, or stop it first")
        try:
            _write_info(fd, path, purpose)
            yield
        finally:
            _unlock(fd)
    finally:
        os.close(fd)


def holder(name: str) -> int | None:
    """The pid of the process that holds run ``name`` (0 if it has not written it yet), or None if nobody does."""
    try:  # read-only and never created: looking must not need the right to write
        fd = os.open(lock_path(name), os.O_RDONLY)
    except OSError:
        return None
    try:
        owner = _owner(fd)
        if owner is None:
            _unlock(fd)
            return None
        return owner[0]
    finally:
        os.close(fd)
