"""The backup snapshot: create, find, remove; and recognising mover's own leftovers.

mover's snapshots are named ``mover-<backup id>`` and carry ``TAG`` in their description.
Only snapshots with both marks are ever removed as orphans: a user's snapshot is never touched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from mover import clock
from mover.vsphere import tasks
from mover.vsphere.faults import ObjectGone
from mover.vsphere.session import Session
from mover.vsphere.vmomi import vim, vmodl

log = logging.getLogger(__name__)

PREFIX = "mover-"
TAG = "[mover backup snapshot]"


@dataclass(frozen=True, slots=True)
class SnapshotRef:
    ref: Any
    name: str
    description: str

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
        yield SnapshotRef(node.snapshot, node.name, node.description or "")
        stack.extend(reversed(node.childSnapshotList or []))


def create(session: Session, vm: Any, name: str, purpose: str, quiesce: bool) -> tuple[Any, float]:
    """Create a snapshot without memory; return it and how long the task ran (the stun)."""
    description = f"{purpose} {TAG} Safe to delete when no mover job runs."
    started = clock.monotonic()
    snapshot = tasks.run_task(
        session, lambda: vm.CreateSnapshot_Task(name=name, description=description,
                                                memory=False, quiesce=quiesce),
        f"creating snapshot {name!r} of VM {vm.name!r}")
    return snapshot, clock.monotonic() - started


def remove(session: Session, snapshot: Any, name: str, attempts: int = 6) -> float:
    """Remove a snapshot, consolidating its delta; retries while the VM is busy. Returns
    the seconds the removal took. ObjectGone if the snapshot (or its VM) no longer exists."""
    started = clock.monotonic()
    try:
        tasks.run_task(session, lambda: snapshot.RemoveSnapshot_Task(removeChildren=False,
                                                                    consolidate=True),
                       f"removing snapshot {name!r}", attempts)
    except vmodl.fault.ManagedObjectNotFound as exc:
        raise ObjectGone(f"snapshot {name!r} no longer exists (its VM was deleted or "
                         "unregistered)") from exc
    return clock.monotonic() - started


def remove_orphans(session: Session, vm: Any, spare: Callable[[str], bool]) -> list[str]:
    """Remove mover's snapshots left by earlier runs that crashed, except those ``spare``
    says are in use; return the names removed."""
    removed = []
    for snap in session.call(lambda: list(walk(vm))):
        if snap.is_movers and not spare(snap.name):
            log.warning("removing snapshot %r left by an earlier mover run", snap.name)
            remove(session, snap.ref, snap.name)
            removed.append(snap.name)
    return removed

def find(session: Session, vm: Any, moref: str, name: str) -> Any:
    """The snapshot ``moref`` of ``vm`` if it still exists with that name, else None."""
    for snap in session.call(lambda: list(walk(vm))):
        if snap.moref == moref and snap.name == name:
            return snap.ref
    return None


def user_snapshots(session: Session, vm: Any) -> list[str]:
    return [s.name for s in session.call(lambda: list(walk(vm))) if not s.is_movers]


def consolidation_needed(session: Session, vm: Any) -> bool:
    try:
        return bool(session.call(lambda: vm.runtime.consolidationNeeded))
    except (vim.fault.VimFault, AttributeError):  # older hosts do not report it
        return False
