"""The backup snapshot's life, owned by the backup run as one async context manager.

``async with BackupSnapshot(...) as snap`` creates the snapshot (or takes over the one of the
interrupted backup being resumed, if it still exists); ``await snap.verify()`` proves, after
the last read, that it still exists (same MoRef, same name); leaving the block removes it,
on every path the process survives (errors, SIGTERM/SIGINT), and reports how long the stun
and the removal took and whether vSphere says the VM needs consolidation.

Why ``verify``: if somebody removes the snapshot while we read, the host consolidates its
delta into the base disk we are reading, so what we read after that is the disk of a later
moment (or a mix). Such a backup must never be committed (``snapshots.SnapshotVanished``).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from mover.aio import finish
from mover.errors import MoverError
from mover.jobs.control import ControlPlane
from mover.vsphere import snapshots
from mover.vsphere.faults import ObjectGone
from mover.vsphere.inventory import VMFacts
from mover.vsphere.session import Session
from mover.vsphere.snapshots import SnapshotRef


class BackupSnapshot:
    """``info`` (the result's ``snapshot`` dict) and ``warnings`` are filled in as the
    snapshot lives; ``same`` says whether it is the interrupted backup's own; ``gone`` that
    it was found missing (by ``verify`` or by the removal)."""

    def __init__(self, control: ControlPlane, session: Session, vm: VMFacts, name: str,
                 purpose: str, owner_tag: str, quiesce: bool, reuse_moref: str | None,
                 info: dict[str, Any], warnings: list[str],
                 note: Callable[[str], None]) -> None:
        self._control = control
        self._session = session
        self._vm = vm
        self.name = name
        self._purpose = purpose
        self._owner_tag = owner_tag
        self._quiesce = quiesce
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
        # The control thread finishes creating the snapshot even if we are cancelled
        # meanwhile (SIGTERM): then it is removed at once, or it would be left behind.
        snapshot, seconds = await finish(
            self._control.run(snapshots.create, self._session, self._vm.ref, self.name,
                              self._purpose, self._quiesce, self._owner_tag),
            undo=lambda made: self._control.run(snapshots.remove, self._session,
                                                made[0].ref, self.name))
        self.snapshot = snapshot
        self.info.update(name=self.name, moref=snapshot.moref, create_seconds=seconds)
        self._note(f"snapshot {self.name!r} created in {seconds:.2f} s")
        return self

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
                                                     self.snapshot.ref, self.name))
        except ObjectGone as error:  # removed meanwhile, or the VM is gone: nothing to do
            self.gone = True
            self.info["removed"] = True
            self.warnings.append(str(error))
            return
        except MoverError as error:
            self.info["removed"] = False
            self.warnings.append(f"snapshot {self.name!r} was not removed: {error}; remove "
                                 "it by hand or let the next mover run remove it")
            return
        self.info.update(removed=True, remove_seconds=seconds)
        self._note(f"snapshot {self.name!r} removed in {seconds:.2f} s")
        if await self._control.run(snapshots.consolidation_needed, self._session,
                                   self._vm.ref):
            self.warnings.append(
                f"vSphere reports that VM {self._vm.name!r} needs disk consolidation")
