"""The data plane of one job: the pooled HTTP session, the CPU executor, the session
keepalive, and the one place where a disk's transport is built and its wrappers are stacked:
``/folder`` or NBD through an nbdkit per disk (``mover.jobs.routes`` says which), retried."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import types
from concurrent.futures import Executor, ThreadPoolExecutor

import aiohttp

from mover import clock
from mover.aio import TrackedExecutor
from mover.errors import TransportError
from mover.extents import Extent
from mover.jobs.keepalive import Keepalive, SessionCookie
from mover.jobs.routes import Route
from mover.jobs.settings import BackupSettings
from mover.pipeline.folder import FolderTransport, folder_url, read_small, ssl_setting
from mover.pipeline.limits import Bandwidth, HostLimits, LimitedTransport
from mover.pipeline.nbdkit import NbdkitServer, NbdkitTransport, VddkParams, plugin_argv
from mover.pipeline.process import BlockProcessor, BlockSource, ChunkSink
from mover.pipeline.retry import (
    HOST_FAULTS,
    RetryBudget,
    RetryingTransport,
    RetryPolicy,
    host_wait_budget,
)
from mover.pipeline.transport import Transport
from mover.vsphere.disks import DiskInfo
from mover.vsphere.inventory import VMFacts
from mover.vsphere.session import COOKIE_NAME
from mover.vsphere.thumbprint import certificate_sha1

log = logging.getLogger(__name__)


class DataPlane:
    """Use as ``async with DataPlane(...) as plane``; everything is released on exit.

    While the block runs, the control plane's session is pinged every
    ``settings.pipeline.keepalive`` seconds; a 401 on ``/folder`` refreshes ``cookie``.

    A job of several VMs (``mover.jobs.worker``) shares one data plane: ``disks`` is how many
    disks it copies at once (the connection pool's size), ``hosts`` its per-host limits and
    ``bandwidth`` its rate over all hosts, ``executor`` the job's one CPU pool."""

    def __init__(self, settings: BackupSettings, sink: ChunkSink, block_size: int,
                 cookie: SessionCookie, source: BlockSource | None = None, *,
                 disks: int | None = None, hosts: HostLimits | None = None,
                 bandwidth: Bandwidth | None = None,
                 executor: ThreadPoolExecutor | None = None) -> None:
        self.settings = settings
        self._disks = disks if disks is not None else settings.parallel_disks
        self._hosts = hosts
        self._bandwidth = bandwidth
        self.processor = BlockProcessor(sink, block_size, source)
        # a job's shared pool through a view of this backup's own work (its exit waits for
        # that work only), or a pool of its own
        self.executor: Executor = (TrackedExecutor(executor) if executor is not None else
                                   ThreadPoolExecutor(settings.pipeline.workers,
                                                      thread_name_prefix="mover-cpu"))
        tls = settings.tls
        self._ssl = (ssl_setting(tls.insecure, tls.thumbprint_bytes)
                     if settings.server.scheme == "https" else True)
        self.cookie = cookie
        pipeline = settings.pipeline
        self.budget = RetryBudget(pipeline.retry_budget)   # one budget for every disk
        self._policy = RetryPolicy(attempts=max(1, pipeline.read_attempts),
                                   base_delay=pipeline.retry_base_delay,
                                   max_delay=max(pipeline.retry_max_delay,
                                                 pipeline.retry_base_delay))
        self._keepalive = Keepalive(cookie.keepalive, pipeline.keepalive)
        self._transports: dict[int, RetryingTransport] = {}
        self._descriptor_waits: dict[int, dict[str, int]] = {}
        self._servers: dict[int, NbdkitTransport] = {}
        self._nbd_missing: str | bool | None = False   # False: not looked at yet
        self._sha1: str | None = None
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> DataPlane:
        pipeline = self.settings.pipeline
        connector = aiohttp.TCPConnector(limit=pipeline.fetchers * self._disks)
        # The cookie goes on each request (it changes when the session is renewed); a jar
        # would add whatever the host sets next to it.
        self._http = aiohttp.ClientSession(connector=connector,
                                           cookie_jar=aiohttp.DummyCookieJar())
        await self._keepalive.__aenter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: types.TracebackType | None) -> None:
        try:
            for key in list(self._servers):
                await self.release(key)   # no nbdkit outlives the job, whatever ended it
            await self._keepalive.__aexit__(exc_type, exc, tb)
        finally:
            if self._http is not None:
                await self._http.close()
            self.executor.shutdown(wait=True, cancel_futures=True)

    async def descriptor(self, disk: DiskInfo, datacenter: str, host: str = "") -> str:
        """The text of ``disk``'s descriptor file (``backing.fileName``) over ``/folder``,
        in one of host ``host``'s read slots; transient faults are retried as reads are
        (same attempts, same job budget)."""
        body = await self.small_file(disk.datastore, disk.descriptor_path, datacenter,
                                     disk=disk, host=host)
        return body.decode("utf-8", errors="replace")

    async def small_file(self, datastore: str, path: str, datacenter: str,
                         limit: int = 64 * 1024, disk: DiskInfo | None = None,
                         host: str = "") -> bytes:
        """A whole small datastore file (a descriptor, the NVRAM) over ``/folder``, in one
        of host ``host``'s read slots, retried as reads are; TransportError (not transient)
        for a 404 or a file over ``limit``. A busy or locking host is waited for as
        ``disk``'s reads are (mover.pipeline.retry; without a disk, within --host-wait)."""
        assert self._http is not None, "use DataPlane as an async context manager"
        url = folder_url(self.settings.server.base_url, datastore, path, datacenter)
        pipeline = self.settings.pipeline
        capacity = disk.capacity if disk is not None else 0
        patience = host_wait_budget(capacity, pipeline.host_wait, pipeline.host_wait_per_gib)
        deadline = clock.monotonic() + patience
        what = f"the descriptor of disk {disk.key}" if disk is not None else f"[{datastore}] {path}"
        attempt = refusals = 0
        while True:
            try:
                slots = self._hosts.slots(host) if self._hosts is not None else None
                async with slots or contextlib.nullcontext():
                    return await read_small(self._http, url, self.cookie, COOKIE_NAME,
                                            self._ssl, limit=limit,
                                            timeout=self.settings.pipeline.read_timeout)
            except TransportError as exc:
                if exc.transient and exc.fields.get("fault") in HOST_FAULTS:
                    left = deadline - clock.monotonic()
                    if left <= 0:
                        raise TransportError(
                            f"{exc}: the host kept refusing {what} for {patience:.0f} s, the "
                            "time budget (--host-wait plus 10 s per GiB of the disk); retry "
                            "when the other tool is done, or give a longer --host-wait",
                            transient=True, disk=disk.key if disk is not None else None,
                            fault=exc.fields["fault"], waited=round(patience, 3),
                            budget=patience) from exc
                    refusals += 1
                    if disk is not None:
                        waits = self._descriptor_waits.setdefault(disk.key, {})
                        fault = str(exc.fields["fault"])
                        waits[fault] = waits.get(fault, 0) + 1
                    log.info("host refused %s (%s); waiting", what, exc)
                    await clock.pause(min(left, self._policy.cap(refusals)))
                    continue
                attempt += 1
                if (not exc.transient or attempt >= self._policy.attempts
                        or not self.budget.take()):
                    raise
                log.info("retrying %s (attempt %d: %s)", what, attempt, exc)
            await clock.pause(random.uniform(0.0, self._policy.cap(attempt)))

    def transport(self, disk: DiskInfo, datacenter: str, data_path: str,
                  host: str = "") -> Transport:
        """The transport that reads ``disk`` of the backup snapshot, whose bytes are in
        ``data_path`` (from its descriptor), on ESXi host ``host`` (MoRef): ``/folder``,
        under the job's and the host's limits, retried."""
        assert self._http is not None, "use DataPlane as an async context manager"
        pipeline = self.settings.pipeline
        url = folder_url(self.settings.server.base_url, disk.datastore, data_path,
                         datacenter)
        folder = FolderTransport(self._http, url, disk.capacity, pipeline.fetchers,
                                 self.cookie, COOKIE_NAME, self._ssl,
                                 read_timeout=pipeline.read_timeout or None,
                                 idle_timeout=pipeline.idle_timeout or None)
        return self._stacked(folder, disk, host)

    def _stacked(self, transport: Transport, disk: DiskInfo, host: str) -> Transport:
        """The one place the wrappers are stacked on a disk's transport: the job's and the
        host's limits (slots, bandwidth), then retries (a busy or locking host waited for
        within the disk's time budget)."""
        pipeline = self.settings.pipeline
        limited = transport
        if self._hosts is not None or self._bandwidth is not None:
            slots = self._hosts.slots(host) if self._hosts is not None else None
            rates = [b for b in (self._bandwidth, self._hosts.bandwidth(host) if self._hosts
                                 is not None else None) if b is not None]
            limited = LimitedTransport(transport, slots, rates)
        budget = host_wait_budget(disk.capacity, pipeline.host_wait, pipeline.host_wait_per_gib)
        retrying = RetryingTransport(limited, dataclasses.replace(self._policy, host_wait=budget),
                                     self.budget)
        self._transports[disk.key] = retrying
        return retrying

    def host_waits(self, disk_key: int) -> dict[str, int]:
        """Busy (503) and locked (500) refusals waited out reading disk ``disk_key`` (its
        descriptor and its data)."""
        waits = dict(self._descriptor_waits.get(disk_key, {}))
        transport = self._transports.get(disk_key)
        for fault, n in (transport.waits if transport is not None else {}).items():
            waits[fault] = waits.get(fault, 0) + n
        return waits
    async def nbd_missing(self) -> str | None:
        """Why NBD cannot be used (nbdkit or its plugin is not installed), None if it can."""
        if self._nbd_missing is False:
            try:
                await asyncio.to_thread(plugin_argv, self.settings.nbd.plugin)
                self._nbd_missing = None
            except TransportError as exc:
                self._nbd_missing = str(exc)
        assert self._nbd_missing is not True
        return self._nbd_missing

    async def open_transport(self, disk: DiskInfo, vm: VMFacts, snapshot_moref: str,
                             route: Route) -> Transport:
        """The transport ``route`` names for ``disk`` of the backup snapshot; an NBD one
        has its own nbdkit (vddk plugin parameters) until ``release``."""
        if route.kind == "folder":
            assert route.data_path is not None
            return self.transport(disk, vm.datacenter, route.data_path)
        server = self.settings.server
        if server.scheme == "https" and self._sha1 is None:
            self._sha1 = await asyncio.to_thread(certificate_sha1, server, self.settings.tls)
        nbd = self.settings.nbd
        params = VddkParams(
            server=server.host, user=self.settings.credentials.user, vm_moref=vm.moref,
            snapshot_moref=snapshot_moref, file=disk.file, thumbprint=self._sha1,
            port=None if server.port == 443 else server.port, libdir=nbd.libdir,
            transports=nbd.transports, compression=nbd.compression)
        pipeline = self.settings.pipeline
        served = NbdkitTransport(
            NbdkitServer(nbd.plugin, params, self.settings.credentials.password,
                         f"disk {disk.key}", nbd.filters, nbd.filter_args),
            disk.capacity, pipeline.fetchers, read_timeout=pipeline.read_timeout or None)
        await served.open()
        self._servers[disk.key] = served
        retrying = RetryingTransport(served, self._policy, self.budget)
        self._transports[disk.key] = retrying
        return retrying

    async def zero_extents(self, disk_key: int, capacity: int) -> list[Extent]:
        """The parts of the disk its NBD server promises read as zeros (block status
        ``base:allocation``); [] for a disk without NBD."""
        served = self._servers.get(disk_key)
        if served is None:
            return []
        return [Extent(e.offset, e.length) for e in await served.extents(0, capacity)
                if e.reads_as_zero]

    async def release(self, disk_key: int) -> None:
        """End the disk's nbdkit, if it has one (its reads are over)."""
        served = self._servers.pop(disk_key, None)
        if served is not None:
            await served.close()

    def retries(self, disk_key: int) -> int:
        """Retries made so far reading disk ``disk_key`` (0 if it has no transport yet)."""
        transport = self._transports.get(disk_key)
        return transport.retries if transport is not None else 0
