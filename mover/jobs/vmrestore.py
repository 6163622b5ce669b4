"""``mover restore --to-vsphere``: a backup back into vSphere as a new VM.

Order, so that a failure leaves nothing half-made that looks whole:

1. Check the backup has a saved configuration and read every disk index (a damaged index
   fails here, before anything exists in vSphere).
2. Refuse a name any VM has, and a VM directory that already exists on the datastore.
3. ``CreateVM_Task`` from the saved configuration (``mover.vsphere.vmcreate``): the host
   creates each disk empty, thin or thick as saved, at the original size and key.
4. Write each disk's bytes with ``/folder`` PUT of the flat file the new disk's descriptor
   names (read, never guessed), streaming the restore copy loop's ordered blocks; then the
   saved NVRAM file.
5. Power on if asked.

Any failure after step 3 destroys the new VM (and with it its files) and says so. Why
``/folder`` PUT: it needs nothing but the session, and reads back with the same endpoint; it
works where a datastore has plain files (VMFS, NFS), not on vSAN or vVols, which the result
states; an ``ImportVApp`` lease (streamOptimized upload) is the path for those, not built yet.
"""

from __future__ import annotations

import base64
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mover import clock
from mover.errors import MoverError, NotFoundError, UnsupportedVMError, UsageError
from mover.index import FixedIndex
from mover.jobs.restore import Progress, copy_blocks
from mover.pipeline.upload import FolderClient, FolderUpload, folder_path
from mover.repo import Repository
from mover.restoreplan import all_blocks
from mover.vmdk import Unservable, data_file
from mover.vsphere import vmcreate
from mover.vsphere.address import ServerAddress, TlsPolicy
from mover.vsphere.disks import DiskInfo
from mover.vsphere.faults import translate
from mover.vsphere.session import COOKIE_NAME, Credentials, Session
from mover.vsphere.tls import context_for

METHOD = "folder-put"
WHY = ("/folder PUT of each disk's flat file: the datastore holds plain files (VMFS, NFS) "
       "and it needs only the API session; vSAN and vVols datastores need an ImportVApp "
       "lease, which this mover does not have yet")


@dataclass(frozen=True, slots=True)
class VSphereRestoreSettings:
    server: ServerAddress
    credentials: Credentials
    repo: Path
    backup_id: str
    tls: TlsPolicy = field(default_factory=TlsPolicy)
    name: str | None = None              # default: the backed-up VM's name
    datastore: str | None = None         # default: the original datastore, if it exists
    folder: str | None = None            # inventory path of a VM folder
    resource_pool: str | None = None
    host: str | None = None
    network_map: tuple[tuple[str, str], ...] = ()
    power_on: bool = False
    keep_identity: bool = False          # the saved instance/BIOS UUIDs and MACs, not new ones
    disk_datastores: tuple[tuple[int, str], ...] = ()   # disk key -> datastore
    workers: int = 4


@dataclass(slots=True)
class VSphereRestoreResult:
    backup_id: str
    vm_name: str
    vm_moref: str
    vm_instance_uuid: str
    vmx: str
    method: str
    method_reason: str
    disks: list[dict[str, Any]]
    nvram: bool
    powered_on: bool
    seconds: float


def network_map(pairs: list[str]) -> tuple[tuple[str, str], ...]:
    """``--network-map OLD=NEW`` values as pairs; UsageError for one without ``=``."""
    result = []
    for pair in pairs:
        old, sep, new = pair.partition("=")
        if not sep or not old or not new:
            raise UsageError(f"--network-map {pair!r} must be OLD=NEW, e.g. 'VM Network=DR'")
        result.append((old, new))
    return tuple(result)


def disk_datastores(pairs: list[str]) -> tuple[tuple[int, str], ...]:
    """``--disk-datastore KEY=DATASTORE`` values as pairs; UsageError for a malformed one."""
    result = []
    for pair in pairs:
        key, sep, store = pair.partition("=")
        if not sep or not key.strip().isdigit() or not store:
            raise UsageError(f"--disk-datastore {pair!r} must be KEY=DATASTORE, e.g. "
                             "'2001=fast-ssd'")
        result.append((int(key), store))
    return tuple(result)


