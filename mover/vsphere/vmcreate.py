"""Creating a new VM from a backup's saved configuration (``BackupRecord.vm_config``).

``placement`` resolves where the VM goes (datacenter, folder, resource pool, host,
datastore) from the user's options, defaulting to the original datastore when it exists.
``config_spec`` turns the saved ``VirtualMachineConfigInfo`` JSON into a
``VirtualMachineConfigSpec`` for ``CreateVM_Task``: guest OS, hardware version, firmware,
CPUs, memory, the storage controllers, every backed-up disk (same key, controller, unit and
capacity, thin or thick as saved, created empty on the target datastore) and every NIC
(same type and key, network through ``--network-map``, a new generated MAC). The host gives
the VM a new BIOS and instance UUID. Devices every VM gets by itself (PCI, IDE, PS/2,
video, VMCI, keyboard, mouse) are not added; CD-ROMs, floppies, serial ports, USB and
passthrough devices are left out, as is extraConfig (it names the old VM's files and may
hold guestinfo secrets).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mover.errors import NotFoundError, UsageError, VSphereError
from mover.vsphere import inventory, tasks
from mover.vsphere.disks import DiskInfo, disks_of, split_datastore_path
from mover.vsphere.session import Session
from mover.vsphere.vmomi import vim

_CONTROLLERS = ("SCSIController", "AHCIController", "NVMEController")


@dataclass(frozen=True, slots=True)
class Placement:
    datacenter: Any
    datacenter_path: str
    folder: Any
    pool: Any
    host: Any | None
    datastore: str


def _type(name: str) -> Any:
    """The pyvmomi class that a ``_vimtype`` such as ``vim.vm.device.VirtualDisk`` names."""
    node: Any = vim
    for part in name.split(".")[1:]:
        node = getattr(node, part)
    return node


def placement(session: Session, datastore: str | None, folder: str | None,
              pool: str | None, host: str | None, original_datastore: str | None) -> Placement:
    """Where the new VM goes; NotFoundError naming the option whose object is missing."""
    return session.call(lambda: _placement(session, datastore, folder, pool, host,
                                           original_datastore))


def _placement(session: Session, datastore: str | None, folder: str | None, pool: str | None,
               host: str | None, original: str | None) -> Placement:
    content = session.content
    search = content.searchIndex
    target_folder = None
    if folder is not None:
        target_folder = search.FindByInventoryPath(folder)
        if not isinstance(target_folder, vim.Folder):
            raise NotFoundError(f"--folder {folder!r} is not a VM folder's inventory path "
                                "(e.g. DC0/vm/restored)")
    if target_folder is not None:
        dc = target_folder
        while dc is not None and not isinstance(dc, vim.Datacenter):
            dc = dc.parent
    else:
        dcs = [e for e in content.rootFolder.childEntity if isinstance(e, vim.Datacenter)]
        if len(dcs) != 1:
            raise UsageError(f"{len(dcs)} datacenters: give --folder DATACENTER/vm/... to "
                             "say where the VM goes")
        dc = dcs[0]
    if dc is None:
        raise NotFoundError(f"--folder {folder!r} is in no datacenter")
    target_folder = target_folder or dc.vmFolder
    target_host = None
    if host is not None:
        target_host = next((h for h in _hosts(dc) if h.name == host), None)
        if target_host is None:
            raise NotFoundError(f"--host {host!r} is not a host of datacenter {dc.name}")
    target_pool = None
    if pool is not None:
        target_pool = search.FindByInventoryPath(pool)
        if not isinstance(target_pool, vim.ResourcePool):
            target_pool = next((p for p in _pools(dc) if p.name == pool), None)
        if target_pool is None:
            raise NotFoundError(f"--resource-pool {pool!r} is neither an inventory path nor "
                                "the name of a resource pool")
    elif target_host is not None:
        target_pool = target_host.parent.resourcePool
    else:
        computes = _computes(dc)
        if not computes:
            raise NotFoundError(f"datacenter {dc.name} has no host or cluster")
        target_pool = computes[0].resourcePool
    names = {ds.name for ds in dc.datastore}
    chosen = datastore or (original if original in names else None)
    if chosen is None:
        raise UsageError(f"the original datastore {original!r} is not in {dc.name}: give "
                         f"--datastore (one of {', '.join(sorted(names))})")
    if chosen not in names:
        raise NotFoundError(f"--datastore {chosen!r} is not in datacenter {dc.name} (it has "
                            f"{', '.join(sorted(names))})")
    return Placement(dc, inventory.datacenter_path(session, target_folder, target_folder),
                     target_folder, target_pool, target_host, chosen)


def _computes(dc: Any) -> list[Any]:
    found: list[Any] = []

    def walk(folder: Any) -> None:
        for child in folder.childEntity:
            if isinstance(child, vim.ComputeResource):
                found.append(child)
            elif isinstance(child, vim.Folder):
                walk(child)

    walk(dc.hostFolder)
    return found


def _hosts(dc: Any) -> list[Any]:
    return [h for c in _computes(dc) for h in c.host]


def _pools(dc: Any) -> list[Any]:
    found: list[Any] = []

    def walk(pool: Any) -> None:
        found.append(pool)
        for child in pool.resourcePool or []:
            walk(child)

    for compute in _computes(dc):
        walk(compute.resourcePool)
    return found


def name_taken(session: Session, name: str) -> bool:
    """Whether some VM is called ``name`` (restores never reuse a name)."""
    try:
        inventory.find_vm(session, name)
    except NotFoundError:
        return False
    except UsageError:  # several VMs have it
        return True
    return True


def uuid_taken(session: Session, instance_uuid: str) -> str | None:
    """The name of the VM that has ``instance_uuid``, or None."""
    def find() -> str | None:
        vm = session.content.searchIndex.FindByUuid(None, instance_uuid, True, True)
        return str(vm.name) if vm is not None else None
    return session.call(find)


def config_spec(session: Session, saved: dict[str, Any], name: str, where: Placement,
                disk_keys: set[int], network_map: dict[str, str], *,
                keep_identity: bool = False,
                disk_datastores: dict[int, str] | None = None) -> Any:
    """The ``CreateVM_Task`` spec of a new VM like ``saved`` (see the module docstring).
    ``keep_identity``: the saved instance UUID, BIOS UUID and MAC addresses instead of new
    ones; ``disk_datastores``: a datastore per disk key (the others on ``where``'s)."""
    networks = session.call(lambda: {n.name: n for n in where.datacenter.network})
    stores = set(session.call(lambda: [ds.name for ds in where.datacenter.datastore]))
    for key, store in sorted((disk_datastores or {}).items()):
        if key not in disk_keys:
            raise UsageError(f"--disk-datastore {key}={store}: the backup has no disk {key} "
                             f"(it has {', '.join(map(str, sorted(disk_keys)))})")
        if store not in stores:
            raise NotFoundError(f"--disk-datastore {key}={store}: no such datastore in the "
                                f"target datacenter (it has {', '.join(sorted(stores))})")
    hardware = saved.get("hardware") or {}
    changes = []
    devices = hardware.get("device") or []
    for dev in devices:
        kind = str(dev.get("_vimtype", ""))
        if kind.endswith(_CONTROLLERS):
            ctrl = _type(kind)(key=dev["key"], busNumber=dev.get("busNumber", 0))
            if "sharedBus" in dev:
                ctrl.sharedBus = dev["sharedBus"]
            changes.append(vim.vm.device.VirtualDeviceSpec(operation="add", device=ctrl))
    for dev in devices:
        kind = str(dev.get("_vimtype", ""))
        if kind == "vim.vm.device.VirtualDisk" and dev.get("key") in disk_keys:
            store = (disk_datastores or {}).get(dev["key"], where.datastore)
            changes.append(_disk(dev, store))
        elif "macAddress" in dev and kind.startswith("vim.vm.device.Virtual"):
            changes.append(_nic(dev, kind, networks, network_map, keep_identity))
    spec = vim.vm.ConfigSpec(
        name=name, guestId=saved.get("guestId"), version=saved.get("version"),
        numCPUs=hardware.get("numCPU"), numCoresPerSocket=hardware.get("numCoresPerSocket"),
        memoryMB=hardware.get("memoryMB"),
        files=vim.vm.FileInfo(vmPathName=f"[{where.datastore}]"), deviceChange=changes)
    if keep_identity:
        spec.instanceUuid = saved.get("instanceUuid")
        spec.uuid = saved.get("uuid")
    if saved.get("firmware"):
        spec.firmware = saved["firmware"]
    boot = saved.get("bootOptions") or {}
    if boot.get("efiSecureBootEnabled") is not None:
        spec.bootOptions = vim.vm.BootOptions(efiSecureBootEnabled=boot["efiSecureBootEnabled"])
    return spec


def _disk(dev: dict[str, Any], datastore: str) -> Any:
    saved = dev.get("backing") or {}
    capacity = int(dev.get("capacityInBytes") or int(dev.get("capacityInKB", 0)) * 1024)
    backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
        fileName=f"[{datastore}]", diskMode=saved.get("diskMode") or "persistent",
        thinProvisioned=bool(saved.get("thinProvisioned", True)),
        eagerlyScrub=bool(saved.get("eagerlyScrub", False)))
    disk = vim.vm.device.VirtualDisk(key=dev["key"], controllerKey=dev.get("controllerKey"),
                                     unitNumber=dev.get("unitNumber"), backing=backing,
                                     capacityInBytes=capacity, capacityInKB=capacity // 1024)
    return vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create",
                                           device=disk)


