"""``mover restore --to-vsphere`` against the lab: a two-disk VM comes back as a new VM made
by CreateVM_Task from the saved configuration, its disks written by /folder PUT; read back
through /folder they are the backup's bytes, its hardware is the saved one, the original VM
is untouched, and a name in use is refused."""

from __future__ import annotations

import base64
import hashlib
import random
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mover.vmdk import data_file
from mover_lab import Lab

from .runner import backup, mover, snapshot_digests

MiB = 1 << 20


def folder_get(lab: Lab, path: str) -> bytes:
    request = urllib.request.Request(lab.folder_url(path))
    token = base64.b64encode(f"{lab.user}:{lab.password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=60) as reply:
        return bytes(reply.read())


def find(si: Any, name: str) -> Any:
    return si.content.searchIndex.FindByInventoryPath(f"DC0/vm/{name}")


def hardware(vm: Any) -> dict[str, Any]:
    config = vm.config
    devices = config.hardware.device
    return {"guest": config.guestId, "version": config.version, "firmware": config.firmware,
            "cpus": config.hardware.numCPU, "memory": config.hardware.memoryMB,
            "controllers": sorted((type(d).__name__, d.key, d.busNumber) for d in devices
                                  if hasattr(d, "busNumber") and "SCSI" in type(d).__name__),
            "disks": sorted((d.key, d.controllerKey, d.unitNumber, d.capacityInBytes,
                             bool(d.backing.thinProvisioned)) for d in devices
                            if type(d).__name__ == "vim.vm.device.VirtualDisk"),
            "nics": sorted((type(d).__name__, d.key) for d in devices
                           if hasattr(d, "macAddress"))}


def disk_bytes(lab: Lab, vm: Any) -> dict[int, str]:
    """SHA-256 of each disk's flat file as /folder serves it (file named by the descriptor)."""
    digests = {}
    for dev in vm.config.hardware.device:
        if type(dev).__name__ != "vim.vm.device.VirtualDisk":
            continue
        descriptor = dev.backing.fileName.split("] ", 1)[1]
        text = folder_get(lab, descriptor).decode()
        flat = data_file(text, descriptor, dev.capacityInBytes)
        digests[dev.key] = hashlib.sha256(folder_get(lab, flat)).hexdigest()
    return digests


def restore_args(lab: Lab, repo: Path, backup_id: str, *extra: str) -> list[str | Path]:
    return ["restore", "--to-vsphere", "--server", lab.url, "--user", lab.user, "--repo", repo,
            "--backup", backup_id, "--json", *extra]


def test_a_two_disk_vm_comes_back_as_a_new_vm(lab: Lab, unique_name: Callable[[str], str],
                                               tmp_path: Path) -> None:
    lab.configure(snapshotDigests=True)
    name = unique_name("vm")
    lab.create_vm(name, [{"capacity": 24 * MiB, "type": "thin"},
                         {"capacity": 8 * MiB, "type": "eagerZeroedThick"}])
    rng = random.Random(5)
    for key, capacity in ((2000, 24 * MiB), (2001, 8 * MiB)):
        for _ in range(6):
            lab.write(name, key, rng.randrange(0, capacity - 300_000), rng.randbytes(300_000))
    repo = tmp_path / "repo"
    result = backup(lab, name, repo)
    expected = snapshot_digests(lab, name, result["snapshot"])
    si = lab.connect()
    original = find(si, name)
    before = (hardware(original), original.config.instanceUuid,
              {k: lab.live_sha256(name, k) for k in (2000, 2001)})

    new = unique_name("restored")
    run = mover(*restore_args(lab, repo, result["backup_id"], "--name", new), lab=lab)
    assert run.code == 0, run.stderr
    restored = run.result
    assert (restored["status"], restored["vm_name"], restored["method"]) == (
        "restored", new, "folder-put")
    assert [d["key"] for d in restored["disks"]] == [2000, 2001]
    assert restored["nvram"] is True

    vm = find(si, new)
    assert vm is not None and vm._moId == restored["vm_moref"]
    assert disk_bytes(lab, vm) == expected                         # every byte, both disks
    assert hardware(vm) == before[0]                               # the saved hardware
    assert vm.config.instanceUuid not in ("", before[1])           # a new identity
    assert folder_get(lab, f"{new}/{new}.nvram") == folder_get(lab, f"{name}/{name}.nvram")
    # The original is untouched.
    original = find(si, name)
    assert (hardware(original), original.config.instanceUuid,
            {k: lab.live_sha256(name, k) for k in (2000, 2001)}) == before

    # A name in use is refused before anything is created: the restored one, the original.
    for taken in (new, None):
        extra = ("--name", taken) if taken else ()
        clash = mover(*restore_args(lab, repo, result["backup_id"], *extra), lab=lab)
        assert clash.code == 2 and "exists" in clash.stderr, clash.stderr
    names = [vm.name for vm in si.content.viewManager.CreateContainerView(
        si.content.rootFolder, [type(original)], True).view]
    assert names.count(new) == 1 and names.count(name) == 1


def test_a_backup_without_saved_config_and_bad_options_are_refused(
        lab: Lab, tmp_path: Path) -> None:
    run = mover("restore", "--to-vsphere", "--repo", tmp_path, "--backup", "x", lab=lab)
    assert run.code == 2 and "--server" in run.stderr
    run = mover(*restore_args(lab, tmp_path, "x", "--network-map", "nothing"), lab=lab)
    assert run.code == 2 and "OLD=NEW" in run.stderr


def test_a_failure_after_the_vm_exists_removes_it(lab: Lab, unique_name: Callable[[str], str],
                                                  tmp_path: Path) -> None:
    name = unique_name("vm")
    lab.create_vm(name, [{"capacity": 4 * MiB, "type": "thin"}])
    lab.write(name, 2000, 0, b"\x5a" * 100_000)
    repo = tmp_path / "repo"
    result = backup(lab, name, repo)
    new = unique_name("restored")
    lab.inject("soap", "fileFault", match="PowerOnVM_Task", count=1)
    run = mover(*restore_args(lab, repo, result["backup_id"], "--name", new, "--power-on"),
                lab=lab)
    assert run.code == 6 and "were removed" in run.stderr, run.stderr
    assert find(lab.connect(), new) is None


def test_one_disk_onto_an_existing_powered_off_vm(lab: Lab, unique_name: Callable[[str], str],
                                                  tmp_path: Path) -> None:
    lab.configure(snapshotDigests=True)
    name, other, running, small = (unique_name(p) for p in ("vm", "into", "on", "small"))
    lab.create_vm(name, [{"capacity": 8 * MiB, "type": "thin"}])
    lab.write(name, 2000, 12345, random.Random(9).randbytes(2 * MiB))
    repo = tmp_path / "repo"
    result = backup(lab, name, repo)
    expected = snapshot_digests(lab, name, result["snapshot"])[2000]
    lab.create_vm(other, [{"capacity": 8 * MiB, "type": "thin"}], power_on=False)
    lab.create_vm(running, [{"capacity": 8 * MiB, "type": "thin"}])
    lab.create_vm(small, [{"capacity": 4 * MiB, "type": "thin"}], power_on=False)
    base = ["restore", "--server", lab.url, "--user", lab.user, "--repo", repo, "--backup",
            result["backup_id"], "--disk", "2000", "--json", "--into-vm"]

    run = mover(*base, other, lab=lab)
    assert run.code == 0, run.stderr
    assert run.result["bytes_sent"] == 8 * MiB
    si = lab.connect()
    assert disk_bytes(lab, find(si, other)) == {2000: expected}

    refused = mover(*base, running, lab=lab)
    assert refused.code == 2 and "power it off" in refused.stderr
    refused = mover(*base, small, lab=lab)
    assert refused.code == 2 and "same size" in refused.stderr


def test_keep_identity_brings_back_a_vm_that_is_gone(lab: Lab, unique_name: Callable[[str], str],
                                                     tmp_path: Path) -> None:
    """--keep-identity: refused while the original VM has the UUID; once it is gone the new VM
    has its instance UUID, BIOS UUID and MACs; --disk-datastore names a disk of the backup."""
    name = unique_name("vm")
    lab.create_vm(name, [{"capacity": 4 * MiB, "type": "thin"}])
    lab.write(name, 2000, 0, random.Random(9).randbytes(200_000))
    si = lab.connect()
    add_nic(si, find(si, name))
    repo = tmp_path / "repo"
    result = backup(lab, name, repo)
    original = find(si, name)
    identity = (original.config.instanceUuid, original.config.uuid,
                sorted(d.macAddress for d in original.config.hardware.device
                       if hasattr(d, "macAddress")))
    assert identity[2], "the lab VM has a NIC"
    new = unique_name("back")
    run = mover(*restore_args(lab, repo, result["backup_id"], "--name", new,
                              "--keep-identity"), lab=lab)
    assert run.code == 2 and f"VM {name!r} still has instance UUID" in run.stderr, run.stderr
    assert find(si, new) is None
    run = mover(*restore_args(lab, repo, result["backup_id"], "--name", new,
                              "--disk-datastore", "2001=LocalDS_0"), lab=lab)
    assert run.code == 2 and "has no disk 2001" in run.stderr, run.stderr
    lab.delete_vm(name)
    run = mover(*restore_args(lab, repo, result["backup_id"], "--name", new, "--keep-identity",
                              "--disk-datastore", "2000=LocalDS_0"), lab=lab)
    assert run.code == 0, run.stderr
    vm = find(si, new)
    assert (vm.config.instanceUuid, vm.config.uuid,
            sorted(d.macAddress for d in vm.config.hardware.device
                   if hasattr(d, "macAddress"))) == identity


def add_nic(si: Any, vm: Any) -> None:
    """An E1000 on "VM Network" (lab VMs have none), with a MAC the host generates."""
    from pyVim.task import WaitForTask
    from pyVmomi import vim

    dc = si.content.rootFolder.childEntity[0]
    network = next(n for n in dc.network if n.name == "VM Network")
    nic = vim.vm.device.VirtualE1000(
        key=-1, addressType="generated",
        backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName=network.name,
                                                                     network=network))
    spec = vim.vm.ConfigSpec(deviceChange=[vim.vm.device.VirtualDeviceSpec(operation="add",
                                                                           device=nic)])
    WaitForTask(vm.ReconfigVM_Task(spec=spec))
