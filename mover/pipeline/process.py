"""The CPU stage, run in executor threads: zero check, digest, dedup check, store.

hashlib and zstandard release the GIL on large buffers, so these threads use every core.
The sink encodes (compresses) what it stores, in the calling thread: the compression of
the pipeline happens here, in the executor, but only the repository knows the codec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mover import chunk


class ChunkSink(Protocol):
    """Where chunks go. Contract: thread-safe; ``digest`` is the repository's chunk address
    of a block; ``put`` stores a block under its digest unless already stored and returns
    the bytes it added (0: already there, a dedup hit); ``sync`` makes every chunk put (or
    found by ``has``) before it started durable. Nothing may name a chunk durably (journal,
    index, backup record) before a ``sync`` covering it has returned."""

    def digest(self, block: bytes | bytearray | memoryview) -> bytes: ...

    def has(self, digest: bytes) -> bool: ...

    def put(self, digest: bytes, block: bytes | bytearray | memoryview) -> int: ...

    def sync(self) -> None: ...


@dataclass(frozen=True, slots=True)
class BlockResult:
    block: int
    digest: bytes | None    # None: the block is all zeros and nothing was stored
    stored: int             # bytes written to the sink (0 for a zero block or a dedup hit)


class BlockProcessor:
    """Turns the bytes of one read (whole blocks from a block-aligned offset) into chunks."""

    def __init__(self, sink: ChunkSink, block_size: int) -> None:
        self._sink = sink
        self._block_size = block_size

    def sync(self) -> None:
        """Make the chunks stored so far durable (blocking I/O: run it in a thread)."""
        self._sink.sync()

    def __call__(self, offset: int, data: bytearray | memoryview) -> list[BlockResult]:
        view = memoryview(data)
        first = offset // self._block_size
        results = []
        for i, start in enumerate(range(0, len(view), self._block_size)):
            block = view[start:start + self._block_size]
            if chunk.is_zero(block):
                results.append(BlockResult(first + i, None, 0))
                continue
            digest = self._sink.digest(block)
            # Checking first saves compressing a block the repository already holds.
            stored = 0 if self._sink.has(digest) else self._sink.put(digest, block)
            results.append(BlockResult(first + i, digest, stored))
        return results
