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
           owner_tag: str = "") -> tuple[SnapshotRef, float]:
    """Create a snapshot without memory; return it and how long the task ran (the stun).
    ``owner_tag`` (``mover.ownership.Owner.tag``) ends the description."""
    description = f"{purpose} {TAG} Safe to delete when no mover job runs. {owner_tag}".strip()
    started = clock.monotonic()
    snapshot = tasks.run_task(
        session, lambda: vm.CreateSnapshot_Task(name=name, description=description,
                                                memory=False, quiesce=quiesce),
        f"creating snapshot {name!r} of VM {vm.name!r}")
    return SnapshotRef(snapshot, name, description), clock.monotonic() - started


def remove(session: Session, snapshot: Any, name: str, attempts: int = 6) -> float:
    """Remove a snapshot, consolidating its delta; retries while the VM is busy. Returns
    the seconds the removal took. ObjectGone if the snapshot (or its VM) no longer exists."""
    started = clock.monotonic()
    try:
        tasks.run_task(session, lambda: snapshot.RemoveSnapshot_Task(removeChildren=False,
                                                                    consolidate=True),
                       f"removing snapshot {name!r}", attempts)
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


def consolidation_needed(session: Session, vm: Any) -> bool:
    try:
        return bool(session.call(lambda: vm.runtime.consolidationNeeded))
    except (vim.fault.VimFault, AttributeError):  # older hosts do not report it
        return False
