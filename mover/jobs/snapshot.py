"""The backup snapshot's life, owned by the backup run as one async context manager.

``async with BackupSnapshot(...) as snap`` creates the snapshot (or takes over the one of the
interrupted backup being resumed, if it still exists); ``await snap.verify()`` proves, after
the last read, that it still exists (same MoRef, same name); leaving the block removes it,
on every path the process survives (errors, SIGTERM/SIGINT), and reports how long the stun
and the removal took and whether vSphere says the VM needs consolidation.

How it is taken and left follows ``SnapshotPolicy``: a quiesced snapshot is tried
``QUIESCE_ATTEMPTS`` times (as Bareos does: a VSS writer or a freeze often fails once), then
either fails the backup or, by option, falls back to a crash-consistent snapshot with a
warning; a VM busy with another task is waited for up to ``busy_wait`` seconds; a VM that
vSphere says needs consolidation after the removal is consolidated (by option, default on).

Why ``verify``: if somebody removes the snapshot while we read, the host consolidates its
delta into the base disk we are reading, so what we read after that is the disk of a later
moment (or a mix). Such a backup must never be committed (``snapshots.SnapshotVanished``).
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mover.aio import finish
from mover.errors import MoverError
from mover.jobs.control import ControlPlane
from mover.jobs.settings import BackupSettings
from mover.vsphere import snapshots
from mover.vsphere.faults import ObjectGone
from mover.vsphere.inventory import VMFacts
from mover.vsphere.session import Session
from mover.vsphere.snapshots import QuiesceFailed, SnapshotRef

#: quiesced snapshot attempts before giving up (or falling back), and the pause between them
QUIESCE_ATTEMPTS = 3
QUIESCE_RETRY_DELAY = 2.0


@dataclass(frozen=True, slots=True)
class SnapshotPolicy:
    quiesce: bool = False
    quiesce_fallback: bool = False   # after QUIESCE_ATTEMPTS failures: crash-consistent
    busy_wait: float = 300.0         # seconds to wait for a VM busy with another task
    consolidate: bool = True         # ConsolidateVMDisks_Task when vSphere says it is needed

    @classmethod
    def of(cls, settings: BackupSettings) -> SnapshotPolicy:
        return cls(settings.quiesce, settings.quiesce_fallback, settings.busy_wait,
                   settings.consolidate)


class BackupSnapshot:
    """``info`` (the result's ``snapshot`` dict) and ``warnings`` are filled in as the
    snapshot lives; ``same`` says whether it is the interrupted backup's own; ``gone`` that
    it was found missing (by ``verify`` or by the removal)."""

    def __init__(self, control: ControlPlane, session: Session, vm: VMFacts, name: str,
                 purpose: str, owner_tag: str, policy: SnapshotPolicy, reuse_moref: str | None,
                 info: dict[str, Any], warnings: list[str],
                 note: Callable[[str], None]) -> None:
        self._control = control
        self._session = session
        self._vm = vm
        self.name = name
        self._purpose = purpose
        self._owner_tag = owner_tag
        self._policy = policy
        self._reuse = reuse_moref
        self.info = info
        self.warnings = warnings
        self._note = note
        self.snapshot: SnapshotRef | None = None
        self.same = False
        self.gone = False

    @property
    def ref(self) -> Any:
        """The snapshot for ``mover.vsphere`` calls (opaque here)."""
        assert self.snapshot is not None, "use BackupSnapshot as an async context manager"
        return self.snapshot.ref

    @property
    def moref(self) -> str:
        assert self.snapshot is not None, "use BackupSnapshot as an async context manager"
        return self.snapshot.moref

    async def __aenter__(self) -> BackupSnapshot:
        if self._reuse is not None:
            existing = await self._control.run(snapshots.find, self._session, self._vm.ref,
                                               self._reuse, self.name)
            if existing is not None:
                self.snapshot, self.same = existing, True
                self.info.update(name=self.name, moref=existing.moref, create_seconds=0.0)
                self._note(f"resuming from snapshot {self.name!r}")
                return self
        quiesce = self._policy.quiesce
        for attempt in range(1, QUIESCE_ATTEMPTS + 1):
            try:
                snapshot, seconds = await self._create(quiesce)
                break
            except QuiesceFailed as error:
                if attempt < QUIESCE_ATTEMPTS:
                    self._note(f"{error}; trying again ({attempt} of {QUIESCE_ATTEMPTS})")
                    await asyncio.sleep(QUIESCE_RETRY_DELAY)
                    continue
                if not self._policy.quiesce_fallback:
                    raise QuiesceFailed(
                        f"{error}, {QUIESCE_ATTEMPTS} times: fix VMware Tools or the failing "
                        "VSS writer in the guest, or give --quiesce-fallback to take a "
                        "crash-consistent snapshot instead", vm=self._vm.name,
                        attempts=QUIESCE_ATTEMPTS) from error
                warning = (f"{error}, {QUIESCE_ATTEMPTS} times: this backup is "
                           "crash-consistent, not quiesced (--quiesce-fallback)")
                self.warnings.append(warning)
                self._note(warning)
                quiesce = False
                snapshot, seconds = await self._create(quiesce)
        self.snapshot = snapshot
        self.info.update(name=self.name, moref=snapshot.moref, create_seconds=seconds,
                         quiesced=quiesce)
        self._note(f"snapshot {self.name!r} created in {seconds:.2f} s")
        return self

    async def _create(self, quiesce: bool) -> tuple[SnapshotRef, float]:
        # The control thread finishes creating the snapshot even if we are cancelled
        # meanwhile (SIGTERM): then it is removed at once, or it would be left behind.
        result: tuple[SnapshotRef, float] = await finish(
            self._control.run(snapshots.create, self._session, self._vm.ref, self.name,
                              self._purpose, quiesce, self._owner_tag, self._policy.busy_wait),
            undo=lambda made: self._control.run(snapshots.remove, self._session,
                                                made[0].ref, self.name,
                                                self._policy.busy_wait))
        return result

    async def verify(self) -> None:
        """Raise ``snapshots.SnapshotVanished`` unless the snapshot still exists with its
        MoRef and name. Call it after the last read and before the commit."""
        found = await self._control.run(snapshots.find, self._session, self._vm.ref,
                                        self.moref, self.name)
        if found is None:
            self.gone = True
            raise snapshots.SnapshotVanished(
                f"snapshot {self.name!r} ({self.moref}) of VM {self._vm.name!r} disappeared "
                "before the copy ended (removed by somebody else?): its consolidation may "
                "have rewritten the base disk while mover read it, so nothing was committed "
                "and the partial backup was discarded; run the backup again")

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: types.TracebackType | None) -> None:
        if self.snapshot is None or self.gone:
            return
        try:
            seconds = await finish(self._control.run(snapshots.remove, self._session,
                                                     self.snapshot.ref, self.name,
                                                     self._policy.busy_wait))
        except ObjectGone as error:  # removed meanwhile, or the VM is gone: nothing to do
            self.gone = True
            self.info["removed"] = True
            self.warnings.append(str(error))
            return
        except MoverError as error:
            self.info["removed"] = False
            self.warnings.append(f"snapshot {self.name!r} was not removed: {error}; remove "
                                 "it by hand or let the next mover run remove it")
            await self._consolidate()   # a failed removal may have left its delta behind
            return
        self.info.update(removed=True, remove_seconds=seconds)
        self._note(f"snapshot {self.name!r} removed in {seconds:.2f} s")
        await self._consolidate()

    async def _consolidate(self) -> None:
        """A removal that could not merge its delta (a lock another tool held, a full
        datastore) leaves the VM running on it: ``runtime.consolidationNeeded``. Left so,
        the chain grows with every backup and the next snapshot stacks on a delta that
        ``/folder`` cannot read; so consolidate now (unless --no-consolidate)."""
        needed = await finish(self._control.run(snapshots.consolidation_needed,
                                                self._session, self._vm.ref))
        if not needed:
            return
        if not self._policy.consolidate:
            self.warnings.append(
                f"vSphere reports that VM {self._vm.name!r} needs disk consolidation; "
                "consolidate it (Snapshots > Consolidate) or run without --no-consolidate")
            return
        try:
            seconds = await finish(self._control.run(snapshots.consolidate, self._session,
                                                     self._vm.ref, self._policy.busy_wait))
        except MoverError as error:
            self.info["consolidated"] = False
            self.warnings.append(f"VM {self._vm.name!r} needs disk consolidation and it "
                                 f"failed: {error}; consolidate it in vSphere")
            return
        self.info.update(consolidated=True, consolidate_seconds=seconds)
        self._note(f"consolidated the disks of VM {self._vm.name!r} in {seconds:.2f} s "
                   "(vSphere reported consolidation needed)")