def _nic(dev: dict[str, Any], kind: str, networks: dict[str, Any],
         network_map: dict[str, str], keep_mac: bool) -> Any:
    old = (dev.get("backing") or {}).get("deviceName") or (
        (dev.get("deviceInfo") or {}).get("summary") or "")
    new = network_map.get(old, old)
    network = networks.get(new)
    if network is None:
        raise NotFoundError(f"network {new!r} of NIC {dev.get('key')} is not in the target "
                            f"datacenter (it has {', '.join(sorted(networks)) or 'none'}): "
                            f"add --network-map {old}=NETWORK")
    if isinstance(network, vim.dvs.DistributedVirtualPortgroup):
        backing = vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
            port=vim.dvs.PortConnection(
                portgroupKey=network.key,
                switchUuid=network.config.distributedVirtualSwitch.uuid))
    else:
        backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName=new,
                                                                        network=network)
    nic = _type(kind)(key=dev["key"], backing=backing, addressType="generated",
                      connectable=vim.vm.device.VirtualDevice.ConnectInfo(
                          startConnected=True, allowGuestControl=True, connected=False))
    if keep_mac and dev.get("macAddress"):
        nic.addressType, nic.macAddress = "manual", dev["macAddress"]
    return vim.vm.device.VirtualDeviceSpec(operation="add", device=nic)


