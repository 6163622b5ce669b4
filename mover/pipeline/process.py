"""The CPU stage, run in executor threads: zero check, digest, dedup check, compress, store.

hashlib and zstandard release the GIL on large buffers, so these threads use every core.
python-zstandard forbids sharing a compressor between threads: each thread keeps its own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

import zstandard

from mover import chunk


class ChunkSink(Protocol):
    """Where chunks go. Contract: thread-safe; ``put`` is atomic and idempotent (returns
    False when the chunk was already stored); ``sync`` makes every chunk put or seen by
    ``has`` before it started durable. Nothing may name a chunk durably (journal, index,
    backup record) before a ``sync`` covering it has returned."""

    def has(self, digest: bytes) -> bool: ...

    def put(self, digest: bytes, blob: bytes) -> bool: ...

    def sync(self) -> None: ...


@dataclass(frozen=True, slots=True)
class BlockResult:
    block: int
    digest: bytes | None    # None: the block is all zeros and nothing was stored
    stored: int             # bytes written to the sink (0 for a zero block or a dedup hit)


class BlockProcessor:
    """Turns the bytes of one read (whole blocks from a block-aligned offset) into chunks."""

    def __init__(self, sink: ChunkSink, block_size: int, level: int) -> None:
        self._sink = sink
        self._block_size = block_size
        self._level = level
        self._local = threading.local()

    def _compressor(self) -> zstandard.ZstdCompressor:
        compressor: zstandard.ZstdCompressor | None = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = zstandard.ZstdCompressor(level=self._level)
            self._local.compressor = compressor
        return compressor

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
            digest = chunk.digest(block)
            stored = 0
            # Checking first saves compressing a block the repository already holds.
            if not self._sink.has(digest):
                blob = chunk.encode(block, self._compressor())
                if self._sink.put(digest, blob):
                    stored = len(blob)
            results.append(BlockResult(first + i, digest, stored))
        return results
