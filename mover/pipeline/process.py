"""The CPU stage, run in executor threads: zero check, digest, dedup check, store.

hashlib and zstandard release the GIL on large buffers, so these threads use every core.
The sink encodes (compresses) what it stores, in the calling thread: the compression of
the pipeline happens here, in the executor, but only the repository knows the codec.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from mover import chunk, clock
from mover.errors import RepositoryError
from mover.extents import Extent


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


class BlockSource(Protocol):
    """Where the bytes of a block's base come from (the parent backup's chunks), for a block
    fetched only where it changed. Contract: thread-safe; ``read_block`` returns the decoded
    bytes of the block with ``digest``, verified against it, or raises RepositoryError
    (IntegrityError when the chunk is missing or damaged): the caller then reads the whole
    block instead."""

    def read_block(self, digest: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Fill:
    """The byte ranges (disk offsets) of ``block`` that were not fetched, and the digest of
    its base (None: the base is a zero block)."""

    block: int
    holes: Sequence[Extent]
    base: bytes | None


@dataclass(frozen=True, slots=True)
class BlockResult:
    block: int
    digest: bytes | None    # None: the block is all zeros and nothing was stored
    stored: int             # bytes written to the sink (0 for a zero block or a dedup hit)


class BlockProcessor:
    """Turns the bytes of one read (whole blocks from a block-aligned offset) into chunks."""

    def __init__(self, sink: ChunkSink, block_size: int,
                 source: BlockSource | None = None) -> None:
        self._sink = sink
        self._source = source
        self._block_size = block_size

    @property
    def block_size(self) -> int:
        return self._block_size

    def sync(self) -> None:
        """Make the chunks stored so far durable (blocking I/O: run it in a thread)."""
        self._sink.sync()

    def __call__(self, offset: int, data: bytearray | memoryview) -> list[BlockResult]:
        view = memoryview(data)
        first = offset // self._block_size
        return [self._store(first + i, view[start:start + self._block_size])
                for i, start in enumerate(range(0, len(view), self._block_size))]

    def merge(self, offset: int, data: bytearray | memoryview,
              fills: Sequence[Fill]) -> tuple[list[BlockResult], list[int], float]:
        """Like calling the processor, for blocks of which only some bytes were fetched:
        first each fill's holes are copied from its base (zeros for a zero base). Returns the
        results, the blocks whose base could not be read (missing or damaged chunk: the
        caller reads them whole and processes them again) and the seconds spent reading
        bases."""
        view = memoryview(data)
        first = offset // self._block_size
        missing: list[int] = []
        spent = 0.0
        for fill in fills:
            start = fill.block * self._block_size - offset
            if fill.base is None:
                for hole in fill.holes:
                    view[hole.start - offset:hole.end - offset] = bytes(hole.length)
                continue
            began = clock.monotonic()
            try:
                base = self._read_base(fill.base)
            except RepositoryError:
                missing.append(fill.block)
                continue
            finally:
                spent += clock.monotonic() - began
            for hole in fill.holes:
                at = hole.start - offset
                view[at:at + hole.length] = base[at - start:at - start + hole.length]
        skip = set(missing)
        results = [self._store(first + i, view[start:start + self._block_size])
                   for i, start in enumerate(range(0, len(view), self._block_size))
                   if first + i not in skip]
        return results, missing, spent

    def _read_base(self, digest: bytes) -> bytes:
        if self._source is None:
            raise RepositoryError("no block source: partial blocks cannot be completed")
        return self._source.read_block(digest)

    def _store(self, number: int, block: memoryview) -> BlockResult:
        if chunk.is_zero(block):
            return BlockResult(number, None, 0)
        digest = self._sink.digest(block)
        # Checking first saves compressing a block the repository already holds.
        stored = 0 if self._sink.has(digest) else self._sink.put(digest, block)
        return BlockResult(number, digest, stored)
