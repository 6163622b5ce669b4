"""Planning one disk of a backup before any data moves: full or incremental, the changed
areas, the reads (fewer when resuming), and the index the copy starts from."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mover import canary
from mover.changeid import ALL_ALLOCATED
from mover.errors import IntegrityError, VSphereError
from mover.extents import Extent, align, block_count, blocks
from mover.fetchplan import MIN_PIECE, Fetch, plan_fetches
from mover.index import FixedIndex
from mover.jobs.control import ControlPlane
from mover.jobs.modes import Decision, decide
from mover.jobs.resume import Checkpoint, apply_journal, resume_since
from mover.repo import BackupRecord, Repository
from mover.repo.pending import PendingBackup
from mover.vsphere import cbt
from mover.vsphere.disks import DiskInfo
from mover.vsphere.faults import ObjectGone
from mover.vsphere.session import Session

log = logging.getLogger(__name__)


@dataclass(slots=True)
class DiskPlan:
    """What one disk's copy will do."""

    disk: DiskInfo
    decision: Decision
    areas: list[Extent]         # what CBT reported for the whole backup
    reads: list[Fetch]          # what this run reads (less, when resuming)
    index: FixedIndex
    resumed_blocks: int = 0
    note: str = ""              # how this run differs from the plan (a resume)
    # The CBT canary (mover.jobs.canary): blocks CBT calls unchanged -> the parent's digest.
    canary: dict[int, bytes | None] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        return f"{self.decision.reason}; {self.note}" if self.note else self.decision.reason


