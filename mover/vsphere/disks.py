"""What mover needs to know of each virtual disk, read from a snapshot's device list."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mover.vsphere.session import Session
from mover.vsphere.vmomi import vim

_DATASTORE_PATH = re.compile(r"^\[(?P<ds>[^\]]+)\]\s*(?P<path>.+)$")
#: "[ds] path" where the datastore's name may itself hold "]": up to the first "] "
_DATASTORE_PATH_SPACED = re.compile(r"^\[(?P<ds>.+?)\] (?P<path>.+)$")


@dataclass(frozen=True, slots=True)
class DiskInfo:
    key: int
    label: str
    uuid: str
    capacity: int
    file: str               # "[datastore] folder/name.vmdk"
    change_id: str
    thin: bool
    eager_zeroed: bool
    is_delta: bool          # backing has a parent: a snapshot delta, not a flat base disk
    independent: bool       # independent disks are not in snapshots: they cannot be backed up
    encrypted: bool = False  # backing.keyId: the files hold ciphertext
    #: the names of the VM's datastores: a name holding "]" splits ``file`` right only
    #: when known (``split_datastore_path``)
    datastores: tuple[str, ...] = ()
    multi_writer: bool = False   # backing.sharing "sharingMultiWriter": not in snapshots
    rdm_mode: str = ""           # a raw device mapping: "physicalMode" or "virtualMode"

    @property
    def datastore(self) -> str:
        """The datastore's name as the API spells it (``dsName`` on ``/folder``)."""
        return split_datastore_path(self.file, self.datastores)[0]

    @property
    def descriptor_path(self) -> str:
        """The disk's descriptor file, relative to the datastore: ``folder/name.vmdk``.
        Which file holds the data is written in it (``mover.vmdk``), never guessed."""
        return split_datastore_path(self.file, self.datastores)[1]


def split_datastore_path(file: str, known: tuple[str, ...] | list[str] = ()) -> tuple[str, str]:
    """``"[ds] folder/x.vmdk"`` -> ``("ds", "folder/x.vmdk")``. A datastore name may hold
    ``]`` and the path ``] `` (both are legal names), so the longest of the ``known``
    datastore names that fits wins; without one, the split is at the first ``] ``."""
    for name in sorted(known, key=len, reverse=True):
        prefix = f"[{name}]"
        if file.startswith(prefix) and file[len(prefix):].strip():
            return name, file[len(prefix):].strip()
    match = _DATASTORE_PATH_SPACED.match(file) or _DATASTORE_PATH.match(file)
    if match is None:
        raise ValueError(f"not a datastore path: {file!r}")
    return match["ds"], match["path"].strip()


def disks_of(devices: list[Any], datastores: tuple[str, ...] = ()) -> list[DiskInfo]:
    """Every ``VirtualDisk`` among ``devices`` (a VM's or a snapshot's hardware);
    ``datastores``: the VM's datastore names (``DiskInfo.datastores``)."""
    disks = []
    for dev in devices:
        if not isinstance(dev, vim.vm.device.VirtualDisk):
            continue
        backing = dev.backing
        capacity = dev.capacityInBytes or dev.capacityInKB * 1024
        mode = getattr(backing, "diskMode", "") or ""
        disks.append(DiskInfo(
            key=dev.key,
            label=dev.deviceInfo.label if dev.deviceInfo else f"disk {dev.key}",
            uuid=getattr(backing, "uuid", None) or "",
            capacity=int(capacity),
            file=backing.fileName,
            change_id=getattr(backing, "changeId", None) or "",
            thin=bool(getattr(backing, "thinProvisioned", False)),
            eager_zeroed=bool(getattr(backing, "eagerlyScrub", False)),
            is_delta=getattr(backing, "parent", None) is not None,
            independent=mode.startswith("independent"),
            encrypted=getattr(backing, "keyId", None) is not None,
            datastores=datastores,
            multi_writer=getattr(backing, "sharing", None) == "sharingMultiWriter",
            rdm_mode=(getattr(backing, "compatibilityMode", "") or "") if isinstance(
                backing, vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo) else "",
        ))
    return sorted(disks, key=lambda d: d.key)


def snapshot_disks(session: Session, snapshot: Any,
                   datastores: tuple[str, ...] = ()) -> list[DiskInfo]:
    """The disks of a snapshot (``SnapshotRef.ref``), as it froze them; ``datastores``:
    the VM's datastore names (``VMFacts.datastores``)."""
    return disks_of(session.call(lambda: snapshot.config.hardware.device), datastores)
