"""Transport wrappers that share limits between disks and VMs: reads in flight per ESXi host,
and bandwidth (a token bucket, per job and per host).

Real hosts throttle and refuse NFC/HTTP streams per host (about 48 concurrent streams), so a
job reading several VMs of one host must cap its reads per host, across every VM. Both
wrappers have the ``Transport`` interface and are stacked in ``mover.jobs.dataplane``, under
the retry wrapper: a retried read waits for its slot and its tokens again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from mover import clock
from mover.pipeline.transport import Transport
from mover.tokenbucket import TokenBucket


class Bandwidth:
    """A rate shared by every transport given it; ``take`` waits until ``n`` bytes may pass."""

    def __init__(self, bytes_per_second: float, burst: float | None = None) -> None:
        # a quarter second of traffic as the burst: smooth at the scale of a second
        self.bucket = TokenBucket(bytes_per_second, burst if burst is not None
                                  else bytes_per_second / 4, clock.monotonic())

    async def take(self, n: int) -> None:
        wait = self.bucket.reserve(n, clock.monotonic())
        if wait > 0:
            await clock.pause(wait)


class HostLimits:
    """Per ESXi host (by MoRef): a cap of reads in flight and a bandwidth, shared by every
    transport of the job that reads a disk of a VM on that host. None: no limit."""

    def __init__(self, reads: int | None, bytes_per_second: float | None) -> None:
        self._reads = reads
        self._rate = bytes_per_second
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._bandwidth: dict[str, Bandwidth] = {}

    def slots(self, host: str) -> asyncio.Semaphore | None:
        if self._reads is None:
            return None
        return self._slots.setdefault(host, asyncio.Semaphore(self._reads))

    def bandwidth(self, host: str) -> Bandwidth | None:
        if self._rate is None:
            return None
        if host not in self._bandwidth:
            self._bandwidth[host] = Bandwidth(self._rate)
        return self._bandwidth[host]


class LimitedTransport:
    """``inner`` with at most ``slots``' value of reads in flight (the semaphore is shared
    with other transports), each read waiting first for its bytes in every bandwidth."""

    def __init__(self, inner: Transport, slots: asyncio.Semaphore | None,
                 bandwidths: Sequence[Bandwidth]) -> None:
        self.inner = inner
        self.name = inner.name
        self.size = inner.size
        self.max_readers = inner.max_readers
        self._slots = slots
        self._bandwidths = tuple(bandwidths)

    async def read_into(self, offset: int, buf: memoryview) -> None:
        for bandwidth in self._bandwidths:
            await bandwidth.take(len(buf))
        if self._slots is None:
            await self.inner.read_into(offset, buf)
            return
        async with self._slots:
            await self.inner.read_into(offset, buf)

    async def close(self) -> None:
        await self.inner.close()