@dataclass(frozen=True, slots=True)
class Planner:
    """Plans the disks of one backup snapshot. ``resuming`` is the checkpoint of the
    interrupted backup this run completes (None for a fresh one); ``same_snapshot`` says
    whether the snapshot is that backup's own; ``read_all`` makes every fresh plan a full
    that reads every byte without asking CBT."""

    repo: Repository
    control: ControlPlane
    session: Session
    vm: Any
    snapshot: Any
    force_full: bool
    max_read: int
    note: Callable[[str], None]
    resuming: Checkpoint | None = None
    same_snapshot: bool = False
    read_all: bool = False
    backup_id: str = ""
    canary_blocks: int = 0       # per incremental disk; 0: no canary

    async def plan(self, disk: DiskInfo, parent: BackupRecord | None,
                   pending: PendingBackup) -> DiskPlan:
        block_size = self.repo.config.block_size
        saved = self.resuming.disks.get(disk.key) if self.resuming else None
        why_not = saved.matches(disk, block_size) if saved else None
        again: str | None = None
        if saved is not None and why_not is None:
            again, why_not = resume_since(saved, disk, self.same_snapshot)
        if saved is None or why_not is not None:
            if saved is not None:
                self.note(f"disk {disk.key} starts clean: {why_not}")
            await asyncio.to_thread(pending.journal(disk.key).clear)
            return await self._fresh(disk, parent)
        assert self.resuming is not None
        decision = Decision(saved.mode, saved.reason, saved.since,
                            parent.disk(disk.key) if parent and saved.mode != "full" else None)
        areas = await self._query(disk, decision.since)
        index = await self._base_index(disk, decision, parent)
        expected = self._canary(disk, decision, areas, index)   # before the journal is applied
        try:
            done, count = await asyncio.to_thread(apply_journal, pending, disk.key, index,
                                                  self.repo.chunks)
        except IntegrityError as exc:  # a journal only saves work: start the disk clean
            self.note(f"disk {disk.key} starts clean: its journal is damaged ({exc})")
            await asyncio.to_thread(pending.journal(disk.key).clear)
            return await self._fresh(disk, parent)
        changed: list[Extent] = []
        if again is not None:
            # Blocks changed since the interrupted snapshot are read again, and the journal
            # must forget them now: the checkpoint is about to name this snapshot, and a
            # later resume from it would trust their old digests. They are read even if
            # they are in no area now (a full's "*" omits a block trimmed since): the index
            # holds their journaled digests until they are.
            changed = align(await self._query(disk, again), block_size, disk.capacity)
            for extent in changed:
                done[extent.start // block_size:-(-extent.end // block_size)] = bytes(
                    len(blocks(extent, block_size)))
            count = sum(1 for d in done if d)
            await asyncio.to_thread(pending.rewrite_journal, disk.key, index, done,
                                    self.repo.chunks.sync)
        return DiskPlan(disk, decision, areas,
                        self._fetches(disk, decision, [*areas, *changed], done),
                        index, count, f"resumed backup {self.resuming.backup_id} with {count} "
                        "blocks already stored", expected)

    async def _fresh(self, disk: DiskInfo, parent: BackupRecord | None) -> DiskPlan:
        block_size = self.repo.config.block_size
        if self.read_all:
            decision = Decision("full", "every byte is read (--read-all: CBT's allocation "
                                "map is not asked)", None, None)
        else:
            decision = decide(disk, parent, self.force_full, block_size)
        areas, decision = await self._areas(disk, decision)
        index = await self._base_index(disk, decision, parent)
        return DiskPlan(disk, decision, areas, self._fetches(disk, decision, areas), index,
                        canary=self._canary(disk, decision, areas, index))

    def _fetches(self, disk: DiskInfo, decision: Decision, areas: list[Extent],
                 done: bytes | bytearray = b"") -> list[Fetch]:
        """An incremental fetches partly changed blocks only where they changed and takes
        the rest from the parent (every block has a base there: its chunk or zeros); a
        full reads whole blocks."""
        incremental = decision.mode == "incremental"
        return plan_fetches(areas, self.repo.config.block_size, disk.capacity, self.max_read,
                            MIN_PIECE if incremental else None,
                            (lambda block: True) if incremental else None, done)

    def _canary(self, disk: DiskInfo, decision: Decision, areas: list[Extent],
                parent: FixedIndex) -> dict[int, bytes | None]:
        """The canary's sample of an incremental, with the parent's digest of each block."""
        if decision.mode != "incremental" or self.canary_blocks <= 0:
            return {}
        block_size = self.repo.config.block_size
        runs = canary.unchanged_runs(areas, block_size, block_count(disk.capacity, block_size))
        picked = canary.sample(canary.seed(self.backup_id, disk.key), runs, self.canary_blocks)
        return {block: parent.get(block) for block in picked}

    async def _base_index(self, disk: DiskInfo, decision: Decision,
                          parent: BackupRecord | None) -> FixedIndex:
        """An incremental starts from its parent's index (synthetic full), a full from
        all-zero blocks."""
        if decision.mode == "incremental" and parent is not None:
            return await asyncio.to_thread(self.repo.read_index, parent, disk.key)
        return FixedIndex(disk.capacity, self.repo.config.block_size)

    async def _areas(self, disk: DiskInfo, decision: Decision) -> tuple[list[Extent], Decision]:
        """The areas to read. An incremental whose change ID the host rejects becomes a
        full; a full whose allocation query (``"*"``) fails reads the whole disk (zero
        blocks are still found and not stored), saying why."""
        if decision.mode == "incremental":
            try:
                return await self._query(disk, decision.since), decision
            except cbt.ChangeIdRejected as exc:
                log.warning("%s", exc)
                decision = Decision("full", f"the host rejected the previous change ID "
                                    f"({exc})", ALL_ALLOCATED, None)
        if decision.since != ALL_ALLOCATED:
            return await self._query(disk, decision.since), decision
        try:
            return await self._query(disk, ALL_ALLOCATED), decision
        except VSphereError as exc:
            if isinstance(exc, ObjectGone):
                raise
            log.warning("%s", exc)
            return [Extent(0, disk.capacity)], Decision(
                "full", f"{decision.reason}; the host refused the allocation query (\"*\": "
                f"{exc}), so every byte is read", None, None)

    async def _query(self, disk: DiskInfo, since: str | None) -> list[Extent]:
        """Changed areas since ``since``; None (no CBT on the disk) means the whole disk."""
        if since is None:
            return [Extent(0, disk.capacity)]
        return await self.control.run(cbt.changed_areas, self.session, self.vm, self.snapshot,
                                      disk.key, disk.capacity, since)
