"""Changed Block Tracking: turning it on, and asking which areas of a disk changed.

``changed_areas`` pages ``QueryChangedDiskAreas`` over the whole disk. A host answers for
``[reply.startOffset, reply.startOffset + reply.length)`` only, and stops near 2,000 areas
per reply, so one call is never enough (the bug that cost Bareos users their data). Each
reply is checked: it must start where we asked, cover a non-empty window, and keep its
areas inside that window; the windows must add up to exactly the capacity.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mover.errors import UnsupportedVMError, VSphereError
from mover.extents import Extent, normalize
from mover.vsphere import inventory, snapshots, tasks
from mover.vsphere.privileges import permission_denied
from mover.vsphere.session import Session
from mover.vsphere.vmomi import vim, vmodl

log = logging.getLogger(__name__)

MIN_HARDWARE_VERSION = 7


class ChangeIdRejected(VSphereError):
    """The host no longer knows the previous change ID (CBT was reset): take a full."""


@dataclass(frozen=True, slots=True)
class Reply:
    start: int
    length: int
    areas: list[tuple[int, int]]


def collect(query: Callable[[int], Reply], capacity: int, what: str) -> list[Extent]:
    """Page ``query(start_offset)`` from 0 to ``capacity``; validated, normalized areas."""
    found: list[Extent] = []
    offset = 0
    pages = 0
    while offset < capacity:
        reply = query(offset)
        pages += 1
        if reply.start != offset:
            raise VSphereError(f"{what}: asked for changes from offset {offset}, the host "
                               f"answered from {reply.start}; refusing a possibly wrong backup")
        if reply.length <= 0:
            raise VSphereError(f"{what}: the host returned an empty window at offset {offset}; "
                               "refusing to guess the rest of the disk")
        window_end = reply.start + reply.length
        if window_end > capacity:
            raise VSphereError(f"{what}: the host's window ends at {window_end}, past the "
                               f"capacity {capacity}")
        for start, length in reply.areas:
            if length <= 0:
                continue
            if start < reply.start or start + length > window_end:
                raise VSphereError(f"{what}: changed area [{start}, {start + length}) lies "
                                   f"outside the reply window [{reply.start}, {window_end})")
            found.append(Extent(start, length))
        offset = window_end
    log.debug("%s: %d areas in %d pages", what, len(found), pages)
    return normalize(found)


def changed_areas(session: Session, vm: Any, snapshot: Any, key: int, capacity: int,
                  change_id: str) -> list[Extent]:
    """Areas of disk ``key`` in ``snapshot`` changed since ``change_id`` (``"*"``: allocated).

    Raises ChangeIdRejected when the host refuses ``change_id`` (a FileFault: tracking was
    reset, or the ID is from before CBT was active)."""
    what = f"changed areas of disk {key} since {change_id!r}"

    def query(offset: int) -> Reply:
        try:
            info = session.call(lambda: vm.QueryChangedDiskAreas(
                snapshot=snapshot, deviceKey=key, startOffset=offset, changeId=change_id))
        except vim.fault.FileFault as exc:
            raise ChangeIdRejected(f"{what}: the host rejected the change ID "
                                   f"({tasks.fault_message(exc)})") from exc
        except (vim.fault.VimFault, vmodl.MethodFault) as exc:
            denied = permission_denied(exc, what)
            if denied is not None:  # not a query fault: no full-read fallback hides it
                raise denied from exc
            raise VSphereError(f"{what} failed at offset {offset}: "
                               f"{tasks.fault_message(exc)}") from exc
        return Reply(int(info.startOffset), int(info.length),
                     [(int(a.start), int(a.length)) for a in info.changedArea or []])

    return collect(query, capacity, what)


def hardware_version(vm: Any) -> int:
    return _vmx(vm.config.version)


def _vmx(version: Any) -> int:
    text = str(version or "")
    return int(text.split("-")[-1]) if text.startswith("vmx-") else 0


def ensure_enabled(session: Session, vm: Any, allow_enable: bool,
                   owner_tag: str = "") -> float | None:
    """Make CBT active on ``vm``. Returns the seconds the stun/unstun cycle took when CBT had
    to be switched on (None when it already was).

    On a powered-on VM the new setting takes effect only after a stun/unstun cycle, which we
    cause with a snapshot create and remove. We refuse while the VM has snapshots: enabling
    CBT then can give silently wrong incrementals (vSphere 6.5+)."""
    # one round trip for the two settings (vm.config would fetch and decode the whole config)
    config = inventory.properties(session, vm, ["config.version",
                                                "config.changeTrackingEnabled"])
    if _vmx(config["config.version"]) < MIN_HARDWARE_VERSION:
        raise UnsupportedVMError(f"VM {vm.name!r} has hardware version "
                                 f"{config['config.version']}; CBT needs "
                                 f"vmx-{MIN_HARDWARE_VERSION} or later: upgrade the VM's "
                                 "compatibility")
    if config["config.changeTrackingEnabled"]:
        return None
    if not allow_enable:
        raise UnsupportedVMError(f"CBT is off on VM {vm.name!r} and the job forbids enabling "
                                 "it: enable it, or run without --no-enable-cbt")
    existing = snapshots.user_snapshots(session, vm)
    if existing:
        raise UnsupportedVMError(f"CBT is off on VM {vm.name!r}, which has snapshots "
                                 f"({', '.join(existing)}); enabling CBT now can give wrong "
                                 "incrementals: remove the snapshots and retry")
    log.info("enabling CBT on VM %r", vm.name)
    spec = vim.vm.ConfigSpec(changeTrackingEnabled=True)
    tasks.run_task(session, lambda: vm.ReconfigVM_Task(spec=spec), f"enabling CBT on {vm.name!r}")
    if session.call(lambda: vm.runtime.powerState) != vim.VirtualMachinePowerState.poweredOn:
        return 0.0
    snap, created = snapshots.create(session, vm, f"{snapshots.PREFIX}cbt-activate",
                                     "Stun/unstun cycle that activates CBT.", quiesce=False,
                                     owner_tag=owner_tag)
    removed = snapshots.remove(session, snap.ref, snap.name)
    return created + removed