def run_vsphere_restore(settings: VSphereRestoreSettings) -> VSphereRestoreResult:
    started = clock.monotonic()
    repo = Repository.open(settings.repo, create=False)
    with repo.reading():
        record = repo.get_backup(settings.backup_id)
        saved = record.vm_config.get("config")
        if not saved:
            raise UsageError(f"backup {record.id} has no saved VM configuration (made by a "
                             "mover before 0.x kept it): restore its disks with --output and "
                             "attach them to a VM by hand")
        indexes = {d.key: repo.read_index(record, d.key) for d in record.disks}
        name = settings.name or record.vm_name
        session = Session(settings.server, settings.credentials, settings.tls)
        session.login()
        try:
            result = _restore(repo, session, settings, saved, record.vm_config, indexes, name)
        except Exception as exc:
            mapped = translate(exc)
            if mapped is None:
                raise
            raise mapped from exc
        finally:
            session.logout()
    result.backup_id = record.id
    result.seconds = clock.monotonic() - started
    return result


@dataclass(slots=True)
class DiskIntoVMResult:
    backup_id: str
    disk_key: int
    vm_name: str
    file: str
    data_file: str
    capacity: int
    bytes_sent: int
    method: str
    seconds: float


def run_disk_into_vm(settings: VSphereRestoreSettings, disk_key: int,
                     vm: str) -> DiskIntoVMResult:
    """Write disk ``disk_key`` of the backup onto the same disk of the existing, powered-off
    VM ``vm`` (same size), by ``/folder`` PUT of its flat file. A failure leaves that disk
    partially written, and the error says so."""
    started = clock.monotonic()
    repo = Repository.open(settings.repo, create=False)
    with repo.reading():
        record = repo.get_backup(settings.backup_id)
        if not any(d.key == disk_key for d in record.disks):
            keys = ", ".join(str(d.key) for d in record.disks)
            raise NotFoundError(f"backup {record.id} has no disk {disk_key}; its disks are "
                                f"{keys}")
        index = repo.read_index(record, disk_key)
        session = Session(settings.server, settings.credentials, settings.tls)
        session.login()
        try:
            _ref, disk, datacenter = vmcreate.existing_disk(session, vm, disk_key)
            if disk.capacity != index.capacity:
                raise UsageError(f"disk {disk_key} of VM {vm!r} holds {disk.capacity} bytes, "
                                 f"the backup's {index.capacity}: they must be the same size")
            context = context_for(settings.tls) if settings.server.scheme == "https" else None
            client = FolderClient(settings.server.base_url, COOKIE_NAME, session.cookie,
                                  context)
            flat = _flat_file(client, disk, datacenter)
            target = FolderUpload(client, folder_path(disk.datastore, flat, datacenter),
                                  index.capacity)
            done = Progress()
            try:
                copy_blocks(repo, index, all_blocks(index), target, settings.workers, done)
                target.commit()
            except BaseException as exc:
                target.abort()
                if isinstance(exc, MoverError):
                    raise type(exc)(f"{exc.detail}; disk {disk_key} of VM {vm!r} is PARTIALLY "
                                    f"WRITTEN (up to offset {done.below}): run the same "
                                    "restore again before using it") from exc
                raise
        except Exception as exc:
            mapped = None if isinstance(exc, MoverError) else translate(exc)
            if mapped is None:
                raise
            raise mapped from exc
        finally:
            session.logout()
    return DiskIntoVMResult(record.id, disk_key, vm, disk.file,
                            f"[{disk.datastore}] {flat}", index.capacity, done.bytes, METHOD,
                            clock.monotonic() - started)


