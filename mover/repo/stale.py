"""Sweeping what crashed writers left behind: temporaries, uncommitted backups, locks."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mover.repo import layout
from mover.repo.storeclock import store_now

if TYPE_CHECKING:
    from mover.repo.repository import Repository

log = logging.getLogger(__name__)


def clean_stale(repo: Repository, max_age: float = 3600.0) -> list[str]:
    """Remove, and return the names of, debris older than ``max_age`` seconds:

    * the store's temporaries (a writer keeps one only while writing it);
    * pending backups without a checkpoint whose writer is gone: a running backup holds
      its lock, so it is skipped however old its objects are; one with a checkpoint is kept
      for the next run of its VM to resume (that run removes it, resuming or not);
    * lock files of backups that nobody holds.

    Safe to run while backups run, in this or other processes.
    """
    removed: list[str] = []
    sweep = getattr(repo.store, "clean_temporaries", None)
    if sweep is not None:
        removed.extend(f"tmp/{n}" for n in sweep(max_age))
    # By the store's clock: on an object store the server stamps mtime, and its clock may
    # be minutes or hours off ours.
    cutoff = store_now(repo.store) - max_age
    pending: dict[tuple[str, str], list[str]] = {}
    for name in repo.store.list(layout.BACKUPS):
        parts = layout.split_backup(name)
        if parts is not None:
            pending.setdefault(parts[:2], []).append(name)
    for (vm, backup_id), names in pending.items():
        if any(n.endswith("/" + layout.RECORD) or n.endswith("/" + layout.CHECKPOINT)
               for n in names):
            continue
        stats = [repo.store.stat(n) for n in names]
        if max((s.mtime for s in stats if s is not None), default=0.0) >= cutoff:
            continue  # a slow writer's fresh object keeps it alive
        lock = repo.locks.acquire(layout.lock_backup(backup_id), wait=False)
        if lock is None:
            continue  # a live writer
        try:
            repo.store.delete_many(names)
            removed.append(layout.backup_dir(vm, backup_id))
        finally:
            lock.release()
    for name in repo.locks.names():
        if name.startswith("backup-") and name != layout.LOCK_REPOSITORY:
            repo.locks.forget(name)
    return removed
