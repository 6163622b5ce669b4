"""Where each chunk is: digest -> (pack number, offset, length), compactly, for ``has()``.

A repository of a 2 TiB disk at 1 MiB blocks holds about two million chunks; a Python dict
of them would take over 400 MiB. This table keeps one 44-byte record per chunk (the 32-byte
digest and three little-endian u32) in 65,536 buckets chosen by the digest's first two
bytes (digests are uniformly distributed); a bucket is a ``bytearray`` searched with
``bytes.find``, which runs in C. Measured with 2,097,152 chunks (a 2 TiB disk at 1 MiB
blocks): 64 bytes of RSS a chunk with the buckets' growth slack (128 MiB), 3 us a lookup.
Not thread-safe: the owner locks.
"""

from __future__ import annotations

import struct

DIGEST = 32
RECORD = DIGEST + 12
BYTES_PER_CHUNK = RECORD
_BUCKETS = 1 << 16
_LOCATION = struct.Struct("<III")


class ChunkTable:
    def __init__(self) -> None:
        self._buckets: list[bytearray | None] = [None] * _BUCKETS
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, digest: object) -> bool:
        return isinstance(digest, bytes) and self._find(digest)[1] >= 0

    def _find(self, digest: bytes) -> tuple[bytearray | None, int]:
        """The digest's bucket and its record's offset there (-1: absent)."""
        bucket = self._buckets[int.from_bytes(digest[:2], "big")]
        if bucket is None:
            return None, -1
        at = bucket.find(digest)
        while at >= 0 and at % RECORD:  # a match across two records: keep looking
            at = bucket.find(digest, at + 1)
        return bucket, at

    def get(self, digest: bytes) -> tuple[int, int, int] | None:
        """(pack number, offset, length) of ``digest``, the latest if added twice."""
        bucket, at = self._find(digest)
        if bucket is None or at < 0:
            return None
        pack, offset, length = _LOCATION.unpack_from(bucket, at + DIGEST)
        return pack, offset, length

    def add(self, digest: bytes, pack: int, offset: int, length: int) -> None:
        """Record where ``digest`` is; a digest already present gets the new location."""
        if len(digest) != DIGEST:
            raise ValueError(f"digest of {len(digest)} bytes")
        location = _LOCATION.pack(pack, offset, length)
        bucket, at = self._find(digest)
        if bucket is None:
            bucket = self._buckets[int.from_bytes(digest[:2], "big")] = bytearray()
        elif at >= 0:
            bucket[at + DIGEST:at + RECORD] = location
            return
        bucket += digest
        bucket += location
        self._count += 1

    def digests(self) -> set[bytes]:
        """Every digest (for gc and verify, which need them as a set anyway)."""
        found: set[bytes] = set()
        for bucket in self._buckets:
            if bucket:
                found.update(bytes(bucket[i:i + DIGEST]) for i in range(0, len(bucket), RECORD))
        return found
