"""Backups made without the lab, for restore and serve tests: a real directory repository
holding disks whose every byte the test knows."""

from __future__ import annotations

from typing import Any

from mover.index import FixedIndex
from mover.repo import BackupRecord, DiskRecord, Repository

KEY = 2000
VM = "vm-uuid-1"


def write_backup(repo: Repository, backup_id: str, image: bytes, block_size: int,
                 vm: str = VM, disk_uuid: str = "disk-uuid",
                 vm_config: dict[str, Any] | None = None) -> None:
    """Commit a backup of disk ``KEY`` holding ``image``, as the pipeline stores one:
    chunks, sync, index, record."""
    pending = repo.begin(vm, backup_id)
    index = FixedIndex(len(image), block_size)
    for block in range(len(index)):
        data = image[block * block_size : (block + 1) * block_size]
        if data.count(0) == len(data):
            continue
        digest = repo.chunks.digest(data)
        if not repo.chunks.has(digest):
            repo.chunks.put(digest, data)
        index.set(block, digest)
    repo.chunks.sync()
    pending.write_index(KEY, index)
    pending.commit(BackupRecord(
        id=backup_id, vm_name="web", vm_instance_uuid=vm, vm_moref="vm-1",
        created="2026-12-01T00:00:00Z", finished="2026-12-01T00:00:00Z", parent=None,
        snapshot={}, disks=[DiskRecord(
            key=KEY, label="d", uuid=disk_uuid, capacity=len(image), file="[ds] f",
            change_id="", mode="full", reason="r", block_size=block_size, changed_bytes=0,
            bytes_read=0, bytes_stored=0, blocks=len(index), zero_blocks=0, new_chunks=0,
            dedup_chunks=0, seconds=0.0)], vm_config=dict(vm_config or {})))
