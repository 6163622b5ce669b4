"""The data plane of one job: the pooled HTTP session, the CPU executor, the session
keepalive, and the one place where a disk's transport is built and its wrappers are stacked."""

from __future__ import annotations

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
from mover.jobs.keepalive import Keepalive, SessionCookie
from mover.jobs.settings import BackupSettings
from mover.pipeline.folder import FolderTransport, folder_url, read_small, ssl_setting
from mover.pipeline.limits import Bandwidth, HostLimits, LimitedTransport
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
from mover.vsphere.session import COOKIE_NAME

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
        limited: Transport = folder
        if self._hosts is not None or self._bandwidth is not None:
            slots = self._hosts.slots(host) if self._hosts is not None else None
            rates = [b for b in (self._bandwidth, self._hosts.bandwidth(host) if self._hosts
                                 is not None else None) if b is not None]
            limited = LimitedTransport(folder, slots, rates)
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

    def retries(self, disk_key: int) -> int:
        """Retries made so far reading disk ``disk_key`` (0 if it has no transport yet)."""
        transport = self._transports.get(disk_key)
        return transport.retries if transport is not None else 0
