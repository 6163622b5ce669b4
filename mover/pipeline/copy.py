"""Copy the planned reads of one disk through the pipeline into an index."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol

from mover.aio import first_error
from mover.extents import Extent
from mover.fetchplan import Fetch
from mover.pipeline.process import BlockProcessor, BlockResult, Fill
from mover.pipeline.transport import Transport


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    fetchers: int = 8               # concurrent reads per disk
    workers: int = max(2, os.cpu_count() or 2)   # executor threads doing CPU work
    queue_depth: int = 8            # fetched reads waiting for a worker
    max_read: int = 4 * 1024 * 1024
    # Faults (mover.pipeline.retry): attempts per read, retries per job (shared by all disks),
    # backoff with full jitter between base and cap seconds.
    read_attempts: int = 5
    retry_budget: int = 200
    retry_base_delay: float = 0.5
    retry_max_delay: float = 20.0
    # a host refusing for now (503 busy, 500 disk locked): seconds a disk may wait, in
    # all, on such refusals: host_wait + host_wait_per_gib per GiB of the disk
    host_wait: float = 60.0
    host_wait_per_gib: float = 10.0
    read_timeout: float = 300.0     # whole request of one read, seconds
    idle_timeout: float = 60.0      # no body bytes for this long, seconds
    keepalive: float = 600.0        # control-plane session keepalive while copying; 0: off
    # Bytes processed between syncs of the sink. A sync writes the repository's open pack
    # (however full) and only then are the batch's blocks journaled, so a journal never
    # names a chunk that is not durable; a crash costs at most this much re-reading on
    # resume (plus the reads in flight). Larger: fewer, fuller packs, more re-reading.
    sync_every: int = 64 * 1024 * 1024

    def peak_buffers(self) -> int:
        return self.fetchers + self.queue_depth + self.workers


@dataclass(slots=True)
class CopyStats:
    bytes_read: int = 0
    bytes_stored: int = 0
    blocks: int = 0
    zero_blocks: int = 0
    new_chunks: int = 0
    dedup_chunks: int = 0
    seconds: float = 0.0
    merged_blocks: int = 0          # blocks fetched in part and completed from their base
    base_seconds: float = 0.0       # time executor threads spent reading bases (decompressing)
    refetched_blocks: int = 0       # base missing or damaged: read again whole


class BlockIndex(Protocol):
    """Block number -> digest (None: a zero block); ``mover.index.FixedIndex`` is one. For a
    block fetched in part, ``get`` before the copy sets it names the block's base."""

    def get(self, block: int) -> bytes | None: ...

    def set(self, block: int, digest: bytes | None) -> None: ...


Progress = Callable[[int], None]
"""Called on the event loop with the number of bytes just processed."""

Recorder = Callable[[list[BlockResult]], None]
"""Called in a worker thread, one call at a time and in order, with blocks whose chunks
are durable (a sync of the sink covering them returned): the place to journal progress for
a resume."""


