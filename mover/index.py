"""The fixed index of one disk in one backup: one 32-byte chunk digest per block.

A slot of 32 zero bytes means "all-zero block, no chunk stored". The serialized form is a
4096-byte header followed by ``count * 32`` bytes of slots (``docs/repository.md``):

    offset  size  field
    0       8     magic  b"MVINDEX\\0"
    8       4     format version (1), little-endian like every integer here
    12      4     reserved, zero
    16      8     block size in bytes
    24      8     disk capacity in bytes
    32      8     block count = ceil(capacity / block size)
    40      32    SHA-256 over all digest slots
    72      3992  zero padding
    4064    32    SHA-256 over header bytes 0..4064

The two checksums make any changed byte of the file detectable.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from typing import ClassVar

from mover.errors import IntegrityError

MAGIC = b"MVINDEX\0"
VERSION = 1
HEADER_SIZE = 4096
SLOT = 32
_FIELDS = struct.Struct("<8sIIQQQ32s")
_SEAL = HEADER_SIZE - 32


class FixedIndex:
    """Block number -> digest for a disk of ``capacity`` bytes in blocks of ``block_size``.

    Not thread-safe for concurrent ``set``; one owner fills it. ``get``/``set`` raise
    IndexError for a block outside the disk and ValueError for a digest that is not 32 bytes.
    """

    ZERO: ClassVar[bytes] = bytes(SLOT)

    def __init__(self, capacity: int, block_size: int, digests: bytearray | None = None) -> None:
        if capacity < 0 or block_size <= 0:
            raise ValueError(f"invalid index capacity={capacity} block_size={block_size}")
        self.capacity = capacity
        self.block_size = block_size
        self._count = -(-capacity // block_size)
        if digests is None:
            digests = bytearray(self._count * SLOT)
        elif len(digests) != self._count * SLOT:
            raise ValueError(f"{len(digests)} digest bytes for {self._count} blocks")
        self._slots = digests

    def __len__(self) -> int:
        return self._count

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FixedIndex):
            return NotImplemented
        return (self.capacity, self.block_size, self._slots) == (
            other.capacity, other.block_size, other._slots,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def get(self, block: int) -> bytes | None:
        """The digest of ``block``, or None if it is an all-zero block."""
        offset = self._offset(block)
        value = bytes(self._slots[offset : offset + SLOT])
        return None if value == self.ZERO else value

    def set(self, block: int, digest: bytes | None) -> None:
        """Record ``digest`` for ``block``; None (or ZERO) marks it all-zero."""
        offset = self._offset(block)
        if digest is None:
            digest = self.ZERO
        elif len(digest) != SLOT:
            raise ValueError(f"digest of {len(digest)} bytes, expected {SLOT}")
        self._slots[offset : offset + SLOT] = digest

    def copy(self) -> FixedIndex:
        """An independent index with the same slots (an incremental starts from its parent)."""
        return FixedIndex(self.capacity, self.block_size, bytearray(self._slots))

    def digests(self) -> Iterator[bytes]:
        """Each distinct non-zero digest once, in first-use order."""
        seen: set[bytes] = set()
        view = memoryview(self._slots)
        for offset in range(0, len(view), SLOT):
            value = view[offset : offset + SLOT].tobytes()
            if value != self.ZERO and value not in seen:
                seen.add(value)
                yield value

    def zero_blocks(self) -> int:
        """How many blocks are all-zero."""
        view = memoryview(self._slots)
        zero = self.ZERO
        return sum(view[o : o + SLOT].tobytes() == zero for o in range(0, len(view), SLOT))

    def to_bytes(self) -> bytes:
        """The index file: header then slots; :meth:`from_bytes` returns an equal index."""
        fields = _FIELDS.pack(
            MAGIC, VERSION, 0, self.block_size, self.capacity, self._count,
            hashlib.sha256(self._slots).digest(),
        )
        head = fields.ljust(_SEAL, b"\0")
        return head + hashlib.sha256(head).digest() + bytes(self._slots)

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> FixedIndex:
        """Parse an index file; raise IntegrityError if any header field or slot is damaged."""
        view = memoryview(data)
        if len(view) < HEADER_SIZE:
            raise IntegrityError(f"index is truncated ({len(view)} bytes)")
        if view[:8] != MAGIC:
            raise IntegrityError(f"not an index file (magic {bytes(view[:8])!r})")
        _magic, version, _, block_size, capacity, count, checksum = _FIELDS.unpack_from(view)
        if version != VERSION:
            raise IntegrityError(f"index format version {version}, this mover reads {VERSION}")
        if hashlib.sha256(view[:_SEAL]).digest() != view[_SEAL:HEADER_SIZE]:
            raise IntegrityError("index header checksum mismatch (header damaged)")
        if block_size <= 0 or count != -(-capacity // block_size):
            raise IntegrityError(f"index header inconsistent: {capacity=} {block_size=} {count=}")
        slots = view[HEADER_SIZE:]
        if len(slots) != count * SLOT:
            raise IntegrityError(f"index has {len(slots)} slot bytes, expected {count * SLOT}")
        if hashlib.sha256(slots).digest() != checksum:
            raise IntegrityError("index digest checksum mismatch (slots damaged)")
        return cls(capacity, block_size, bytearray(slots))

    def _offset(self, block: int) -> int:
        if not 0 <= block < self._count:
            raise IndexError(f"block {block} outside disk of {self._count} blocks")
        return block * SLOT