def _restore(repo: Repository, session: Session, settings: VSphereRestoreSettings,
             saved: dict[str, Any], vm_config: dict[str, Any],
             indexes: dict[int, FixedIndex], name: str) -> VSphereRestoreResult:
    where = vmcreate.placement(session, settings.datastore, settings.folder,
                               settings.resource_pool, settings.host,
                               vmcreate.original_datastore(saved))
    if vmcreate.name_taken(session, name):
        raise UsageError(f"a VM named {name!r} exists; restore refuses to touch it: give "
                         "--name NEW")
    context = context_for(settings.tls) if settings.server.scheme == "https" else None
    client = FolderClient(settings.server.base_url, COOKIE_NAME, session.cookie, context)
    vmx = folder_path(where.datastore, f"{name}/{name}.vmx", where.datacenter_path)
    if client.get(vmx) is not None:
        raise UsageError(f"[{where.datastore}] {name}/{name}.vmx exists (a VM not in the "
                         "inventory?); restore refuses to overwrite files: give --name NEW "
                         "or another --datastore")
    if settings.keep_identity:
        uuid = str(saved.get("instanceUuid") or "")
        holder = vmcreate.uuid_taken(session, uuid) if uuid else None
        if holder is not None:
            raise UsageError(f"--keep-identity: VM {holder!r} still has instance UUID {uuid} "
                             "(and the MACs); keeping the identity is for bringing back a VM "
                             "that is gone: remove or rename that VM's identity first, or "
                             "restore without --keep-identity")
    spec = vmcreate.config_spec(session, saved, name, where, set(indexes),
                                dict(settings.network_map),
                                keep_identity=settings.keep_identity,
                                disk_datastores=dict(settings.disk_datastores))
    vm = vmcreate.create(session, where, spec)
    try:
        disks = _write_disks(repo, session, client, vm, where.datacenter_path, indexes,
                             settings.workers)
        facts = vmcreate.vm_facts(session, vm)
        nvram = _write_nvram(client, vm_config.get("nvram"), facts["vmx"],
                             where.datacenter_path)
        if settings.power_on:
            vmcreate.power_on(session, vm)
    except BaseException as exc:
        try:
            vmcreate.destroy(session, vm)
            left = f"the new VM {name!r} and its files were removed"
        except MoverError as cleanup:
            left = f"the new VM {name!r} could NOT be removed ({cleanup}): delete it by hand"
        error = exc if isinstance(exc, MoverError) else translate(exc)
        if error is not None:
            raise type(error)(f"{error.detail}; {left}") from exc
        raise
    return VSphereRestoreResult("", name, facts["moref"], facts["instance_uuid"], facts["vmx"],
                                METHOD, WHY, disks, nvram, settings.power_on, 0.0)


def _write_disks(repo: Repository, session: Session, client: FolderClient, vm: Any,
                 datacenter: str, indexes: dict[int, FixedIndex],
                 workers: int) -> list[dict[str, Any]]:
    created = {d.key: d for d in vmcreate.vm_disks(session, vm)}
    written = []
    for key, index in sorted(indexes.items()):
        disk = created.get(key)
        if disk is None or disk.capacity != index.capacity:
            raise UnsupportedVMError(f"the new VM's disk {key} is "
                                     f"{'missing' if disk is None else f'{disk.capacity} bytes'}"
                                     f", the backup's {index.capacity}: the host did not create "
                                     "it as asked")
        flat = _flat_file(client, disk, datacenter)
        target = FolderUpload(client, folder_path(disk.datastore, flat, datacenter),
                              index.capacity)
        done = Progress()
        try:
            copy_blocks(repo, index, all_blocks(index), target, workers, done)
            target.commit()
        except BaseException:
            target.abort()
            raise
        written.append({"key": key, "file": disk.file, "data_file": f"[{disk.datastore}] {flat}",
                        "capacity": index.capacity, "bytes_sent": done.bytes})
    return written


def _flat_file(client: FolderClient, disk: DiskInfo, datacenter: str) -> str:
    text = client.get(folder_path(disk.datastore, disk.descriptor_path, datacenter))
    if text is None:
        raise UnsupportedVMError(f"the new disk {disk.key}'s descriptor {disk.file} is not on "
                                 "the datastore")
    try:
        return data_file(text.decode("utf-8", errors="replace"), disk.descriptor_path,
                         disk.capacity)
    except Unservable as exc:
        raise UnsupportedVMError(f"the new disk {disk.key} ({disk.file}) has no flat file "
                                 f"/folder can write: {exc}; {WHY}") from exc


def _write_nvram(client: FolderClient, nvram: dict[str, Any] | None, vmx: str,
                 datacenter: str) -> bool:
    if not nvram:
        return False
    datastore, _, path = vmx.partition("] ")
    target = posixpath.join(posixpath.dirname(path), posixpath.basename(path)[:-4] + ".nvram")
    client.put(folder_path(datastore.lstrip("["), target, datacenter),
               base64.b64decode(nvram["base64"]))
    return True
