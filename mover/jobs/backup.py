"""The backup coordinator: one VM, every disk, one committed backup or nothing.

Order (what real tools learned the hard way): snapshot, read change IDs from the snapshot,
query changed areas, copy, remove the snapshot, commit. The snapshot is removed on every
path the process survives; the backup record is written only after every chunk and index is
durable, so an interrupted run leaves nothing a later run trusts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import aiohttp

from mover import clock
from mover.aio import first_error
from mover.errors import MoverError, UnsupportedVMError
from mover.extents import Extent, align, plan_reads, total
from mover.index import FixedIndex
from mover.jobs.control import ControlPlane
from mover.jobs.modes import Decision, decide
from mover.jobs.reporting import BackupResult, DiskResult, Reporter
from mover.jobs.settings import BackupSettings
from mover.pipeline.copy import copy_disk
from mover.pipeline.folder import FolderTransport, folder_url, ssl_setting
from mover.pipeline.process import BlockProcessor
from mover.repo import BackupRecord, DiskRecord, Repository
from mover.vsphere import cbt, inventory, snapshots
from mover.vsphere.disks import DiskInfo, disks_of
from mover.vsphere.session import COOKIE_NAME, Session

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VMFacts:
    ref: Any
    name: str
    moref: str
    instance_uuid: str
    datacenter: str


async def run_backup(settings: BackupSettings, reporter: Reporter) -> BackupResult:
    """Back up ``settings.vm`` into ``settings.repo``. Raises a MoverError on failure, after
    removing the snapshot it created."""
    started = clock.monotonic()
    repo = await asyncio.to_thread(Repository.open, settings.repo, True, settings.block_size)
    await asyncio.to_thread(repo.clean_stale)
    control = ControlPlane()
    session = Session(settings.server, settings.credentials, settings.tls)
    try:
        await control.run(session.login)
        vm = await control.run(_facts, session, settings.vm)
        result = BackupResult(status="running", backup_id=None, vm=vm.name)
        result.orphans_removed = await control.run(snapshots.remove_orphans, session, vm.ref)
        for name in result.orphans_removed:
            reporter.note(f"removed snapshot {name!r} left by an earlier mover run")
        stun = await control.run(cbt.ensure_enabled, session, vm.ref, settings.enable_cbt)
        if stun is not None:
            reporter.note(f"enabled CBT on {vm.name!r} (stun/unstun cycle {stun:.1f} s)")
            result.snapshot["cbt_enable_seconds"] = stun
        await _backup_with_snapshot(settings, reporter, repo, control, session, vm, result)
    finally:
        await control.run(session.logout)
        control.close()
    result.seconds = clock.monotonic() - started
    return result


def _facts(session: Session, spec: str) -> VMFacts:
    ref = inventory.find_vm(session, spec)
    config = session.call(lambda: ref.config)
    if config is None:
        raise UnsupportedVMError(f"VM {spec!r} has no configuration (is it being created?)")
    return VMFacts(ref, ref.name, ref._moId, config.instanceUuid,
                   session.call(lambda: inventory.datacenter_path(session, ref)))


async def _backup_with_snapshot(settings: BackupSettings, reporter: Reporter, repo: Repository,
                                control: ControlPlane, session: Session, vm: VMFacts,
                                result: BackupResult) -> None:
    backup_id = repo.new_backup_id()
    created = clock.iso()
    name = f"{snapshots.PREFIX}{backup_id}"
    snapshot: Any = None
    pending = None
    try:
        snapshot, create_s = await control.run(
            snapshots.create, session, vm.ref, name, f"mover backup {backup_id}.",
            settings.quiesce)
        result.snapshot.update(name=name, moref=snapshot._moId, create_seconds=create_s)
        reporter.note(f"snapshot {name!r} created in {create_s:.2f} s")
        devices = await control.run(session.call, lambda: snapshot.config.hardware.device)
        disks = [d for d in disks_of(devices) if _usable(d, result)]
        parent = await asyncio.to_thread(repo.latest, vm.instance_uuid)
        result.parent = parent.id if parent else None
        pending = await asyncio.to_thread(repo.begin, vm.instance_uuid, backup_id)
        records = await _copy_disks(settings, reporter, repo, control, session, vm, snapshot,
                                    disks, parent, pending, result)
    except BaseException:
        if pending is not None:
            await asyncio.to_thread(pending.abort)
        raise
    finally:
        if snapshot is not None:
            await _remove_snapshot(control, session, vm, snapshot, name, result, reporter)
    record = BackupRecord(
        id=backup_id, vm_name=vm.name, vm_instance_uuid=vm.instance_uuid, vm_moref=vm.moref,
        created=created, finished=clock.iso(), parent=result.parent,
        snapshot=dict(result.snapshot), disks=records)
    await asyncio.to_thread(pending.commit, record)
    result.status = "committed"
    result.backup_id = backup_id


def _usable(disk: DiskInfo, result: BackupResult) -> bool:
    """Independent disks are not in snapshots; a delta backing cannot be read raw."""
    if disk.independent:
        result.skipped_disks.append({"key": disk.key, "label": disk.label,
                                     "reason": "independent disks are not in snapshots"})
        return False
    if disk.is_delta:
        raise UnsupportedVMError(
            f"disk {disk.key} ({disk.label}) of the backup snapshot is a delta of an earlier "
            "snapshot; the datastore transport reads flat base disks only: remove or "
            "consolidate the VM's other snapshots and retry")
    return True


async def _remove_snapshot(control: ControlPlane, session: Session, vm: VMFacts, snapshot: Any,
                           name: str, result: BackupResult, reporter: Reporter) -> None:
    """Remove the backup snapshot, also while the job is being cancelled: the removal runs
    to its end even if the caller is cancelled meanwhile."""
    removal = asyncio.ensure_future(control.run(snapshots.remove, session, snapshot, name))
    try:
        seconds = await asyncio.shield(removal)
    except asyncio.CancelledError:
        with contextlib.suppress(MoverError):
            await removal
        raise
    except MoverError as exc:
        result.snapshot["removed"] = False
        result.warnings.append(f"snapshot {name!r} was not removed: {exc}; remove it by hand "
                               "or let the next mover run remove it")
        return
    result.snapshot.update(removed=True, remove_seconds=seconds)
    reporter.note(f"snapshot {name!r} removed in {seconds:.2f} s")
    if await control.run(snapshots.consolidation_needed, session, vm.ref):
        result.warnings.append(f"vSphere reports that VM {vm.name!r} needs disk consolidation")


async def _copy_disks(settings: BackupSettings, reporter: Reporter, repo: Repository,
                      control: ControlPlane, session: Session, vm: VMFacts, snapshot: Any,
                      disks: list[DiskInfo], parent: BackupRecord | None, pending: Any,
                      result: BackupResult) -> list[DiskRecord]:
    block_size = repo.config.block_size
    processor = BlockProcessor(repo.chunks, block_size, repo.config.level)
    tls = settings.tls
    ssl_ = ssl_setting(tls.insecure, tls.thumbprint_bytes) if settings.server.scheme == "https" \
        else True
    cookie = await control.run(lambda: session.cookie)
    limit = asyncio.Semaphore(settings.parallel_disks)
    per_disk = settings.pipeline.fetchers
    connector = aiohttp.TCPConnector(limit=per_disk * settings.parallel_disks)
    headers = {"Cookie": f"{COOKIE_NAME}={cookie}"}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)
    records: dict[int, DiskRecord] = {}
    with ThreadPoolExecutor(settings.pipeline.workers, thread_name_prefix="mover-cpu") as pool:
        async with aiohttp.ClientSession(connector=connector, headers=headers,
                                         timeout=timeout) as http:

            async def one(disk: DiskInfo) -> None:
                async with limit:
                    decision = decide(disk, parent, settings.full, block_size)
                    areas, decision = await _areas(control, session, vm, snapshot, disk, decision)
                    index = (await asyncio.to_thread(repo.read_index, parent, disk.key)
                             if decision.mode == "incremental" and parent is not None
                             else FixedIndex(disk.capacity, block_size))
                    reads = plan_reads(align(areas, block_size, disk.capacity), block_size,
                                       settings.pipeline.max_read)
                    transport = FolderTransport(
                        http, folder_url(settings.server.base_url, disk.datastore,
                                         disk.flat_path, vm.datacenter),
                        disk.capacity, per_disk, ssl_)
                    reporter.disk_started(disk.key, disk.label, decision.mode, total(reads))
                    stats = await copy_disk(
                        transport, reads, index, processor, pool, settings.pipeline,
                        lambda n: reporter.disk_progress(disk.key, n))
                    await asyncio.to_thread(pending.write_index, disk.key, index)
                    done = DiskResult(
                        key=disk.key, label=disk.label, mode=decision.mode,
                        reason=decision.reason, capacity=disk.capacity,
                        changed_bytes=total(areas), bytes_read=stats.bytes_read,
                        bytes_stored=stats.bytes_stored, zero_blocks=stats.zero_blocks,
                        new_chunks=stats.new_chunks, dedup_chunks=stats.dedup_chunks,
                        seconds=stats.seconds)
                    result.disks.append(done)
                    reporter.disk_done(disk.key, done)
                    records[disk.key] = DiskRecord(
                        key=disk.key, label=disk.label, uuid=disk.uuid, capacity=disk.capacity,
                        file=disk.file, change_id=disk.change_id, mode=decision.mode,
                        reason=decision.reason, block_size=block_size,
                        changed_bytes=done.changed_bytes, bytes_read=stats.bytes_read,
                        bytes_stored=stats.bytes_stored, blocks=len(index),
                        zero_blocks=index.zero_blocks(), new_chunks=stats.new_chunks,
                        dedup_chunks=stats.dedup_chunks, seconds=stats.seconds)

            try:
                async with asyncio.TaskGroup() as group:
                    for disk in disks:
                        group.create_task(one(disk))
            except BaseExceptionGroup as errors:
                raise first_error(errors) from None
    result.disks.sort(key=lambda d: d.key)
    return [records[k] for k in sorted(records)]


async def _areas(control: ControlPlane, session: Session, vm: VMFacts, snapshot: Any,
                 disk: DiskInfo, decision: Decision) -> tuple[list[Extent], Decision]:
    """The areas to read; an incremental whose change ID the host rejects becomes a full."""
    if decision.since is None:  # no CBT on this disk: read it all
        return [Extent(0, disk.capacity)], decision
    try:
        areas = await control.run(cbt.changed_areas, session, vm.ref, snapshot, disk.key,
                                  disk.capacity, decision.since)
        return areas, decision
    except cbt.ChangeIdRejected as exc:
        if decision.mode != "incremental":
            raise
        log.warning("%s", exc)
        full = Decision("full", f"the host rejected the previous change ID ({exc})", "*", None)
        areas = await control.run(cbt.changed_areas, session, vm.ref, snapshot, disk.key,
                                  disk.capacity, "*")
        return areas, full

