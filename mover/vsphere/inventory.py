"""Finding a VM by name, MoRef, instance UUID or inventory path, and its datacenter."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mover.errors import NotFoundError, UnsupportedVMError, UsageError
from mover.vsphere import names
from mover.vsphere.disks import DiskInfo, disks_of
from mover.vsphere.names import unescape
from mover.vsphere.session import Session
from mover.vsphere.vmomi import vim, vmodl

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_MOREF = re.compile(r"^vm-\d+$")


@dataclass(frozen=True, slots=True)
class VMFacts:
    """What a backup needs to know of its VM. ``ref`` is the pyvmomi object, handed back to
    ``mover.vsphere`` functions only."""

    ref: Any
    name: str                   # as the user knows it (unescaped: ``mover.vsphere.names``)
    moref: str
    instance_uuid: str
    datacenter: str             # inventory path of the datastores' datacenter (``dcPath``)
    encrypted: bool             # config.keyId: the VM's home and disks are encrypted
    disks: tuple[DiskInfo, ...]  # of the running VM (the snapshot's are read later)
    datastores: tuple[str, ...] = ()  # names of the VM's datastores, as the API spells them
    template: bool = False      # config.template: a template cannot be snapshotted
    host: str = ""              # runtime.host's MoRef: the ESXi host whose limits apply


def facts(session: Session, spec: str) -> VMFacts:
    """Find the VM ``spec`` names (see ``find_vm``) and read its facts."""
    ref = find_vm(session, spec)
    # one round trip for what we need (reading ref.config would fetch and decode all of it)
    props = properties(session, ref, ["name", "config.instanceUuid", "config.keyId",
                                      "config.hardware.device", "parent", "parentVApp",
                                      "datastore", "config.template", "runtime.host"])
    if props["config.instanceUuid"] is None:
        raise UnsupportedVMError(f"VM {spec!r} has no configuration (is it being created?)")
    stores = list(props["datastore"] or [])
    store_names = tuple(session.call(lambda: [ds.name for ds in stores]))
    # /folder wants the datacenter of the datastore (dcPath), and that is where a VM's
    # datastores are; the VM's own parent is no guide: a VM in a vApp has none
    start = stores[0] if stores else props["parent"] or props["parentVApp"]
    return VMFacts(ref, unescape(props["name"]), ref._moId, props["config.instanceUuid"],
                   session.call(lambda: datacenter_path(session, ref, start)),
                   props["config.keyId"] is not None,
                   tuple(disks_of(props["config.hardware.device"] or [], store_names)), store_names,
                   bool(props["config.template"]),
                   props["runtime.host"]._moId if props.get("runtime.host") is not None else "")


def find_vm(session: Session, spec: str) -> Any:
    """The ``vim.VirtualMachine`` that ``spec`` names: an instance UUID, a MoRef (``vm-42``),
    an inventory path (``DC0/vm/web01``) or a name that must be unique."""
    return session.call(lambda: _find(session, spec))


def _find(session: Session, spec: str) -> Any:
    content = session.content
    if _UUID.match(spec):
        vm = content.searchIndex.FindByUuid(None, spec, True, True)
        if vm is not None:
            return vm
    if _MOREF.match(spec):
        vm = vim.VirtualMachine(spec, session.service_instance._stub)
        try:
            vm.name  # noqa: B018 - the property read proves the MoRef exists
            return vm
        except vmodl.fault.ManagedObjectNotFound:
            pass
    if "/" in spec:
        vm = content.searchIndex.FindByInventoryPath(spec)
        if isinstance(vm, vim.VirtualMachine):
            return vm
    matches = [vm for vm, name in _all_vm_names(content) if names.matches(name, spec)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        ids = ", ".join(vm._moId for vm in matches)
        raise UsageError(f"{len(matches)} VMs are named {spec!r} ({ids}): name one by MoRef "
                         "or instance UUID")
    raise NotFoundError(f"no VM {spec!r} on {session.address.host}: give its exact name, "
                        "MoRef (vm-N), instance UUID or inventory path")


def _all_vm_names(content: Any) -> list[tuple[Any, str]]:
    """Every VM with its name in one PropertyCollector round trip."""
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(
                obj=view, skip=True,
                selectSet=[vmodl.query.PropertyCollector.TraversalSpec(
                    name="view", path="view", skip=False, type=vim.view.ContainerView)])],
            propSet=[vmodl.query.PropertyCollector.PropertySpec(
                type=vim.VirtualMachine, pathSet=["name"])])
        result = content.propertyCollector.RetrieveContents([spec])
        return [(obj.obj, obj.propSet[0].val) for obj in result if obj.propSet]
    finally:
        view.Destroy()


def properties(session: Session, obj: Any, paths: list[str]) -> dict[str, Any]:
    """Some properties of one managed object in one PropertyCollector round trip (reading
    ``vm.config.x`` through pyVmomi fetches and decodes the whole ``config``, each time)."""
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=obj, skip=False)],
        propSet=[vmodl.query.PropertyCollector.PropertySpec(type=type(obj), pathSet=paths)])
    result = session.call(lambda: session.content.propertyCollector.RetrieveContents([spec]))
    found = {prop.name: prop.val for item in result or [] for prop in item.propSet or []}
    return {path: found.get(path) for path in paths}


def exists(session: Session, vm: Any) -> bool:
    """Whether ``vm`` is still in the inventory."""
    try:
        session.call(lambda: vm.name)
    except vmodl.fault.ManagedObjectNotFound:
        return False
    return True


def datacenter_path(session: Session, vm: Any, parent: Any = None) -> str:
    """The datacenter's inventory path as ``/folder``'s ``dcPath`` wants it (``DC0`` or
    ``Folder/DC0`` for a datacenter inside folders), names spelled as the API returns them.
    ``parent``: where to start looking up (one of the VM's datastores, or its parent);
    the VM's parent when not given."""
    root = session.content.rootFolder
    node = parent if parent is not None else vm.parent
    while node is not None and not isinstance(node, vim.Datacenter):
        node = node.parent
    if node is None:
        raise NotFoundError(f"VM {vm.name!r} is in no datacenter")
    parts = [node.name]
    parent = node.parent
    while isinstance(parent, vim.Folder) and parent != root:
        parts.append(parent.name)
        parent = parent.parent
    return "/".join(reversed(parts))
