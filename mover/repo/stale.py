"""Sweeping what crashed writers left behind: temporaries and uncommitted backups."""

from __future__ import annotations

import functools
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import zstandard

from mover import chunk, clock
from mover.repo import dirty, locks
from mover.repo.ioerrors import io_error

if TYPE_CHECKING:
    from mover.repo.repository import Repository

log = logging.getLogger(__name__)


def clean_stale(repo: Repository, max_age: float = 3600.0) -> list[Path]:
    """Remove, and return, debris older than ``max_age`` seconds.

    * files in ``tmp/``: a writer keeps a temporary only between writing and renaming it;
    * backup directories without ``backup.json`` whose writer is gone: a running backup
      holds ``locks/backup-<id>.lock``, so it is skipped however old its files are; one
      with a ``checkpoint.json`` is kept for the next run of its VM to resume (that run
      removes it, resuming or not);
    * lock files of backups that are gone.

    Safe to run while backups run, in this or other processes.
    """
    try:
        for what in dirty.recover(repo.path / "locks", repo.path / "chunks", repo.chunks.sync,
                                  functools.partial(_chunk_intact, repo)):
            log.warning("%s", what)
        return _clean(repo, clock.now().timestamp() - max_age)
    except OSError as exc:
        raise io_error(f"cannot clean stale files in {repo.path}", exc) from exc


def _clean(repo: Repository, cutoff: float) -> list[Path]:
    removed: list[Path] = []
    for entry in _entries(repo.path / "tmp"):
        if entry.is_file() and _mtime(entry) < cutoff:
            entry.unlink(missing_ok=True)
            removed.append(entry)
    for vm_dir in _entries(repo.path / "backups"):
        for directory in _entries(vm_dir):
            if (directory / "backup.json").exists() or (directory / "checkpoint.json").exists() \
                    or _newest(directory) >= cutoff:
                continue
            if _with_writer_lock(repo, directory.name, functools.partial(shutil.rmtree, directory)):
                removed.append(directory)
    for lock in _entries(repo.path / "locks"):
        name = lock.name
        if name.startswith("backup-") and name.endswith(".lock") and _mtime(lock) < cutoff:
            backup_id = name[len("backup-") : -len(".lock")]
            if _with_writer_lock(repo, backup_id, lambda: None):
                removed.append(lock)
    return removed


def _chunk_intact(repo: Repository, path: Path) -> bool:
    decompressor = zstandard.ZstdDecompressor()
    return dirty.intact(lambda: chunk.decode(path.read_bytes(), bytes.fromhex(path.name),
                                             decompressor))


def _with_writer_lock(repo: Repository, backup_id: str, action: Callable[[], object]) -> bool:
    """Run ``action`` if no writer holds the backup's lock; then remove the lock file."""
    path = repo.path / "locks" / f"backup-{backup_id}.lock"
    fd = locks.acquire(path, wait=False)
    if fd is None:
        return False  # a live writer: its backup is running, not stale
    try:
        action()
    finally:
        locks.release(fd, remove=path)
    return True


def _entries(directory: Path) -> list[Path]:
    try:
        return sorted(Path(e.path) for e in os.scandir(directory))
    except FileNotFoundError:
        return []


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")  # gone meanwhile: nothing to remove


def _newest(directory: Path) -> float:
    """The latest change inside ``directory``: a slow writer's fresh index keeps it alive."""
    return max([_mtime(directory), *(_mtime(p) for p in _entries(directory))])
