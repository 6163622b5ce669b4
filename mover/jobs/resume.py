"""Resuming an interrupted backup from its checkpoint and block journals.

Every run writes ``checkpoint.json`` into its pending directory before it copies (the
snapshot, the parent, and per disk the mode and the change ID the copy is relative to), and
journals each block once its chunk is stored. A later run of the same VM resumes the newest
such backup when the disk is the same (key, disk UUID, capacity, block size) and the parent
is still the latest backup:

* the interrupted run's snapshot still exists (the process was killed): reuse it and read
  the planned blocks that are not journaled;
* it is gone (the run stopped cleanly and removed it): take a new snapshot and read the
  planned blocks that are not journaled plus every block changed since the interrupted
  snapshot (a change query relative to its change ID, which must be of the same CBT epoch).

Otherwise the run starts clean and the result says why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mover.changeid import incremental_base
from mover.extents import block_count
from mover.index import FixedIndex
from mover.jobs.modes import Decision
from mover.repo import PackedChunks
from mover.repo.pending import PendingBackup
from mover.vsphere.disks import DiskInfo

FORMAT = 1


@dataclass(frozen=True, slots=True)
class DiskCheckpoint:
    key: int
    uuid: str
    capacity: int
    block_size: int
    change_id: str          # of the snapshot the journaled blocks were read from
    mode: str
    reason: str
    since: str | None       # what the changed areas are relative to ("*", a change ID, None)

    def matches(self, disk: DiskInfo, block_size: int) -> str | None:
        """None if the disk is the one checkpointed; else why not."""
        if (self.uuid, self.capacity) != (disk.uuid, disk.capacity):
            return f"disk {disk.key} changed (UUID or capacity) since the interrupted backup"
        if self.block_size != block_size:
            return "the repository's block size differs from the interrupted backup's"
        return None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    backup_id: str
    created: str
    snapshot_name: str
    snapshot_moref: str
    parent: str | None
    disks: dict[int, DiskCheckpoint]

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "backup_id": self.backup_id, "created": self.created,
                "snapshot": {"name": self.snapshot_name, "moref": self.snapshot_moref},
                "parent": self.parent, "disks": [asdict(d) for d in self.disks.values()]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Checkpoint | None:
        """None for a checkpoint of another format or a damaged one: start clean."""
        try:
            if data["format"] != FORMAT:
                return None
            disks = {int(d["key"]): DiskCheckpoint(**d) for d in data["disks"]}
            return cls(str(data["backup_id"]), str(data["created"]),
                       str(data["snapshot"]["name"]), str(data["snapshot"]["moref"]),
                       data["parent"], disks)
        except (KeyError, TypeError, ValueError):
            return None


def disk_checkpoint(disk: DiskInfo, block_size: int, decision: Decision) -> DiskCheckpoint:
    return DiskCheckpoint(disk.key, disk.uuid, disk.capacity, block_size, disk.change_id,
                          decision.mode, decision.reason, decision.since)


def resume_since(saved: DiskCheckpoint, disk: DiskInfo, same_snapshot: bool) -> tuple[
        str | None, str | None]:
    """For a resume of ``saved`` onto ``disk`` (of the current snapshot): the change ID whose
    changes must be re-read (None: none, the snapshot is the same) and why a resume is
    impossible (None: it is possible)."""
    if same_snapshot:
        return None, None
    if saved.since is None:
        return None, "the disk has no CBT, so changes since the interruption are unknown"
    sound, why = incremental_base(saved.change_id, disk.change_id)
    if not sound:
        return None, f"cannot tell what changed since the interrupted backup: {why}"
    return saved.change_id, None


def apply_journal(pending: PendingBackup, key: int, index: FixedIndex,
                  chunks: PackedChunks) -> tuple[bytearray, int]:
    """Put the journaled blocks of disk ``key`` into ``index``. Returns the done-map (one
    byte per block, non-zero = done) and how many blocks it marks.

    Every journal record names a chunk that was durable and indexed when the record was
    written. A block whose chunk the repository does not know now (its pack index was
    found damaged) is read again rather than trusted."""
    state = bytearray(block_count(index.capacity, index.block_size))
    for block, digest in pending.journal(key).read():
        if block < len(state):
            index.set(block, digest)
            state[block] = 1
    for block in (b for b, s in enumerate(state) if s):
        digest = index.get(block)
        if digest is not None and not chunks.has(digest):
            state[block] = 0
    return state, sum(1 for s in state if s)
