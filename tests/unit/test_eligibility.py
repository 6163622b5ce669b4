"""What vSphere cannot snapshot is refused from the VM's facts alone (exit 7)."""

from __future__ import annotations

import dataclasses

import pytest
from pyVmomi import vim

from mover.errors import UnsupportedVMError
from mover.jobs.eligibility import refuse_unsnapshottable
from mover.vsphere.disks import DiskInfo, disks_of
from mover.vsphere.inventory import VMFacts

DISK = DiskInfo(2000, "Hard disk 1", "u", 1 << 30, "[ds] vm/vm.vmdk", "", True, False,
                False, False)
VM = VMFacts(None, "vm1", "vm-1", "i", "DC0", False, (DISK,))


def rdm(mode: str, disk_mode: str = "persistent") -> object:
    backing = vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo(
        fileName="[ds] vm/vm_1.vmdk", compatibilityMode=mode, diskMode=disk_mode,
        lunUuid="0200000000600", deviceName="/vmfs/devices/disks/naa.600")
    return vim.vm.device.VirtualDisk(key=2001, backing=backing, capacityInKB=1024,
                                     capacityInBytes=1 << 20)


@pytest.mark.parametrize(
    ("vm", "says"),
    [
        pytest.param(dataclasses.replace(VM, template=True), "is a template", id="template"),
        pytest.param(dataclasses.replace(
            VM, disks=(dataclasses.replace(DISK, multi_writer=True),)),
                     "multi-writer", id="multi-writer"),
        pytest.param(dataclasses.replace(VM, disks=tuple(disks_of([rdm("physicalMode")]))),
                     "physical-mode raw device mapping", id="physical-rdm"),
    ],
)
def test_refused(vm: VMFacts, says: str) -> None:
    with pytest.raises(UnsupportedVMError) as caught:
        refuse_unsnapshottable(vm)
    assert says in str(caught.value) and caught.value.exit_code == 7
    assert caught.value.fields["vm"] == "vm1"


@pytest.mark.parametrize(
    "vm",
    [
        pytest.param(VM, id="flat-disk"),
        pytest.param(dataclasses.replace(VM, disks=tuple(disks_of([rdm("virtualMode")]))),
                     id="virtual-rdm"),
        pytest.param(dataclasses.replace(VM, disks=tuple(disks_of(
            [rdm("physicalMode", "independent_persistent")]))), id="independent-physical-rdm"),
    ],
)
def test_allowed(vm: VMFacts) -> None:
    refuse_unsnapshottable(vm)


def test_disks_of_reads_rdm_mode_and_sharing() -> None:
    [disk] = disks_of([rdm("physicalMode")])
    assert disk.rdm_mode == "physicalMode" and not disk.multi_writer
