"""The VM's configuration as saved with every backup, so that the VM can be rebuilt.

``saved(session, snapshot)`` is the snapshot's ``config`` (``VirtualMachineConfigInfo``: the
hardware and every device with its key, controller and unit, disk backings, NICs with their
networks and MAC addresses, firmware, guest OS, extraConfig) as JSON, as pyvmomi encodes it
(``_vimtype`` names each object's class). The snapshot's, not the running VM's: it is the
configuration the backed-up disks belong to. ``nvram_file`` names the VM's NVRAM file (BIOS
or UEFI variables, Secure Boot keys), which the backup job fetches from the datastore: the
live VM's file, not the snapshot's copy. ``nvram_file`` only names a ``*.nvram`` file in the
VM's own directory: extraConfig is writable by anyone with VM-configuration rights, and the
file's bytes go into the backup.
"""

from __future__ import annotations

import posixpath
from typing import Any

from mover.vsphere.disks import split_datastore_path
from mover.vsphere.session import Session
from mover.vsphere.vmomi import to_json


def saved(session: Session, snapshot: Any) -> dict[str, Any]:
    """The snapshot's VM configuration as JSON values."""
    config = session.call(lambda: snapshot.config)
    value = to_json(config)
    assert isinstance(value, dict)
    return value


class NvramPathRefused(ValueError):
    """extraConfig ``nvram`` names a file outside the VM's directory, or not a ``.nvram``."""


def nvram_file(config: dict[str, Any]) -> tuple[str, str] | None:
    """(datastore, path) of the VM's NVRAM file: extraConfig ``nvram`` (a name in the VM's
    directory, or a datastore path into it), by default ``<vmx name>.nvram`` beside the
    ``.vmx``; None if the configuration names no ``.vmx``. NvramPathRefused (naming the
    value) if extraConfig names a file elsewhere (``../``, another directory or datastore)
    or one not ending in ``.nvram``."""
    vmx = (config.get("files") or {}).get("vmPathName")
    if not vmx:
        return None
    datastore, path = split_datastore_path(vmx)
    directory = posixpath.dirname(path)
    name = next((str(o.get("value")) for o in config.get("extraConfig") or []
                 if o.get("key") == "nvram" and o.get("value")), None)
    if name is None:
        return datastore, posixpath.join(
            directory, posixpath.splitext(posixpath.basename(path))[0] + ".nvram")
    where = (datastore, posixpath.join(directory, name))
    if name.startswith("["):
        try:
            where = split_datastore_path(name)
        except ValueError:
            where = ("", "")
    ds, file = where
    base = posixpath.basename(file)
    if (ds != datastore or posixpath.normpath(file) != posixpath.join(directory, base)
            or not base.lower().endswith(".nvram") or base.startswith(".")):
        raise NvramPathRefused(
            f"extraConfig nvram = {name!r} is not a .nvram file in the VM's directory "
            f"[{datastore}] {directory}")
    return where


def summary(config: dict[str, Any]) -> dict[str, Any]:
    """The facts a person (and a restore) looks at first: guest OS, firmware, CPUs, memory,
    hardware version, and each disk's and NIC's key, controller, unit and backing."""
    hardware = config.get("hardware") or {}
    devices = hardware.get("device") or []
    disks, nics = [], []
    for dev in devices:
        kind = str(dev.get("_vimtype", ""))
        backing = dev.get("backing") or {}
        if kind.endswith(".VirtualDisk"):
            disks.append({"key": dev.get("key"), "controller": dev.get("controllerKey"),
                          "unit": dev.get("unitNumber"), "capacity": dev.get("capacityInBytes"),
                          "file": backing.get("fileName"),
                          "thin": backing.get("thinProvisioned")})
        elif "macAddress" in dev:
            nics.append({"key": dev.get("key"), "type": kind.rsplit(".", 1)[-1],
                         "mac": dev.get("macAddress"), "network": backing.get("deviceName")})
    return {"guest_id": config.get("guestId"), "firmware": config.get("firmware"),
            "version": config.get("version"), "cpus": hardware.get("numCPU"),
            "memory_mb": hardware.get("memoryMB"), "disks": disks, "nics": nics}
