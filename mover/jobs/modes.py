"""Full or incremental, per disk: the decision and the reason a user reads in the result."""

from __future__ import annotations

from dataclasses import dataclass

from mover.changeid import ALL_ALLOCATED, incremental_base
from mover.repo import BackupRecord, DiskRecord
from mover.vsphere.disks import DiskInfo


@dataclass(frozen=True, slots=True)
class Decision:
    mode: str                 # "full" or "incremental"
    reason: str
    since: str | None         # the change ID to query from; "*" for a full; None: read all
    parent: DiskRecord | None


def decide(disk: DiskInfo, parent: BackupRecord | None, force_full: bool,
           block_size: int) -> Decision:
    """An incremental needs a committed backup of the same disk (key, UUID, capacity, block
    size) whose change ID is of the disk's current CBT epoch; anything else is a full."""
    since_all = ALL_ALLOCATED if disk.change_id else None
    if force_full:
        return Decision("full", "a full backup was asked for (--full)", since_all, None)
    if parent is None:
        return Decision("full", "no previous backup of this VM in the repository",
                        since_all, None)
    previous = next((d for d in parent.disks if d.key == disk.key), None)
    if previous is None:
        return Decision("full", f"disk {disk.key} is new since backup {parent.id}",
                        since_all, None)
    if previous.uuid != disk.uuid:
        return Decision("full", f"disk {disk.key} was replaced (disk UUID changed) since "
                        f"backup {parent.id}", since_all, None)
    if previous.capacity != disk.capacity:
        return Decision("full", f"disk {disk.key} capacity changed from {previous.capacity} "
                        f"to {disk.capacity} bytes since backup {parent.id}", since_all, None)
    if previous.block_size != block_size:
        return Decision("full", "the repository's block size differs from the previous "
                        "backup's", since_all, None)
    sound, why = incremental_base(previous.change_id, disk.change_id)
    if not sound:
        return Decision("full", why, since_all, None)
    return Decision("incremental", f"{why} (backup {parent.id})", previous.change_id, previous)