def create(session: Session, where: Placement, spec: Any) -> Any:
    """``CreateVM_Task`` in the folder; the new ``vim.VirtualMachine``."""
    return tasks.run_task(session, lambda: where.folder.CreateVM_Task(
        config=spec, pool=where.pool, host=where.host), f"creating VM {spec.name!r}",
        busy_wait=0.0)


def vm_disks(session: Session, vm: Any) -> list[DiskInfo]:
    return disks_of(session.call(lambda: vm.config.hardware.device))


def vm_facts(session: Session, vm: Any) -> dict[str, Any]:
    """What the result reports of the new VM."""
    return session.call(lambda: {"moref": vm._moId, "instance_uuid": vm.config.instanceUuid,
                                 "vmx": vm.config.files.vmPathName})


def power_on(session: Session, vm: Any) -> None:
    tasks.run_task(session, lambda: vm.PowerOnVM_Task(), "powering on the restored VM")


def destroy(session: Session, vm: Any) -> None:
    """Remove a VM this restore created (and its files), after a failure."""
    try:
        tasks.run_task(session, lambda: vm.Destroy_Task(), "removing the half-restored VM")
    except VSphereError:
        raise
    except Exception as exc:  # pyvmomi faults not mapped: still say what is left
        raise VSphereError(f"could not remove the half-restored VM: {exc}") from exc


def original_datastore(saved: dict[str, Any]) -> str | None:
    vmx = (saved.get("files") or {}).get("vmPathName")
    try:
        return split_datastore_path(vmx)[0] if vmx else None
    except ValueError:
        return None


def existing_disk(session: Session, spec: str, key: int) -> tuple[Any, DiskInfo, str]:
    """The VM ``spec`` names, its disk ``key`` and its datacenter path, for writing a
    backed-up disk onto it: UsageError unless the VM is powered off and the disk is a base
    disk (a snapshot's delta on top would no longer match what was written below it)."""
    vm = inventory.find_vm(session, spec)
    props = inventory.properties(session, vm, ["name", "runtime.powerState",
                                               "config.hardware.device", "snapshot", "parent"])
    if props["runtime.powerState"] != "poweredOff":
        raise UsageError(f"VM {props['name']!r} is {props['runtime.powerState']}: power it "
                         "off before writing a disk onto it")
    if props["snapshot"] is not None:
        raise UsageError(f"VM {props['name']!r} has snapshots: writing its base disk would "
                         "corrupt them; delete them first")
    disks = {d.key: d for d in disks_of(props["config.hardware.device"] or [])}
    if key not in disks:
        raise NotFoundError(f"VM {props['name']!r} has no disk {key}; its disks are "
                            f"{', '.join(map(str, sorted(disks))) or 'none'}")
    datacenter = session.call(lambda: inventory.datacenter_path(session, vm, props["parent"]))
    return vm, disks[key], datacenter
