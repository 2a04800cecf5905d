"""Write files so that a failure never damages what is already on disk.

Everything is written to a temporary file in the destination's own folder
(so the final rename stays on one filesystem), flushed to disk, and only then
renamed over the destination with :func:`os.replace`, which is atomic.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from tinyshake.errors import TinyshakeError


def ensure_dir(path: Path) -> Path:
    """Create ``path`` (and parents); a folder that cannot be made is a one-line user error."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TinyshakeError(f"cannot create folder {path}: {exc.strerror or exc}") from None
    return path


def _umask() -> int:
    """The process's umask (reading it means setting it, so it is put straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_writer(dest: Path) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``dest`` only if the ``with`` block succeeds."""
    ensure_dir(dest.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise TinyshakeError(f"cannot write to {dest.parent}: {exc.strerror or exc}") from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; cached data gets the usual permissions
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, dest)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # a full disk, a quota, an I/O error: one line, old file intact
            raise TinyshakeError(f"cannot write {dest}: {exc.strerror or exc}") from None
        raise


def write_bytes(dest: Path, data: bytes) -> None:
    """Atomically replace ``dest`` with ``data``."""
    with atomic_writer(dest) as handle:
        handle.write(data)
