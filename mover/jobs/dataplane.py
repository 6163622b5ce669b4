"""The data plane of one job: the pooled HTTP session, the CPU executor, and the one place
where a disk's transport is built and its wrappers are stacked."""

from __future__ import annotations

import types
from concurrent.futures import ThreadPoolExecutor

import aiohttp

from mover.jobs.settings import BackupSettings
from mover.pipeline.folder import FolderTransport, folder_url, ssl_setting
from mover.pipeline.process import BlockProcessor, ChunkSink
from mover.pipeline.transport import Transport
from mover.vsphere.disks import DiskInfo
from mover.vsphere.session import COOKIE_NAME


class DataPlane:
    """Use as ``async with DataPlane(...) as plane``; everything is released on exit."""

    def __init__(self, settings: BackupSettings, sink: ChunkSink, block_size: int, level: int,
                 cookie: str) -> None:
        self.settings = settings
        self.processor = BlockProcessor(sink, block_size, level)
        self.executor = ThreadPoolExecutor(settings.pipeline.workers,
                                           thread_name_prefix="mover-cpu")
        tls = settings.tls
        self._ssl = (ssl_setting(tls.insecure, tls.thumbprint_bytes)
                     if settings.server.scheme == "https" else True)
        self._cookie = cookie
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> DataPlane:
        pipeline = self.settings.pipeline
        connector = aiohttp.TCPConnector(limit=pipeline.fetchers * self.settings.parallel_disks)
        self._http = aiohttp.ClientSession(
            connector=connector, headers={"Cookie": f"{COOKIE_NAME}={self._cookie}"},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120))
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: types.TracebackType | None) -> None:
        if self._http is not None:
            await self._http.close()
        self.executor.shutdown(wait=True, cancel_futures=True)

    def transport(self, disk: DiskInfo, datacenter: str) -> Transport:
        """The transport that reads ``disk`` of the backup snapshot."""
        assert self._http is not None, "use DataPlane as an async context manager"
        url = folder_url(self.settings.server.base_url, disk.datastore, disk.flat_path,
                         datacenter)
        return FolderTransport(self._http, url, disk.capacity, self.settings.pipeline.fetchers,
                               self._ssl)
