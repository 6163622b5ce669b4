"""Power-loss safety of the chunk store.

Chunks are not fsynced one by one: a writer syncs the file system in batches (see
``docs/repository.md``). A chunk linked into place but not yet synced survives the death of
its process (the page cache holds it) but not a power loss, after which it may remain as an
empty or short file under a valid name, and a later backup would count it as a dedup hit.

So every pending backup holds a durable marker ``locks/dirty-<boot id>-<backup id>`` from
``begin`` until a sync after its last chunk. A marker left from an earlier boot means the
machine went down while chunks were unsynced: ``recover`` then checks every chunk written
since the marker appeared and deletes damaged ones (they are read again by whoever needs
them). A marker of this boot whose writer is gone (a killed process) only needs a sync.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from mover.errors import MoverError
from mover.repo import locks
from mover.repo.atomic import fsync_dir

PREFIX = "dirty-"
_SLACK = 2.0  # seconds: file-system timestamps are coarser than the marker's creation


def boot_id() -> str:
    """This boot of the machine (Linux); "unknown" elsewhere, which never looks rebooted."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def mark(locks_dir: Path, backup_id: str) -> Path:
    """Create the durable marker of a pending backup."""
    path = locks_dir / f"{PREFIX}{boot_id()}-{backup_id}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(locks_dir)
    return path


def recover(locks_dir: Path, chunks_dir: Path, sync: Callable[[], None],
            check: Callable[[Path], bool]) -> list[str]:
    """Deal with the markers of writers that are gone; returns what was done, in words.
    ``check(path)`` tells whether a chunk file is intact."""
    current, done = boot_id(), list[str]()
    # One recovery at a time, and every writer waits for it (clean_stale runs before begin):
    # nobody may dedup against a chunk the check is about to delete.
    serial = locks.acquire(locks_dir / "recovery.lock")
    try:
        for marker in sorted(locks_dir.glob(f"{PREFIX}*")):
            _recover_one(marker, current, locks_dir, chunks_dir, sync, check, done)
    finally:
        if serial is not None:
            locks.release(serial)
    return done


def _recover_one(marker: Path, current: str, locks_dir: Path, chunks_dir: Path,
                 sync: Callable[[], None], check: Callable[[Path], bool],
                 done: list[str]) -> None:
    # dirty-<boot id>-<backup id>; backup ids have a fixed length, boot ids may not
    boot, _, backup_id = marker.name[len(PREFIX):].rpartition("-")
    boot, _, stamp = boot.rpartition("-")
    backup_id = f"{stamp}-{backup_id}"
    holder = locks.acquire(locks_dir / f"backup-{backup_id}.lock", wait=False)
    if holder is None:
        return  # its writer runs
    try:
        if boot == current:
            sync()  # a killed writer: its chunks are whole in the page cache
        else:
            since = marker.stat().st_mtime - _SLACK
            bad = [p for p in _written_since(chunks_dir, since) if not check(p)]
            for path in bad:
                path.unlink(missing_ok=True)
            done.append(f"the machine restarted during backup {backup_id}: checked the "
                        f"chunks written since, removed {len(bad)} damaged")
        marker.unlink(missing_ok=True)
    finally:
        locks.release(holder)


def _written_since(chunks_dir: Path, since: float) -> list[Path]:
    """Chunk files modified at or after ``since``; only directories changed since are read
    (adding an entry updates a directory's mtime)."""
    found: list[Path] = []
    for top in _dirs(chunks_dir):
        for leaf in _dirs(top):
            if leaf.stat().st_mtime >= since:
                found.extend(p for p in leaf.iterdir() if p.stat().st_mtime >= since)
    return found


def _dirs(path: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(path) if e.is_dir()]
    except FileNotFoundError:
        return []


def intact(read: Callable[[], object]) -> bool:
    try:
        read()
    except (MoverError, OSError):
        return False
    return True
