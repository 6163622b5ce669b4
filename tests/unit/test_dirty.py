"""Power-loss safety: markers of pending backups, and the check after a restart."""

from __future__ import annotations

import os
import time
from pathlib import Path

import zstandard

from mover import chunk
from mover.repo import Repository
from mover.repo.dirty import PREFIX, boot_id

OTHER_BOOT = "00000000-0000-0000-0000-000000000000"


def store(repo: Repository, data: bytes) -> bytes:
    digest = chunk.digest(data)
    repo.chunks.put(digest, chunk.encode(data, zstandard.ZstdCompressor()))
    return digest


def markers(repo: Repository) -> list[str]:
    return sorted(p.name for p in (repo.path / "locks").glob(f"{PREFIX}*"))


def test_a_pending_backup_holds_a_marker_until_it_ends(tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo")
    for end in ("abort", "suspend"):
        backup_id = repo.new_backup_id()
        pending = repo.begin("vm", backup_id)
        assert markers(repo) == [f"{PREFIX}{boot_id()}-{backup_id}"]
        getattr(pending, end)()
        assert markers(repo) == []


def test_after_a_restart_chunks_written_since_the_marker_are_checked(tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo")
    old = store(repo, b"o" * 4096)                       # durable before the backup began
    past = time.time() - 60
    os.utime(repo.chunks.path(old), (past, past))
    marker = repo.path / "locks" / f"{PREFIX}{OTHER_BOOT}-{repo.new_backup_id()}"
    marker.touch()
    os.utime(marker, (past + 30, past + 30))
    whole = store(repo, b"w" * 4096)
    torn = store(repo, b"t" * 4096)
    repo.chunks.path(torn).write_bytes(b"")              # what the power loss left

    repo.clean_stale()
    assert repo.chunks.has(old) and repo.chunks.has(whole)
    assert not repo.chunks.has(torn)                     # a later backup stores it again
    assert markers(repo) == []


def test_a_killed_writer_of_this_boot_only_needs_a_sync(tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo")
    kept = store(repo, b"k" * 4096)
    (repo.path / "locks" / f"{PREFIX}{boot_id()}-{repo.new_backup_id()}").touch()
    repo.clean_stale()
    assert repo.chunks.has(kept) and markers(repo) == []


def test_a_running_writers_marker_is_left_alone(tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo")
    backup_id = repo.new_backup_id()
    pending = repo.begin("vm", backup_id)
    repo.clean_stale()
    assert markers(repo) == [f"{PREFIX}{boot_id()}-{backup_id}"]
    pending.abort()


def test_a_restarts_check_waits_for_nobody_and_blocks_writers(tmp_path: Path) -> None:
    """While one process checks chunks after a restart, another's clean_stale waits."""
    import fcntl
    import threading

    repo = Repository.open(tmp_path / "repo")
    lock = os.open(repo.path / "locks" / "recovery.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)                     # a recovery in progress
    finished = threading.Event()
    waiter = threading.Thread(target=lambda: (repo.clean_stale(), finished.set()))
    waiter.start()
    assert not finished.wait(0.5)
    fcntl.flock(lock, fcntl.LOCK_UN)
    os.close(lock)
    assert finished.wait(5)
    waiter.join()
