"""Durable, all-or-nothing file writes on a local filesystem.

A reader sees either no file or the whole file, never a prefix, and once a function here
returns, the data and the directory entry survive a crash (the directory is fsynced too:
without that, a rename can be lost on power failure on ext4/xfs even after fsync of the file).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_temp(directory: Path, data: bytes, prefix: str = "") -> Path:
    """Write ``data`` to a new uniquely named file in ``directory`` and fsync it.

    The name is unique across threads and processes (``O_EXCL``); the caller renames or links
    it into place and removes it on failure.
    """
    fd, name = tempfile.mkstemp(dir=directory, prefix=f".{prefix}", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def write_atomic(path: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    The temporary file lives in ``tmp_dir`` (default: the target's directory), which must be
    on the same filesystem so the rename is atomic. Raises OSError; callers map it.
    """
    temp = write_temp(tmp_dir or path.parent, data, prefix=path.name + ".")
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (creations, renames, removals) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dir(path: Path) -> None:
    """Create ``path`` if missing (parents too), durably; an existing directory is fine."""
    if path.is_dir():
        return
    make_dir(path.parent)
    try:
        path.mkdir()
    except FileExistsError:
        if not path.is_dir():
            raise
        return  # another thread or process created it first: same result
    fsync_dir(path.parent)
