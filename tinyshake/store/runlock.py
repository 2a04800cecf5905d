"""One owner per run: an exclusive OS lock on ``<home>/runs/.locks/<name>.lock``, taken with ``filelock``.

``train`` holds it for the whole run and ``runs rm`` while it deletes, so two
trainings of one run, or a deletion under a training, are refused instead of
replacing each other's files. The lock is the operating system's (filelock's
``UnixFileLock`` is ``flock``, its ``WindowsFileLock`` is ``LockFileEx``), so
it is released when its process ends, however it ends: a killed training never
leaves a run locked. ``SoftFileLock`` (a file that exists) would outlive a
killed process, so it is never used.

The owner writes its pid and purpose beside the lock, in ``<name>.owner``, for
the refusal message: some filelock versions truncate the lock file when they
open it, and Windows cannot read a locked file. Lock files are left in place:
deleting one while another process opens it would let two processes each hold
"the" lock. The owner file is removed by its owner while it still holds the
lock, so a new owner's readers never see the old pid (only a kill leaves one).

filelock is imported when a lock is taken or looked at, not with this module:
``tinyshake --help`` loads it and must start fast (filelock costs about 20 ms).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from tinyshake.store import names, paths
from tinyshake.store.atomic import ensure_dir, write_bytes
from tinyshake.errors import TinyshakeError, UsageError

LOCKS = ".locks"
WAIT_FOR_INFO = 1.0  # seconds a refusal waits for a new owner to write its pid
MAX_OWNER_BYTES = 256


def lock_path(name: str) -> Path:
    return paths.runs_root() / LOCKS / f"{names.check(name, 'run')}.lock"


def owner_path(name: str) -> Path:
    return lock_path(name).with_suffix(".owner")


def _read_owner(name: str) -> tuple[int, str] | None:
    """The owner's pid and purpose, or None while it has not written them yet."""
    try:
        with owner_path(name).open("rb") as handle:
            text = handle.read(MAX_OWNER_BYTES).decode("utf-8", "replace")
    except OSError:
        return None
    pid, _, purpose = text.strip().partition(" ")
    return (int(pid), purpose or "?") if pid.isdigit() else None


def _owner(name: str, try_lock: Callable[[], bool]) -> tuple[int, str] | None:
    """None once ``try_lock()`` wins; else the owner's pid and purpose (pid 0: not written yet)."""
    deadline = time.monotonic() + WAIT_FOR_INFO
    while not try_lock():
        # a new owner writes its pid right after locking, and holder() locks for an instant: look again
        owner = _read_owner(name)
        if owner is not None:
            return owner
        if time.monotonic() > deadline:
            return 0, "?"
        time.sleep(0.01)
    return None


@contextlib.contextmanager
def hold(name: str, purpose: str = "train") -> Iterator[None]:
    """Own run ``name`` for the ``with`` block, or raise a UsageError naming the process that owns it.

    A second ``hold`` of the same run in this process is refused like one in
    another process: each lock object opens its own descriptor, and neither
    filelock's thread-local state nor its per-path singleton is used.
    """
    from filelock import Timeout, UnixFileLock, WindowsFileLock

    path = lock_path(name)
    ensure_dir(path.parent)
    lock = (WindowsFileLock if sys.platform == "win32" else UnixFileLock)(str(path), timeout=0, thread_local=False)

    def try_lock() -> bool:
        try:
            lock.acquire()
        except Timeout:
            return False
        except OSError as exc:
            raise TinyshakeError(f"cannot open the lock file {path}: {exc.strerror or exc}") from None
        return True

    owner = _owner(name, try_lock)
    if owner is not None:
        raise _in_use(name, owner)
    try:
        write_bytes(owner_path(name), f"{os.getpid()} {purpose}\n".encode())  # a failure is one line already
        yield
    finally:
        with contextlib.suppress(OSError):  # before the release: the next owner's pid is the only one there
            owner_path(name).unlink()
        lock.release()


def _in_use(name: str, owner: tuple[int, str]) -> UsageError:
    pid, what = owner
    return UsageError(f"run {name!r} is in use by process {pid or '(starting)'} ({what}); "
                      "wait for it to end, or stop it first")


def refuse_held(name: str) -> None:
    """Refuse up front a run that another process holds, as :func:`hold` would refuse it, without taking the lock.

    ``train`` plans before it locks (the lock is taken when the run starts), and
    says at once why it cannot go on.
    """
    owner = _held_by(name)
    if owner is not None:
        raise _in_use(name, owner)


def holder(name: str) -> int | None:
    """The pid of the process that holds run ``name`` (0 if it has not written it yet), or None if nobody does."""
    owner = _held_by(name)
    return owner[0] if owner is not None else None


def _held_by(name: str) -> tuple[int, str] | None:
    """The pid and purpose of the process that holds run ``name``, or None if nobody does."""
    from filelock import lock_descriptor, unlock_descriptor

    try:  # read-only and never created: looking must not need the right to write
        fd = os.open(lock_path(name), os.O_RDONLY)
    except OSError:
        return None
    try:
        owner = _owner(name, lambda: lock_descriptor(fd, blocking=False))
        if owner is None:
            unlock_descriptor(fd)
        return owner
    finally:
        os.close(fd)
