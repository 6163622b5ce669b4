"""vcsim's default inventory VMs (DC0_H0_VM0, ...) behave like lab VMs: a vSphere client
pointed at the lab meets ESXi's semantics whichever VM it picks."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from mover_lab import Lab

from .conftest import MiB, disks_of, folder_get, remove_snapshot, session_cookie, snapshot, wait

NAME = "DC0_H0_VM0"


@pytest.fixture
def inventory_vm(lab: Lab, si: Any) -> Iterator[Any]:
    """DC0_H0_VM0 with CBT off again and no snapshot left after the test (the VM is shared
    by the whole session)."""
    vm = si.content.searchIndex.FindByInventoryPath(f"DC0/vm/{NAME}")
    assert isinstance(vm, vim.VirtualMachine)
    yield vm
    for s in lab.snapshots(NAME):
        remove_snapshot(vim.vm.Snapshot(s["moref"], si._stub))
    wait(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(changeTrackingEnabled=False)))


def test_every_inventory_vm_is_a_lab_vm(lab: Lab, si: Any) -> None:
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder,
                                                      [vim.VirtualMachine], True)
    names = {vm.name for vm in view.view}
    view.Destroy()
    assert {"DC0_H0_VM0", "DC0_H0_VM1", "DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"} <= names
    for name in ("DC0_H0_VM0", "DC0_H0_VM1", "DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"):
        [d] = lab.vm(name)["disks"]
        assert d["capacity"] == MiB and d["file"] == f"[LocalDS_0] {name}/disk1.vmdk"
        assert d["flatFile"] == f"{name}/disk1-flat.vmdk"
        r = folder_get(lab, f"{name}/disk1.vmdk", session_cookie(si))
        assert r.status == 200
        assert b'RW 2048 VMFS "disk1-flat.vmdk"' in r.body     # a VMFS descriptor


def test_inventory_vm_has_esxi_cbt_and_snapshot_semantics(lab: Lab, si: Any,
                                                         inventory_vm: Any) -> None:
    vm = inventory_vm
    [key] = disks_of(vm)
    before = os.urandom(256 * 1024)
    lab.write(NAME, key, 128 * 1024, before)

    # Powered on: tracking is pending until a stun/unstun cycle, as on ESXi.
    assert vm.runtime.powerState == "poweredOn"
    wait(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(changeTrackingEnabled=True)))
    assert lab.vm(NAME)["cbt"] == {"enabled": True, "active": False}
    assert not disks_of(vm)[key].backing.changeId

    snap = snapshot(vm, "inventory")
    assert lab.vm(NAME)["cbt"]["active"]
    frozen = disks_of(snap)[key]
    assert frozen.backing.changeId                               # change ID on the snapshot disk
    assert frozen.backing.fileName == f"[LocalDS_0] {NAME}/disk1.vmdk"
    areas = vm.QueryChangedDiskAreas(snapshot=snap, deviceKey=key, startOffset=0, changeId="*")
    assert [(a.start, a.length) for a in areas.changedArea] == [(128 * 1024, 256 * 1024)]
    with pytest.raises(vmodl.fault.InvalidArgument):              # startOffset at capacity
        vm.QueryChangedDiskAreas(snapshot=snap, deviceKey=key, startOffset=MiB, changeId="*")

    # The guest writes on; the snapshot's image on /folder stays as it was, Range included.
    lab.write(NAME, key, 128 * 1024, b"\xff" * 4096)
    r = folder_get(lab, f"{NAME}/disk1-flat.vmdk", session_cookie(si),
                   (128 * 1024, 128 * 1024 + len(before) - 1))
    assert r.status == 206 and hashlib.sha256(r.body).digest() == hashlib.sha256(before).digest()

    # RemoveSnapshot_Task's info names the VM, so pyvmomi can read it.
    task = snap.RemoveSnapshot_Task(removeChildren=False, consolidate=True)
    WaitForTask(task)
    assert task.info.state == "success" and task.info.entity == vm
    assert lab.snapshots(NAME) == []
    assert lab.read_live(NAME, key, 128 * 1024, 4096) == b"\xff" * 4096
