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


def test_nested_datacenter_and_dcpath_on_folder(lab: Lab, si: Any,
                                                unique_name: Any) -> None:
    name = unique_name("nested")
    info = lab.create_vm(name, [{"capacity": MiB}, {"capacity": MiB, "datastore": "LocalDS_1"}],
                         datacenter="DC 1+ü")
    try:
        vm = si.content.searchIndex.FindByUuid(None, info["uuid"], True, False)
        dc = vm.parent.parent
        assert isinstance(dc, vim.Datacenter) and dc.name == "DC 1+ü"
        assert [dc.parent.name, dc.parent.parent.name] == ["Zürich 100%25", "Europe"]
        home, other = (d["datastore"] for d in info["disks"])
        assert (home, other) == ("Datastore 1+100%25 ü", "LocalDS_1")
        cookie = session_cookie(si)
        # vcsim names the first disk on each datastore <vm>/<vm>.vmdk
        assert info["disks"][1]["file"] == f"[LocalDS_1] {name}/{name}.vmdk"
        descriptor = f"{name}/{name}.vmdk"
        assert folder_get(lab, descriptor, cookie, ds=other, dc="Europe/Zürich 100%25/DC 1+ü"
                          ).status == 200
        # dcPath names the datastore's datacenter, or the datastore is not found (vCenter)
        assert folder_get(lab, descriptor, cookie, ds=other, dc="DC0").status == 404
        assert folder_get(lab, descriptor, cookie, ds=other, dc="DC 1+ü").status == 404
    finally:
        lab.delete_vm(name)


def test_a_vm_in_a_vapp_has_no_parent(lab: Lab, si: Any, unique_name: Any) -> None:
    name = unique_name("vapp")
    info = lab.create_vm(name, [{"capacity": MiB}], vapp=True)
    try:
        vm = si.content.searchIndex.FindByUuid(None, info["uuid"], True, False)
        assert vm.parent is None
        assert isinstance(vm.parentVApp, vim.VirtualApp) and vm.parentVApp.name == "vApp 1"
    finally:
        lab.delete_vm(name)