async def copy_disk(transport: Transport, reads: Iterable[Extent | Fetch], index: BlockIndex,
                    processor: BlockProcessor, executor: Executor, settings: PipelineSettings,
                    progress: Progress | None = None,
                    recorder: Recorder | None = None, durable: bool = True) -> CopyStats:
    """Read every extent of ``reads`` and record each block's digest in ``index``.

    A :class:`~mover.fetchplan.Fetch` reads only its pieces; the other bytes of its blocks
    come from each block's base, named by ``index`` (the parent's chunk through the
    processor's block source, or zeros). A block whose base cannot be read is read whole.

    When this returns, every chunk the index now names is durable in the sink (it was
    synced). ``recorder`` is called, in order, with blocks whose chunks are durable. On an
    error the first failure is raised (other stages are cancelled) and the index must not
    be committed.

    ``durable=False`` (a read whose index nothing will name durably, like the CBT canary's)
    skips the syncs: the returned digests are then not a promise about the sink."""
    loop = asyncio.get_running_loop()
    stats = CopyStats()
    pending = (r if isinstance(r, Fetch) else Fetch.whole(r) for r in reads)
    block_size = processor.block_size
    fetched: asyncio.Queue[tuple[Fetch, bytearray, memoryview] | None] = asyncio.Queue(
        settings.queue_depth)
    # Read buffers are reused: at most fetchers + queue_depth + workers exist, as before,
    # but they are allocated (and faulted in by the kernel) once, not once per read.
    free: list[bytearray] = []
    batch: list[BlockResult] = []
    batch_bytes = 0
    syncing = asyncio.Lock()
    started = loop.time()

    async def fetch() -> None:
        for job in pending:  # one shared iterator: each read is taken by one fetcher
            buf = free.pop() if free else bytearray(settings.max_read)
            if len(buf) < job.length:
                buf = bytearray(job.length)
            view = memoryview(buf)[:job.length]
            for piece in job.pieces:
                await transport.read_into(piece.start, view[piece.start - job.start:
                                                            piece.end - job.start])
                stats.bytes_read += piece.length
            await fetched.put((job, buf, view))

    async def flush() -> None:
        """Sync the sink, then record the blocks stored before the sync started (both in a
        thread: either may wait for the storage)."""
        nonlocal batch
        async with syncing:
            done, batch = batch, []

            def sync_and_record() -> None:
                processor.sync()
                if recorder is not None and done:
                    recorder(done)

            # A thread cannot be cancelled: if we are, wait for it to end before going on,
            # or its pack, index and journal writes would land after the backup released
            # the repository lock (gc could then delete the pack as unindexed).
            work = asyncio.ensure_future(asyncio.to_thread(sync_and_record))
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                await asyncio.wait({work})
                if not work.cancelled():
                    work.exception()  # retrieved: the cancellation is what we report
                raise

    async def merge(job: Fetch, view: memoryview) -> list[BlockResult]:
        """The blocks of a partial fetch, completed from their bases; a block whose base
        cannot be read is read whole and processed again."""
        fills = [Fill(block, holes, index.get(block)) for block, holes in job.fills(block_size)]
        results, missing, spent = await loop.run_in_executor(
            executor, processor.merge, job.start, view, fills)
        stats.merged_blocks += len(fills) - len(missing)
        stats.base_seconds += spent
        for block in missing:
            start = block * block_size - job.start
            part = view[start:start + block_size]
            await transport.read_into(job.start + start, part)
            stats.bytes_read += len(part)
            stats.refetched_blocks += 1
            results += await loop.run_in_executor(executor, processor, job.start + start, part)
        results.sort(key=lambda r: r.block)
        return results

    async def process(group: asyncio.TaskGroup) -> None:
        nonlocal batch_bytes
        while (item := await fetched.get()) is not None:
            job, buf, view = item
            offset = job.start
            if job.is_whole():
                results = await loop.run_in_executor(executor, processor, offset, view)
            else:
                results = await merge(job, view)
            length = len(view)
            view.release()
            if len(buf) == settings.max_read:
                free.append(buf)
            for result in results:
                index.set(result.block, result.digest)
                stats.blocks += 1
                if result.digest is None:
                    stats.zero_blocks += 1
                elif result.stored:
                    stats.new_chunks += 1
                    stats.bytes_stored += result.stored
                else:
                    stats.dedup_chunks += 1
            batch.extend(results)
            batch_bytes += length
            if durable and batch_bytes >= settings.sync_every and not syncing.locked():
                batch_bytes = 0  # here, not in flush: one crossing schedules one sync
                group.create_task(flush())
            if progress is not None:
                progress(length)

    fetchers = max(1, min(settings.fetchers, transport.max_readers))
    try:
        async with asyncio.TaskGroup() as group:
            workers = [group.create_task(process(group)) for _ in range(settings.workers)]
            # In the group, so that one failed read cancels the other fetchers too.
            readers = [group.create_task(fetch()) for _ in range(fetchers)]
            for reader in readers:
                await reader
            for _ in workers:
                await fetched.put(None)
        if stats.blocks and durable:
            await flush()
    except BaseExceptionGroup as group_error:
        raise first_error(group_error) from None
    stats.seconds = loop.time() - started
    return stats
