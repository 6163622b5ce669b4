"""The backup coordinator: one VM, every disk, one committed backup or nothing.

Order (what real tools learned the hard way): snapshot, read change IDs from the snapshot,
query changed areas, copy, remove the snapshot, commit. The snapshot is removed on every
path the process survives; the backup record is written only after every chunk and index is
durable, so an interrupted run leaves nothing a later run trusts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import Any

from mover import clock
from mover.aio import finish, first_error
from mover.errors import MoverError, RepositoryError, UnsupportedVMError
from mover.extents import total
from mover.fetchplan import skip_zero_blocks
from mover.jobs import canary, eligibility, orphans
from mover.jobs.dataplane import DataPlane
from mover.jobs.keepalive import SessionCookie
from mover.jobs.planning import DiskPlan, Planner
from mover.jobs.reporting import BackupResult, DiskResult, Reporter
from mover.jobs.resume import Checkpoint, disk_checkpoint
from mover.jobs.routes import Route, choose, needs_descriptor
from mover.jobs.settings import BackupSettings
from mover.jobs.shared import Shared, connected
from mover.jobs.snapshot import BackupSnapshot, SnapshotPolicy
from mover.jobs.vmconfig import saved_vm_config
from mover.pipeline.copy import CopyStats, PipelineSettings, copy_disk
from mover.pipeline.transport import Transport
from mover.repo import BackupRecord, DiskRecord
from mover.repo.pending import PendingBackup
from mover.vmdk import Unservable, data_file
from mover.vsphere import cbt, inventory, snapshots
from mover.vsphere.disks import DiskInfo, snapshot_disks
from mover.vsphere.faults import ObjectGone
from mover.vsphere.inventory import VMFacts

log = logging.getLogger(__name__)


async def run_backup(settings: BackupSettings, reporter: Reporter) -> BackupResult:
    """Back up ``settings.vm`` into ``settings.repo``. Raises a MoverError on failure, after
    removing the snapshot it created."""
    started = clock.monotonic()
    async with connected(settings) as shared:
        result = await backup_vm(shared, settings, reporter)
    result.seconds = clock.monotonic() - started
    return result


async def backup_vm(shared: Shared, settings: BackupSettings, reporter: Reporter) -> BackupResult:
    """Back up ``settings.vm`` with what the process shares (``mover.jobs.shared``): the one
    VM of ``mover backup`` or one of the VMs of a job. Raises a MoverError on failure, after
    removing the snapshot it created."""
    if shared.tls is not None:   # the data plane pins what the login's pin accepted
        settings = dataclasses.replace(settings, tls=shared.tls)
    vm = await shared.control.run(inventory.facts, shared.session, settings.vm)
    run = BackupRun(settings, reporter, shared, vm)
    run.result.warnings.extend(shared.warnings)
    try:
        await run.prepare()
        await run.execute()
    except MoverError as exc:
        # every error of the run names its VM (and, from _copy_disk, its disk) in the JSON
        # result's error.fields
        exc.fields.setdefault("vm", vm.name)
        raise
    return run.result


def refuse_encrypted(vm: VMFacts, disks: list[DiskInfo] | tuple[DiskInfo, ...]) -> None:
    """``/folder`` serves an encrypted disk's files as they are: ciphertext. Until a
    transport that decrypts (VDDK over NBD) exists, such a VM is refused, not backed up as
    noise."""
    encrypted = [d for d in disks if d.encrypted and not d.independent]
    if vm.encrypted or encrypted:
        what = (f"disk {encrypted[0].key} ({encrypted[0].label}) is encrypted" if encrypted
                else "the VM is encrypted (config.keyId)")
        raise UnsupportedVMError(
            f"VM {vm.name!r}: {what} (VM encryption): the datastore transport would read "
            "ciphertext, not the disk; mover cannot back up encrypted VMs until it has a "
            "transport that decrypts (VDDK/NBD): exclude this VM or decrypt it",
            vm=vm.name, disk=encrypted[0].key if encrypted else None)


class BackupRun:
    """The state of one backup of one VM while it runs."""

    def __init__(self, settings: BackupSettings, reporter: Reporter, shared: Shared,
                 vm: VMFacts) -> None:
        self.settings = settings
        self.reporter = reporter
        self.shared = shared
        self.repo = shared.repo
        self.control = shared.control
        self.session = shared.session
        self.vm = vm
        self.result = BackupResult(status="running", backup_id=None, vm=vm.name)
        self.backup_id = self.repo.new_backup_id()
        self.snapshot_name = f"{snapshots.PREFIX}{self.backup_id}"
        self.created = clock.stamp()
        self.resuming: Checkpoint | None = None
        self.vm_config: dict[str, Any] = {}
        self.checkpoint: Checkpoint | None = None
        self._checkpointing = asyncio.Lock()
        self._snapshot_moref = ""

    async def prepare(self) -> None:
        """Refuse what cannot be backed up, pick up an interrupted backup to resume, remove
        mover's orphaned snapshots (refusing if another run's live snapshot is there), and
        make CBT active."""
        refuse_encrypted(self.vm, self.vm.disks)
        eligibility.refuse_unsnapshottable(self.vm)
        await asyncio.to_thread(self._find_resumable)
        spare = self.resuming.snapshot_moref if self.resuming is not None else None
        removed = await orphans.clear(self.control, self.session, self.vm, self.repo, spare,
                                      self.settings.orphan_age)
        self.result.orphans_removed = removed
        for name in removed:
            self.reporter.note(f"removed snapshot {name!r} left by an earlier mover run")
        tag = orphans.owner(self.repo, self.backup_id, self.created).tag()
        stun = await self.control.run(cbt.ensure_enabled, self.session, self.vm.ref,
                                      self.settings.enable_cbt, tag)
        if stun is not None:
            self.reporter.note(f"enabled CBT on {self.vm.name!r} (stun/unstun {stun:.1f} s)")
            self.result.snapshot["cbt_enable_seconds"] = stun

    def _find_resumable(self) -> None:
        """The newest interrupted backup of this VM, if it can be resumed; older ones (and
        one that cannot be resumed) are removed, saying why."""
        latest = self.repo.latest(self.vm.instance_uuid)
        for backup_id, data in self.repo.resumable(self.vm.instance_uuid):
            if self.repo.is_running(backup_id):
                continue  # another run is writing it: neither ours to resume nor to remove
            saved = Checkpoint.from_json(data)
            why = None
            if self.resuming is not None:
                why = "a newer interrupted backup is resumed instead"
            elif saved is None:
                why = "its checkpoint is of another format or damaged"
            elif saved.parent != (latest.id if latest else None):
                why = "another backup of the VM was committed since"
            elif self.settings.full and any(d.mode != "full" for d in saved.disks.values()):
                why = "a full backup was asked for"
            elif self.settings.read_all and any(d.since is not None
                                                for d in saved.disks.values()):
                why = "a full reading every byte was asked for (--read-all)"
            if why is None and saved is not None:
                self.resuming = saved
                self.backup_id, self.created = saved.backup_id, saved.created
                self.snapshot_name = saved.snapshot_name
                self.result.resumed_from = saved.backup_id
                continue
            if self.repo.discard(self.vm.instance_uuid, backup_id):
                self.reporter.note(f"discarded interrupted backup {backup_id}: {why}")

    async def execute(self) -> None:
        """Snapshot, plan and copy every disk, check the snapshot is still there, remove
        it, commit."""
        pending: PendingBackup | None = None
        snap: BackupSnapshot | None = None
        try:
            pending = await self._begin()  # holds the backup's lock before its snapshot exists
            snap = self._backup_snapshot()
            try:
                async with snap:
                    self.reporter.snapshot_created(
                        snap.name, float(self.result.snapshot.get("create_seconds", 0.0)))
                    records = await self._copy(snap, pending)
                    # After the last read, before the commit: a snapshot removed meanwhile
                    # may have had its delta consolidated into the base disk we read.
                    await snap.verify()
            finally:
                if snap.snapshot is not None:
                    self.reporter.snapshot_removed(
                        snap.name, self.result.snapshot.get("removed") is not False,
                        self.result.snapshot.get("remove_seconds"))
        except BaseException as exc:
            vm_gone = isinstance(exc, Exception) and not await self._vm_exists()
            # The VM is gone, or the snapshot vanished (blocks read since may be of a later
            # state of the disk, and a resume would trust them): keep nothing. Otherwise
            # keep what was stored for the next run to resume.
            discard = vm_gone or (isinstance(exc, Exception) and snap is not None and snap.gone)
            if pending is not None:
                await asyncio.to_thread(pending.abort if discard else pending.suspend)
            if vm_gone:
                raise ObjectGone(f"VM {self.vm.name!r} disappeared during the backup (deleted "
                                 f"or unregistered); nothing was committed") from exc
            raise
        record = BackupRecord(
            id=self.backup_id, vm_name=self.vm.name, vm_instance_uuid=self.vm.instance_uuid,
            vm_moref=self.vm.moref, created=self.created, finished=clock.stamp(),
            parent=self.result.parent, snapshot=dict(self.result.snapshot), disks=records,
            vm_config=self.vm_config)
        # A signal that arrives while the record is written comes too late: the commit runs to
        # its end on its thread, and the run reports the committed backup, not an interrupt.
        await finish(asyncio.to_thread(pending.commit, record), too_late=True)
        self.result.status = "committed"
        self.result.backup_id = self.backup_id

    def _backup_snapshot(self) -> BackupSnapshot:
        """The backup snapshot: the interrupted run's if it still exists, else a new one."""
        tag = orphans.owner(self.repo, self.backup_id, self.created).tag()
        return BackupSnapshot(
            self.control, self.session, self.vm, self.snapshot_name,
            f"mover backup {self.backup_id}.", tag, SnapshotPolicy.of(self.settings),
            self.resuming.snapshot_moref if self.resuming is not None else None,
            self.result.snapshot, self.result.warnings, self.reporter.note)

    async def _copy(self, snap: BackupSnapshot, pending: PendingBackup) -> list[DiskRecord]:
        """Plan every disk of the snapshot, checkpoint, and copy them."""
        devices = await self.control.run(snapshot_disks, self.session, snap.ref,
                                         self.vm.datastores)
        disks = [d for d in devices if self._usable(d)]
        parent = await asyncio.to_thread(self.repo.latest, self.vm.instance_uuid)
        self.result.parent = parent.id if parent else None
        block_size = self.repo.config.block_size
        # a read is whole blocks: at least one, at most max_read rounded down to blocks
        max_read = max(block_size, self.settings.pipeline.max_read // block_size * block_size)
        cookie = await SessionCookie.of(self.control, self.session)
        async with DataPlane(self.settings, self.repo.chunks, block_size, cookie,
                             self.repo.chunks, hosts=self.shared.hosts,
                             bandwidth=self.shared.bandwidth,
                             executor=self.shared.executor) as plane:
            routes = {d.key: await self._route(plane, d) for d in disks}
            self._snapshot_moref = snap.moref
            self.vm_config = await saved_vm_config(self.control, self.session, plane,
                                                   snap.ref, self.vm.datacenter,
                                                   self.result.warnings)
            planner = Planner(self.repo, self.control, self.session, self.vm.ref, snap.ref,
                              self.settings.full, max_read, self.reporter.note, self.resuming,
                              snap.same, self.settings.read_all, self.backup_id,
                              self.settings.canary_blocks)
            plans = [await planner.plan(disk, parent, pending) for disk in disks]
            self.checkpoint = Checkpoint(
                self.backup_id, self.created, self.snapshot_name, snap.moref,
                self.result.parent,
                {p.disk.key: disk_checkpoint(p.disk, block_size, p.decision) for p in plans})
            await asyncio.to_thread(pending.write_checkpoint, self.checkpoint.to_json())
            return await self._copy_disks(plane, plans, routes, pending)

    async def _route(self, plane: DataPlane, disk: DiskInfo) -> Route:
        """Which transport reads ``disk`` (``--transport``), and why: ``/folder`` needs the
        file holding its bytes, from its descriptor's extent line; what ``/folder``
        cannot serve raw goes through NBD under ``auto``, or is refused with the reason."""
        option = self.settings.nbd.transport
        data_path = unservable = None
        if needs_descriptor(option, disk):
            text = await plane.descriptor(disk, self.vm.datacenter, self.vm.host)
            try:
                data_path = data_file(text, disk.descriptor_path, disk.capacity)
            except Unservable as exc:
                unservable = str(exc)
        missing = await plane.nbd_missing() if option == "auto" and (
            disk.is_delta or unservable) else None
        return choose(option, disk, data_path, unservable, missing)

    async def _vm_exists(self) -> bool:
        try:
            return await self.control.run(inventory.exists, self.session, self.vm.ref)
        except Exception:
            return True  # cannot tell: report the original error

    async def _begin(self) -> PendingBackup:
        if self.resuming is not None:
            try:
                return await asyncio.to_thread(self.repo.begin, self.vm.instance_uuid,
                                               self.backup_id, True)
            except RepositoryError:  # another run of this VM took it over meanwhile
                self.resuming = None
                self.result.resumed_from = None
                self.backup_id = self.repo.new_backup_id()
                self.snapshot_name = f"{snapshots.PREFIX}{self.backup_id}"
                self.created = clock.stamp()
        return await asyncio.to_thread(self.repo.begin, self.vm.instance_uuid, self.backup_id)

    def _usable(self, disk: DiskInfo) -> bool:
        """Independent disks are not in snapshots; an encrypted disk cannot be read in
        clear. (A delta backing is for ``mover.jobs.routes`` to route or refuse.)"""
        refuse_encrypted(self.vm, [disk])
        if disk.independent:
            self.result.skipped_disks.append({"key": disk.key, "label": disk.label,
                                              "reason": "independent disks are not in snapshots"})
            return False
        return True

    async def _copy_disks(self, plane: DataPlane, plans: list[DiskPlan],
                          routes: dict[int, Route], pending: PendingBackup) -> list[DiskRecord]:
        limit = asyncio.Semaphore(self.settings.parallel_disks)
        records: dict[int, DiskRecord] = {}

        async def one(plan: DiskPlan) -> None:
            async with limit, self.shared.disks or contextlib.nullcontext():
                try:
                    records[plan.disk.key] = await self._copy_disk(
                        plane, plan, routes[plan.disk.key], pending)
                finally:
                    await plane.release(plan.disk.key)  # its nbdkit, if any, ends here

        try:
            async with asyncio.TaskGroup() as group:
                for plan in plans:
                    group.create_task(one(plan))
        except BaseExceptionGroup as errors:
            raise first_error(errors) from None
        self.result.disks.sort(key=lambda d: d.key)
        return [records[k] for k in sorted(records)]

    async def _copy_disk(self, plane: DataPlane, plan: DiskPlan, route: Route,
                         pending: PendingBackup) -> DiskRecord:
        try:
            return await self._copy_disk_of(plane, plan, route, pending)
        except MoverError as exc:
            exc.fields.setdefault("disk", plan.disk.key)
            raise

    async def _copy_disk_of(self, plane: DataPlane, plan: DiskPlan, route: Route,
                            pending: PendingBackup) -> DiskRecord:
        transport = await plane.open_transport(plan.disk, self.vm, self._snapshot_moref, route)
        skipped = 0
        if route.kind == "nbd" and plan.decision.mode == "full":
            # CBT's "*" calls a thick disk allocated whole; NBD block status knows better
            zeros = await plane.zero_extents(plan.disk.key, plan.disk.capacity)
            before = sum(f.fetched for f in plan.reads)
            plan.reads = skip_zero_blocks(plan.reads, zeros, self.repo.config.block_size)
            skipped = before - sum(f.fetched for f in plan.reads)
        pipeline = self.settings.pipeline
        # The canary reads beside the copy, with a quarter of the disk's fetchers, so that
        # its latency hides behind the copy's; with fewer than 4 fetchers it reads first.
        share = pipeline.fetchers // 4 if plan.canary else 0
        checking = asyncio.ensure_future(canary.check(
            transport, plan, plane.processor, plane.executor,
            dataclasses.replace(pipeline, fetchers=max(1, share))))
        if not share:
            await checking  # a failed canary read fails the disk before its copy
        try:
            stats = await self._copy_blocks(transport, plane, plan, pending,
                                            dataclasses.replace(
                                                pipeline, fetchers=pipeline.fetchers - share))
        except BaseException:
            checking.cancel()
            await asyncio.wait([checking])
            raise
        check = await checking
        if check.mismatches:  # the incremental just copied is wrong: read the disk whole
            plan = await self._read_whole(plan, check.mismatches, pending)
            wasted = stats.bytes_read
            stats = await self._copy_blocks(transport, plane, plan, pending, pipeline)
            stats.bytes_read += wasted
        disk, decision, index = plan.disk, plan.decision, plan.index
        block_size = self.repo.config.block_size
        await asyncio.to_thread(pending.write_index, disk.key, index)
        done = DiskResult(
            key=disk.key, label=disk.label, mode=decision.mode, reason=plan.reason,
            capacity=disk.capacity, changed_bytes=total(plan.areas),
            bytes_read=stats.bytes_read, bytes_stored=stats.bytes_stored,
            zero_blocks=stats.zero_blocks, new_chunks=stats.new_chunks,
            dedup_chunks=stats.dedup_chunks, seconds=stats.seconds,
            resumed_blocks=plan.resumed_blocks, retries=plane.retries(disk.key),
            host_waits=plane.host_waits(disk.key),
            merged_blocks=stats.merged_blocks, base_seconds=stats.base_seconds,
            refetched_blocks=stats.refetched_blocks, canary_blocks=check.blocks,
            canary_bytes=check.bytes_read, canary_seconds=check.seconds,
            cbt_suspect=canary.suspect(plan), canary_mismatches=check.mismatches,
            transport=route.kind, transport_reason=route.reason, zero_skipped_bytes=skipped)
        done.bytes_read += check.bytes_read
        self.result.disks.append(done)
        self.reporter.disk_done(disk.key, done)
        return DiskRecord(
            key=disk.key, label=disk.label, uuid=disk.uuid, capacity=disk.capacity,
            file=disk.file, change_id=disk.change_id, mode=decision.mode,
            reason=plan.reason, block_size=block_size, changed_bytes=done.changed_bytes,
            bytes_read=done.bytes_read, bytes_stored=stats.bytes_stored, blocks=len(index),
            zero_blocks=index.zero_blocks(), new_chunks=stats.new_chunks,
            dedup_chunks=stats.dedup_chunks, seconds=stats.seconds,
            extra={"cbt_suspect": True, "canary_mismatches": check.mismatches}
            if done.cbt_suspect else {})

    async def _copy_blocks(self, transport: Transport, plane: DataPlane, plan: DiskPlan,
                           pending: PendingBackup, pipeline: PipelineSettings) -> CopyStats:
        disk = plan.disk
        self.reporter.disk_started(disk.key, disk.label, plan.decision.mode,
                                   sum(f.length for f in plan.reads), plan.reason)
        journal = pending.journal(disk.key)
        return await copy_disk(
            transport, plan.reads, plan.index, plane.processor, plane.executor, pipeline,
            progress=lambda n: self.reporter.disk_progress(disk.key, n),
            recorder=lambda rs: journal.append((r.block, r.digest) for r in rs))

    async def _read_whole(self, plan: DiskPlan, offsets: list[int],
                          pending: PendingBackup) -> DiskPlan:
        """The canary caught CBT losing changes: read the disk whole, as a full, in this run
        (the checkpoint says so before any of it is journaled, so a resume continues it)."""
        max_read = max(plan.index.block_size, self.settings.pipeline.max_read
                       // plan.index.block_size * plan.index.block_size)
        full = canary.as_full(plan, offsets, max_read)
        warning = canary.warning(self.vm.name, plan.disk.key, offsets)
        log.warning("%s", warning)
        self.result.warnings.append(warning)
        self.reporter.note(warning)
        async with self._checkpointing:
            assert self.checkpoint is not None
            saved = disk_checkpoint(full.disk, plan.index.block_size, full.decision)
            self.checkpoint = dataclasses.replace(
                self.checkpoint, disks={**self.checkpoint.disks, plan.disk.key: saved})
            await asyncio.to_thread(pending.journal(plan.disk.key).clear)
            await asyncio.to_thread(pending.write_checkpoint, self.checkpoint.to_json())
        return full
