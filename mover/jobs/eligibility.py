"""VMs and disks vSphere cannot snapshot, refused before anything is done (pure over the
VM's facts). Each refusal is exit 7 (``UnsupportedVMError``) naming the VM, the disk, the
reason and the fix; nothing is created, nothing is read.

- a **template** (``config.template``): vSphere refuses snapshots of templates;
- a **multi-writer** disk (``backing.sharing`` ``sharingMultiWriter``, clustered
  databases and file systems): snapshots of VMs with such disks are not supported (VMware
  KB 1034165, "Enabling or disabling simultaneous write protection provided by
  VMFS using the multi-writer flag");
- a **physical-mode RDM** (``RawDiskMappingVer1BackingInfo``, ``physicalMode``): the LUN's
  SCSI commands pass through to the array, so ESXi can neither snapshot nor track it.

Independent disks are not refused: they are left out of snapshots by design and skipped,
as the result's ``skipped_disks`` says (``mover.jobs.backup``).
"""

from __future__ import annotations

from mover.errors import UnsupportedVMError
from mover.vsphere.inventory import VMFacts


def refuse_unsnapshottable(vm: VMFacts) -> None:
    if vm.template:
        raise UnsupportedVMError(
            f"VM {vm.name!r} is a template, and vSphere cannot snapshot templates: convert "
            "it to a virtual machine to back it up, or back up the VM it was made from",
            vm=vm.name)
    for disk in vm.disks:
        if disk.independent:
            continue
        if disk.multi_writer:
            raise UnsupportedVMError(
                f"VM {vm.name!r}: disk {disk.key} ({disk.label}, {disk.file}) is shared "
                "multi-writer, and vSphere cannot snapshot a VM with such a disk (KB 1034165): "
                "make the disk independent-persistent to back up the rest of the VM, or back "
                "it up from inside the guest", vm=vm.name, disk=disk.key)
        if disk.rdm_mode == "physicalMode":
            raise UnsupportedVMError(
                f"VM {vm.name!r}: disk {disk.key} ({disk.label}, {disk.file}) is a "
                "physical-mode raw device mapping, which vSphere cannot snapshot or track: "
                "make it independent (it is then skipped), switch it to virtual mode, or "
                "back up the LUN on the array", vm=vm.name, disk=disk.key)
