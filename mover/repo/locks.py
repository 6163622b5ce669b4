"""Advisory locks on files in ``locks/``, with flock(2).

The kernel drops a lock when its holder closes the file or dies, so a crashed writer never
leaves a lock held. Locks are per open file, so two threads of one process exclude each
other as two processes do. (NFS clients map flock to byte-range locks on Linux.)
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from mover.repo.ioerrors import io_error


def acquire(path: Path, *, shared: bool = False, wait: bool = True) -> int | None:
    """Lock ``path`` (created if missing) and return the descriptor that holds the lock.

    Returns None instead of waiting when ``wait`` is false and another holder conflicts.
    """
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise io_error(f"cannot open lock file {path}", exc) from exc
        mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as exc:
            os.close(fd)
            raise io_error(f"cannot lock {path}", exc) from exc
        # A holder unlinks its lock file before releasing it (see release): if we locked a
        # file that is no longer the one at ``path``, somebody else may lock the new one.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def release(fd: int, remove: Path | None = None) -> None:
    """Drop the lock held by ``fd``; first unlink ``remove`` (its lock file) if given.

    Unlinking while still holding the lock means nobody else can be holding that file.
    """
    try:
        if remove is not None:
            remove.unlink(missing_ok=True)
    finally:
        os.close(fd)
