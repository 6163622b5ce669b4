"""The copy loop's sub-block path on in-memory seams: a transport over a bytearray, a dict
sink and a dict block source. Random change patterns give exactly the new disk; a missing
base is read whole; canary-style scratch indexes work through the same loop."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from mover import chunk
from mover.errors import IntegrityError
from mover.extents import Extent
from mover.fetchplan import plan_fetches
from mover.index import FixedIndex
from mover.pipeline.copy import PipelineSettings, copy_disk
from mover.pipeline.process import BlockProcessor

KiB, MiB = 1 << 10, 1 << 20


class MemoryTransport:
    name = "memory"

    def __init__(self, data: bytes) -> None:
        self.data, self.size, self.max_readers = data, len(data), 4
        self.reads: list[Extent] = []

    async def read_into(self, offset: int, buf: memoryview) -> None:
        self.reads.append(Extent(offset, len(buf)))
        buf[:] = self.data[offset:offset + len(buf)]

    async def close(self) -> None:
        pass


class MemoryChunks:
    """ChunkSink and BlockSource at once."""

    def __init__(self) -> None:
        self.blobs: dict[bytes, bytes] = {}
        self.lock = threading.Lock()

    def digest(self, block: bytes | bytearray | memoryview) -> bytes:
        return chunk.digest(block)

    def has(self, digest: bytes) -> bool:
        return digest in self.blobs

    def put(self, digest: bytes, block: bytes | bytearray | memoryview) -> int:
        with self.lock:
            new = digest not in self.blobs
            self.blobs[digest] = bytes(block)
            return len(block) if new else 0

    def sync(self) -> None:
        pass

    def read_block(self, digest: bytes) -> bytes:
        if digest not in self.blobs:
            raise IntegrityError(f"chunk {digest.hex()} is missing")
        return self.blobs[digest]


async def backup(disk: bytes, chunks: MemoryChunks, index: FixedIndex, changed: list[Extent]
                 ) -> tuple[MemoryTransport, int]:
    transport = MemoryTransport(disk)
    processor = BlockProcessor(chunks, MiB, chunks)
    settings = PipelineSettings(fetchers=3, workers=2, queue_depth=2)
    fetches = plan_fetches(changed, MiB, len(disk), 4 * MiB, 64 * KiB, lambda b: True)
    with ThreadPoolExecutor(2) as executor:
        stats = await copy_disk(transport, fetches, index, processor, executor, settings)
    return transport, stats.refetched_blocks


def digests(disk: bytes) -> FixedIndex:
    index = FixedIndex(len(disk), MiB)
    for b in range(len(index)):
        block = disk[b * MiB:(b + 1) * MiB]
        index.set(b, None if chunk.is_zero(block) else chunk.digest(block))
    return index


@pytest.mark.parametrize("seed", range(6))
async def test_random_changes_give_the_new_disk(seed: int) -> None:
    rng = random.Random(seed)
    capacity = 12 * MiB + 512 * rng.randrange(0, 2048)
    old = bytearray(rng.randbytes(capacity))
    old[5 * MiB:7 * MiB] = bytes(2 * MiB)                   # zero blocks in the parent
    chunks = MemoryChunks()
    parent = FixedIndex(capacity, MiB)
    await backup(bytes(old), chunks, parent, [Extent(0, capacity)])
    assert parent == digests(bytes(old))
    new = bytearray(old)
    changed = []
    for _ in range(rng.randrange(1, 12)):
        start = rng.randrange(0, capacity - 1)
        n = min(rng.choice([1, 4 * KiB, 64 * KiB, 300 * KiB, 2 * MiB]), capacity - start)
        new[start:start + n] = rng.randbytes(n)
        changed.append(Extent(start, n))
    index = parent.copy()
    transport, refetched = await backup(bytes(new), chunks, index, changed)
    assert index == digests(bytes(new)) and refetched == 0
    assert sum(r.length for r in transport.reads) <= sum(
        min(MiB, capacity - b * MiB) for b in {x // MiB for e in changed
                                               for x in range(e.start, e.end, 4 * KiB)}
        | {(e.end - 1) // MiB for e in changed})


async def test_a_missing_base_is_read_whole() -> None:
    rng = random.Random(1)
    old = rng.randbytes(4 * MiB)
    chunks = MemoryChunks()
    parent = digests(old)
    for b in (0, 1, 3):            # block 2's chunk is "missing"
        chunks.put(chunk.digest(old[b * MiB:(b + 1) * MiB]), old[b * MiB:(b + 1) * MiB])
    new = bytearray(old)
    new[1 * MiB + 10:1 * MiB + 20] = b"x" * 10
    new[2 * MiB + 10:2 * MiB + 20] = b"y" * 10
    index = parent.copy()
    transport, refetched = await backup(bytes(new), chunks, index,
                                        [Extent(MiB + 10, 10), Extent(2 * MiB + 10, 10)])
    assert refetched == 1 and index == digests(bytes(new))
    assert sorted(transport.reads) == [Extent(MiB, 64 * KiB), Extent(2 * MiB, 64 * KiB),
                                       Extent(2 * MiB, MiB)]
