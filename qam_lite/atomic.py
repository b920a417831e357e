"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half.

Every file a run keeps (checkpoint, CSV tables, JSON records, the curve) is written the same way:
a temporary file with a unique name in the same folder, flushed and ``fsync``-ed, moved over the
target with ``os.replace`` (atomic on POSIX and Windows), then the folder itself is ``fsync``-ed
so the rename survives a power cut. A failed write (disk full, read-only folder) removes its
temporary file and leaves the previous version in place. The file gets the mode an ordinary
``open(path, "w")`` would give it (``0o666`` less the umask): ``mkstemp``'s private ``0o600``
would hide results from colleagues on a shared cluster.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


class WriteError(Exception):
    """A file could not be written (disk full, no permission, ...); the old version is intact.

    ``errno`` is the underlying ``OSError``'s error number.
    """

    def __init__(self, message: str, errno_: int | None = None):
        super().__init__(message)
        self.errno = errno_


def fsync_dir(folder: str | Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def describe(err: OSError, path: str | Path) -> str:
    """One sentence for a failed write of ``path`` that says what to do about it."""
    if err.errno == errno.ENOSPC:
        why = "no space left on the device; free some space"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "the folder is not writable; use a writable folder"
    else:
        why = f"{err.strerror or err}"
    return f"cannot write {path}: {why}"


def make_folder(path: str | Path, purpose: str) -> Path:
    """Create the output folder ``path`` (and its parents) and check it can be written, before any
    work is done; raises :class:`WriteError` with one sentence naming the problem: a file where
    a folder should be, a read-only or missing parent, a full disk."""
    path = Path(path).expanduser()
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            raise WriteError(
                f"{purpose}: {parent} is a file, not a folder; accepted: a folder path",
                errno.ENOTDIR,
            )
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".qam-lite-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise WriteError(f"{purpose}: {describe(err, path)}", err.errno) from err
    return path


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back (one call, no file opened).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_with(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Atomically replace ``path`` by what ``write(file)`` writes to a binary file object.

    Raises :class:`WriteError` (with the temporary file removed and ``path`` untouched) if any
    step fails.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        raise WriteError(describe(err, path), err.errno) from err
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    fsync_dir(path.parent)
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Atomically replace ``path`` by ``data`` (see :func:`write_with`)."""
    return write_with(path, lambda f: f.write(data))
