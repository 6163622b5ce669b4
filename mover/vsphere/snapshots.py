"""The backup snapshot: create, find, remove; and listing mover's own snapshots.

mover's snapshots are named ``mover-<backup id>`` and carry ``TAG`` in their description
(and, since ownership tags, ``mover.ownership``'s tag). Only snapshots with both marks are
ever considered as orphans: a user's snapshot is never touched. Which of mover's snapshots
are orphans is the coordinator's decision (``mover.jobs.orphans``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mover import clock
from mover.errors import VSphereError
from mover.vsphere import tasks
from mover.vsphere.faults import ObjectGone
from mover.vsphere.session import Session
from mover.vsphere.vmomi import vim, vmodl

log = logging.getLogger(__name__)

PREFIX = "mover-"
TAG = "[mover backup snapshot]"


class SnapshotVanished(VSphereError):
    """The backup snapshot disappeared before the copy ended: what was read after that may
    be a later state of the disk. Nothing may be committed."""


class QuiesceFailed(VSphereError):
    """VMware Tools could not quiesce the guest (``ApplicationQuiesceFault``: a VSS writer
    failed, a file system freeze timed out). Often transient; no snapshot was left."""


@dataclass(frozen=True, slots=True)
class SnapshotRef:
    """One snapshot of a VM. ``ref`` is the pyvmomi object: outside ``mover.vsphere`` it is
    only handed back to functions of this package."""

    ref: Any
    name: str
    description: str
    created: datetime | None = None     # the server's createTime (None: not read)

    @property
    def moref(self) -> str:
        return str(self.ref._moId)

    @property
    def is_movers(self) -> bool:
        return self.name.startswith(PREFIX) and TAG in self.description


def walk(vm: Any) -> Iterator[SnapshotRef]:
    """Every snapshot of ``vm``, parents before children."""
    info = vm.snapshot
    stack = list(reversed(info.rootSnapshotList)) if info else []
    while stack:
        node = stack.pop()
        yield SnapshotRef(node.snapshot, node.name, node.description or "", node.createTime)
        stack.extend(reversed(node.childSnapshotList or []))


def create(session: Session, vm: Any, name: str, purpose: str, quiesce: bool,
           owner_tag: str = "", busy_wait: float = tasks.BUSY_WAIT) -> tuple[SnapshotRef, float]:
    """Create a snapshot without memory; return it and how long the task ran (the stun).
    ``owner_tag`` (``mover.ownership.Owner.tag``) ends the description. QuiesceFailed when
    the guest could not be quiesced; waits up to ``busy_wait`` s for a busy VM."""
    description = f"{purpose} {TAG} Safe to delete when no mover job runs. {owner_tag}".strip()
    started = clock.monotonic()
    what = f"creating snapshot {name!r} of VM {vm.name!r}"
    try:
        snapshot = tasks.run_task(
            session, lambda: vm.CreateSnapshot_Task(name=name, description=description,
                                                    memory=False, quiesce=quiesce),
            what, busy_wait)
    except VSphereError as exc:
        if quiesce and isinstance(exc.__cause__, vim.fault.ApplicationQuiesceFault):
            raise QuiesceFailed(f"{what}: VMware Tools could not quiesce the guest "
                                f"({tasks.fault_message(exc.__cause__)})") from exc.__cause__
        raise
    return SnapshotRef(snapshot, name, description), clock.monotonic() - started


def remove(session: Session, snapshot: Any, name: str,
           busy_wait: float = tasks.BUSY_WAIT) -> float:
    """Remove a snapshot, consolidating its delta; waits up to ``busy_wait`` s while the VM
    is busy. Returns the seconds the removal took. ObjectGone if the snapshot (or its VM)
    no longer exists."""
    started = clock.monotonic()
    try:
        tasks.run_task(session, lambda: snapshot.RemoveSnapshot_Task(removeChildren=False,
                                                                    consolidate=True),
                       f"removing snapshot {name!r}", busy_wait)
    except vmodl.fault.ManagedObjectNotFound as exc:
        raise ObjectGone(f"snapshot {name!r} no longer exists (somebody removed it, or its "
                         "VM was deleted or unregistered)") from exc
    return clock.monotonic() - started


def movers(session: Session, vm: Any) -> tuple[list[SnapshotRef], datetime]:
    """mover's snapshots of ``vm`` (both marks), and the server's time now (to age them by
    the server's clock, as their createTime is)."""
    found = [s for s in session.call(lambda: list(walk(vm))) if s.is_movers]
    if not found:  # nothing to age: spare the round trip
        return found, clock.now()
    return found, session.call(lambda: session.service_instance.CurrentTime())


def find(session: Session, vm: Any, moref: str, name: str) -> SnapshotRef | None:
    """The snapshot ``moref`` of ``vm`` if it still exists with that name, else None."""
    for snap in session.call(lambda: list(walk(vm))):
        if snap.moref == moref and snap.name == name:
            return snap
    return None


def user_snapshots(session: Session, vm: Any) -> list[str]:
    return [s.name for s in session.call(lambda: list(walk(vm))) if not s.is_movers]


def consolidate(session: Session, vm: Any, busy_wait: float = tasks.BUSY_WAIT) -> float:
    """Run ``ConsolidateVMDisks_Task``: merge the delta disks a removal left behind into
    their parents (the VM otherwise keeps running on them and its chain grows). Returns the
    seconds it took."""
    started = clock.monotonic()
    tasks.run_task(session, lambda: vm.ConsolidateVMDisks_Task(),
                   f"consolidating the disks of VM {vm.name!r}", busy_wait)
    return clock.monotonic() - started


def consolidation_needed(session: Session, vm: Any) -> bool:
    try:
        return bool(session.call(lambda: vm.runtime.consolidationNeeded))
    except (vim.fault.VimFault, AttributeError):  # older hosts do not report it
        return False
