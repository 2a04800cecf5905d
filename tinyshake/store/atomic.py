"""Write files so that a failure never damages what is already on disk.

Everything is written to a temporary file in the destination's own folder
(so the final rename stays on one filesystem), flushed to disk, and only then
renamed over the destination with :func:`os.replace`, which is atomic.

A writer that is killed between writing and renaming leaves its temporary file
behind. Each temporary name carries the writer's process id, so the next write
in that folder can tell a dead writer's leftovers from a live writer's work in
progress and remove only the former.

A file the user names for output (``plot --svg``, ``train --metrics``) passes
one rule, :func:`output_target`, before anything is written to it: never inside
tinyshake's data folder, never over something that is not a regular file.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from tinyshake.store import paths
from tinyshake.errors import TinyshakeError, UsageError

KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
         (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))
# ".NAME.PID.RANDOM.part" (and the ".NAME.PID.part" that older fetches used): the PID is the writer's.
_PART_RE = re.compile(r"\.(\d+)(?:\.\w+)?\.part\Z")


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


def _running(pid: int) -> bool:
    """Whether process ``pid`` may still be writing (when in doubt: yes, so its file is kept)."""
    if os.name == "nt":  # os.kill(pid, 0) sends Ctrl-C there; never guess on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OverflowError, ValueError):  # no process can have such an id
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def remove_leftovers(folder: Path) -> None:
    """Delete the temporary files that killed writers left in ``folder``; a live writer's file is kept."""
    with contextlib.suppress(OSError):
        for path in folder.iterdir():
            match = _PART_RE.search(path.name) if path.name.startswith(".") else None
            if match and not _running(int(match.group(1))):
                with contextlib.suppress(OSError):
                    path.unlink()


@contextlib.contextmanager
def atomic_writer(dest: Path) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``dest`` only if the ``with`` block succeeds."""
    ensure_dir(dest.parent)
    remove_leftovers(dest.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=".part", dir=dest.parent)
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


def _kind(mode: int) -> str:
    """What a file that is not a regular one is, in words."""
    return next((name for test, name in KINDS if test(mode)), "not a regular file")


def output_target(path: Path, what: str) -> Path:
    """Where an output that the user named may go, with symlinks followed; else a one-line UsageError.

    The one rule for every output a command writes. A path inside tinyshake's
    data folder is refused: a rename there could replace a checkpoint or a
    corpus. So is a target that exists and is not a regular file (a device, a
    FIFO, a socket, a folder): the atomic rename would put a plain file in its
    place (as root, ``/dev/null`` itself), and writing into it as ``cat > PATH``
    does could block on a FIFO or fill a disk. A link is followed, so the file
    it points to is what gets replaced, not the link.
    """
    target = Path(os.path.realpath(path))
    for root in (paths.home(), paths.cache_root()):
        real_root = Path(os.path.realpath(root))
        if target == real_root or real_root in target.parents:
            raise UsageError(f"cannot write {what} to {path}: it is inside tinyshake's data folder {root}; "
                             "choose a path elsewhere")
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise UsageError(f"cannot write {what} to {path}: {exc.strerror or exc}") from None
    if mode is not None and not stat.S_ISREG(mode):
        raise UsageError(f"cannot write {what} to {path}: it is {_kind(mode)}, which an output never replaces; "
                         "give the path of a regular file")
    if not target.parent.is_dir():
        raise UsageError(f"cannot write {what} to {path}: its folder does not exist")
    return target


def write_output(path: Path, data: bytes, what: str) -> None:
    """Replace the user's output file ``path`` with ``data`` atomically, checked by :func:`output_target` now.

    Checked at every write, not only once: a long training rewrites its metrics
    file at each evaluation, and the path may have changed meanwhile.
    """
    write_bytes(output_target(path, what), data)
