"""Which transport reads which disk (pure): ``--transport folder|nbd|auto``.

``/folder`` reads a flat base disk on VMFS or NFS; it cannot read a delta (the VM had a
snapshot before mover's), nor a vSAN, vVols, RDM or sparse extent (``mover.vmdk``). NBD
through nbdkit's vddk plugin reads all of them, as VDDK opens the snapshot's logical disk.
``auto`` takes ``/folder`` where it can read the disk and NBD for the rest, if NBD is
available; otherwise the disk is refused with both reasons. The choice and its reason go
into the disk's result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mover.errors import UnsupportedVMError
from mover.vsphere.disks import DiskInfo

CHOICES = ("folder", "nbd", "auto")


@dataclass(frozen=True, slots=True)
class Route:
    kind: Literal["folder", "nbd"]
    reason: str
    data_path: str | None = None        # /folder: the file holding the bytes


def needs_descriptor(option: str, disk: DiskInfo) -> bool:
    """Whether the disk's descriptor must be read (``/folder`` may be used for it)."""
    return option == "folder" or (option == "auto" and not disk.is_delta)


def choose(option: str, disk: DiskInfo, data_path: str | None, unservable: str | None,
           nbd_missing: str | None) -> Route:
    """``data_path``/``unservable``: the descriptor's flat file, or why ``/folder`` cannot
    serve it (None for both when it was not read); ``nbd_missing``: why NBD cannot be used
    here (None: it can)."""
    what = f"disk {disk.key} ({disk.label}, {disk.file})"
    folder_cannot = ("it is a delta of an earlier snapshot (the VM has other snapshots)"
                     if disk.is_delta else unservable)
    if option == "nbd":
        return Route("nbd", "--transport nbd")
    if folder_cannot is None and data_path is not None:
        return Route("folder", "--transport folder" if option == "folder"
                     else "a flat disk the datastore transport reads", data_path)
    if option == "auto" and nbd_missing is None:
        return Route("nbd", f"the datastore transport cannot read it: {folder_cannot}")
    if disk.is_delta:
        fix = ("remove or consolidate the VM's other snapshots and retry (another mover "
               "backup of this VM may be running: then wait for it)")
    else:
        fix = "exclude the VM or move the disk to VMFS or NFS storage as a flat disk"
    nbd = (f"; NBD is not available ({nbd_missing})" if option == "auto" and nbd_missing
           else "; --transport nbd (VDDK through nbdkit) reads it")
    raise UnsupportedVMError(f"{what} cannot be read over the datastore transport: "
                             f"{folder_cannot}{nbd}; or {fix}")
