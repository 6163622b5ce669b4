"""The VM's configuration and NVRAM saved with every backup, against the lab: the record's
config is the VM's (hardware, disk keys and controllers, NICs, firmware, guest OS) and its
NVRAM is the datastore's file, byte for byte."""

from __future__ import annotations

import base64
import hashlib
import urllib.request
from collections.abc import Callable
from pathlib import Path

from mover.repo import Repository
from mover_lab import Lab

from .runner import backup

MiB = 1 << 20


def folder_get(lab: Lab, path: str) -> bytes:
    request = urllib.request.Request(lab.folder_url(path))
    token = base64.b64encode(f"{lab.user}:{lab.password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=30) as reply:
        return bytes(reply.read())


def test_the_backup_record_holds_the_vm_config_and_nvram(
        lab: Lab, unique_name: Callable[[str], str], tmp_path: Path) -> None:
    name = unique_name("vm")
    lab.create_vm(name, [{"capacity": 8 * MiB, "type": "thin"},
                         {"capacity": 4 * MiB, "type": "eagerZeroedThick"}])
    result = backup(lab, name, tmp_path / "repo")
    record = Repository.open(tmp_path / "repo", create=False).get_backup(result["backup_id"])
    saved = record.vm_config

    si = lab.connect()
    vm = si.content.searchIndex.FindByInventoryPath(f"DC0/vm/{name}")
    config = vm.config
    got = saved["config"]
    assert (got["name"], got["guestId"], got["version"], got["firmware"]) == (
        name, config.guestId, config.version, config.firmware)
    assert got["hardware"]["numCPU"] == config.hardware.numCPU
    assert got["hardware"]["memoryMB"] == config.hardware.memoryMB
    devices = {d["key"]: d for d in got["hardware"]["device"]}
    assert set(devices) == {d.key for d in config.hardware.device}
    summary = saved["summary"]
    assert [(d["key"], d["controller"], d["unit"], d["capacity"]) for d in summary["disks"]] == [
        (d.key, d.controllerKey, d.unitNumber, d.capacityInBytes)
        for d in config.hardware.device if type(d).__name__ == "vim.vm.device.VirtualDisk"]
    controller = devices[summary["disks"][0]["controller"]]
    assert controller["_vimtype"] == "vim.vm.device.ParaVirtualSCSIController"
    nics = [d for d in config.hardware.device if hasattr(d, "macAddress")]
    assert [(n["key"], n["mac"]) for n in summary["nics"]] == [
        (n.key, n.macAddress) for n in nics]

    nvram = saved["nvram"]
    expected = folder_get(lab, f"{name}/{name}.nvram")
    assert len(expected) == 8684 and expected[:4] == b"MRVN"
    assert nvram["file"] == f"[LocalDS_0] {name}/{name}.nvram"
    assert base64.b64decode(nvram["base64"]) == expected
    assert nvram["sha256"] == hashlib.sha256(expected).hexdigest()
