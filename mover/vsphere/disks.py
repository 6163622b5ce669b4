"""What mover needs to know of each virtual disk, read from a snapshot's device list."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mover.vsphere.session import Session
from mover.vsphere.vmomi import vim

_DATASTORE_PATH = re.compile(r"^\[(?P<ds>[^\]]+)\]\s*(?P<path>.+)$")


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

    @property
    def datastore(self) -> str:
        return split_datastore_path(self.file)[0]

    @property
    def descriptor_path(self) -> str:
        """The disk's descriptor file, relative to the datastore: ``folder/name.vmdk``.
        Which file holds the data is written in it (``mover.vmdk``), never guessed."""
        return split_datastore_path(self.file)[1]


def split_datastore_path(file: str) -> tuple[str, str]:
    match = _DATASTORE_PATH.match(file)
    if match is None:
        raise ValueError(f"not a datastore path: {file!r}")
    return match["ds"], match["path"].strip()


def disks_of(devices: list[Any]) -> list[DiskInfo]:
    """Every ``VirtualDisk`` among ``devices`` (a VM's or a snapshot's hardware)."""
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
        ))
    return sorted(disks, key=lambda d: d.key)


def snapshot_disks(session: Session, snapshot: Any) -> list[DiskInfo]:
    """The disks of a snapshot (``SnapshotRef.ref``), as it froze them."""
    return disks_of(session.call(lambda: snapshot.config.hardware.device))
