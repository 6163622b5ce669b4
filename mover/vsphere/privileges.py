"""The vSphere privileges mover needs, and a refusal for want of one as mover's error.

A backup needs, on the VM (or a folder or resource pool above it, propagated):
``VirtualMachine.State.CreateSnapshot``, ``VirtualMachine.State.RemoveSnapshot`` (also for
``ConsolidateVMDisks_Task``), ``VirtualMachine.Provisioning.DiskRandomRead``
(``QueryChangedDiskAreas``), ``VirtualMachine.Config.ChangeTracking`` (to switch CBT on;
not needed with ``--no-enable-cbt``); on the datastores: ``Datastore.Browse`` and
``Datastore.FileManagement`` (``/folder``); ``System.View`` on the root folder (every
role has it). README, "vSphere privileges", is the user's copy of this list.
"""

from __future__ import annotations

from mover.errors import PermissionDenied
from mover.vsphere.vmomi import vim

#: what a /folder read needs, for a 403 (which names no privilege)
FOLDER_READ = "Datastore.Browse"


def permission_denied(fault: object, what: str = "a vSphere call") -> PermissionDenied | None:
    """A ``NoPermission`` fault (but not ``NotAuthenticated``, its subclass, which means an
    expired session) as the error naming the missing privilege; None for other faults."""
    if not isinstance(fault, vim.fault.NoPermission) or isinstance(
            fault, vim.fault.NotAuthenticated):
        return None
    privilege = getattr(fault, "privilegeId", None) or "?"
    target = getattr(fault, "object", None)
    on = getattr(target, "_moId", None) or "the object"
    return PermissionDenied(
        f"{what} was refused: the user lacks the vSphere privilege {privilege} on {on}; "
        "grant it to the user's role (README, \"vSphere privileges\")",
        privilege=privilege, object=on)
