"""Regression tests for problems found in the review of repository format 2."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from mover.extents import Extent
from mover.index import FixedIndex
from mover.pipeline.copy import PipelineSettings, copy_disk
from mover.pipeline.process import BlockProcessor

BS = 4096


class _Disk:
    name = "disk"
    max_readers = 2

    def __init__(self, size: int) -> None:
        self.size = size

    async def read_into(self, offset: int, buf: memoryview) -> None:
        for i in range(0, len(buf), BS):
            buf[i:i + BS] = (offset + i).to_bytes(8, "little") * (BS // 8)

    async def close(self) -> None:
        pass


class _SlowSyncSink:
    """A sink whose sync blocks until released (a slow pack write)."""

    def __init__(self) -> None:
        self.sync_started = threading.Event()
        self.release = threading.Event()
        self.syncing = False

    def digest(self, block: bytes | bytearray | memoryview) -> bytes:
        import hashlib
        return hashlib.sha256(block).digest()

    def has(self, digest: bytes) -> bool:
        return False

    def put(self, digest: bytes, block: bytes | bytearray | memoryview) -> int:
        return len(block)

    def sync(self) -> None:
        self.syncing = True
        self.sync_started.set()
        self.release.wait(10)
        self.syncing = False


async def test_cancelled_copy_does_not_leave_a_sync_running() -> None:
    """A cancelled copy (another disk failed, SIGTERM) must not return while its sync (pack
    and pack index writes, then a journal segment) still runs in a thread: the backup then
    suspends and releases the repository lock, and gc could list the indexes, see the
    late pack as unindexed and delete it, after which its index names a missing pack (later
    backups deduplicate against chunks that are gone); a late journal segment could also
    land after a resume's RESET."""
    sink = _SlowSyncSink()
    settings = PipelineSettings(fetchers=1, workers=1, queue_depth=1, max_read=BS,
                                sync_every=BS)
    journaled: list[int] = []
    with ThreadPoolExecutor(1) as executor:
        task = asyncio.ensure_future(copy_disk(
            _Disk(64 * BS), [Extent(0, 64 * BS)], FixedIndex(64 * BS, BS),
            BlockProcessor(sink, BS), executor, settings,
            recorder=lambda rs: journaled.extend(r.block for r in rs)))
        while not sink.sync_started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(task), 0.5)
        except (asyncio.CancelledError, TimeoutError):
            pass
        still_running = task.done() and sink.syncing
        sink.release.set()
        try:
            await task
        except asyncio.CancelledError:
            pass
    assert not still_running, "copy_disk returned while its sink sync was still running"
