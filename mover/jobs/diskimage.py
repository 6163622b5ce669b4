"""A read-only, random-access view of one disk of one backup (what ``mover serve`` exports).

Bytes at any offset are assembled from the disk index and the repository's chunks; every
chunk is decoded and checked against its digest when it is read (IntegrityError naming it
otherwise), never trusted from an earlier read except through the small cache of decoded
blocks below, which only ever holds checked bytes.
"""

from __future__ import annotations

import collections
import threading

from mover.index import FixedIndex
from mover.repo import Repository
from mover.restoreplan import zero_runs

# Decoded blocks kept for readers whose requests are smaller than a block (nbdcopy asks for
# 256 KiB at a time; without the cache each 1 MiB chunk would be decoded four times).
CACHE_BLOCKS = 32


class DiskImage:
    """Thread-safe: any number of threads may call ``pread`` and ``extents`` at once."""

    def __init__(self, repo: Repository, index: FixedIndex,
                 cache_blocks: int = CACHE_BLOCKS) -> None:
        self.repo = repo
        self.index = index
        self.size = index.capacity
        self._cache: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._limit = cache_blocks
        self._lock = threading.Lock()

    def pread(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset``; ValueError for a range outside the disk."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"read of {length} bytes at {offset} outside the disk of "
                             f"{self.size} bytes")
        size = self.index.block_size
        parts = []
        position, end = offset, offset + length
        while position < end:
            block = position // size
            start = position - block * size
            stop = min(size, end - block * size)
            parts.append(self._block(block)[start:stop])
            position = block * size + stop
        return b"".join(parts)

    def extents(self, offset: int, length: int) -> list[tuple[int, int, bool]]:
        """``(offset, length, is_zero)`` runs of the range (``restoreplan.zero_runs``)."""
        return zero_runs(self.index, offset, length)

    def _block(self, block: int) -> bytes:
        digest = self.index.get(block)
        if digest is None:
            return bytes(min(self.index.block_size, self.size - block * self.index.block_size))
        with self._lock:
            data = self._cache.get(block)
            if data is not None:
                self._cache.move_to_end(block)
                return data
        data = self.repo.read_block(digest)   # decoded and checked, outside the lock
        with self._lock:
            self._cache[block] = data
            while len(self._cache) > self._limit:
                self._cache.popitem(last=False)
        return data
