"""Pack files and pack indexes: formats only (no I/O), see ``docs/repository.md``.

A **pack** holds many chunks back to back, then a trailer that lists them, so a pack
describes itself and a lost index can be rebuilt from the packs (``mover repair index``):

    offset  size        field
    0       8           magic b"MVPACK\\0\\0"
    8       4           pack format (1), little-endian like every integer here
    12      4           reserved, zero
    16      ...         chunks (each as ``mover.chunk`` frames it)
    T       44 * n      entries: digest (32), offset (u64), length (u32)
    end-48  8           n, the number of entries
    end-40  8           T, the offset of the entries
    end-32  32          SHA-256 of bytes T .. end-48 (the entries and n, T)

The pack's id (its name) is the SHA-256 of its trailer (bytes T to the end): it names the
chunks, their offsets and lengths, so two packs of one name hold the same chunks at the same
places (every chunk is checked against its digest when read). Not of the whole pack: hashing
16 MiB per pack cost about 1 CPU second per GiB stored (docs/performance.md).

A **pack index** object lists the chunks of one or more packs, sorted by digest:

    0       8           magic b"MVPIDX\\0\\0"
    8       4           index format (1)
    12      4           number of packs p
    16      8           number of entries n
    24      32 * p      pack ids
    ...     44 * n      entries: digest (32), pack number (u32, 0..p-1), offset (u32),
                        length (u32)
    end-32  32          SHA-256 of everything before it
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from mover.errors import IntegrityError

PACK_MAGIC = b"MVPACK\0\0"
INDEX_MAGIC = b"MVPIDX\0\0"
FORMAT = 1
_PACK_HEAD = struct.Struct("<8sII")
_PACK_ENTRY = struct.Struct("<32sQI")
_PACK_TAIL = struct.Struct("<QQ32s")
_INDEX_HEAD = struct.Struct("<8sIIQ")
_INDEX_ENTRY = struct.Struct("<32sIII")
HEADER_SIZE = _PACK_HEAD.size
TAIL_SIZE = _PACK_TAIL.size
MAX_PACK = 1 << 32  # offsets in an index are u32


@dataclass(frozen=True, slots=True)
class Entry:
    digest: bytes
    offset: int
    length: int


class PackBuilder:
    """Collects chunks into one pack in memory. Not thread-safe: one owner at a time.

    ``buffer``: a ``bytearray`` to build the pack in, reused from an earlier pack (its
    contents are overwritten). Building in a reused buffer of the final size spares the page
    faults of a fresh 16 MiB allocation and the copies of growing one, per pack (measured:
    most of the system CPU that packs added, docs/performance.md)."""

    def __init__(self, buffer: bytearray | None = None) -> None:
        self._buf = buffer if buffer is not None else bytearray()
        head = _PACK_HEAD.pack(PACK_MAGIC, FORMAT, 0)
        self._put(0, head)
        self._len = len(head)
        self.entries: list[Entry] = []
        self._sealed = False

    def __len__(self) -> int:
        return self._len

    @property
    def buffer(self) -> bytearray:
        """The buffer the pack is built in (for reuse once the pack is written)."""
        return self._buf

    def _put(self, at: int, data: bytes | memoryview) -> None:
        end = at + len(data)
        if end > len(self._buf):  # rarely: the buffer is sized for a whole pack
            self._buf.extend(bytes(end - len(self._buf)))
        self._buf[at:end] = data

    def add(self, digest: bytes, blob: bytes) -> Entry:
        if self._sealed:
            raise ValueError("the pack is sealed")
        entry = Entry(digest, self._len, len(blob))
        if entry.offset + entry.length + TAIL_SIZE + _PACK_ENTRY.size * (len(self.entries) + 1) \
                >= MAX_PACK:
            raise ValueError("pack would exceed 4 GiB")
        self._put(self._len, blob)
        self._len += len(blob)
        self.entries.append(entry)
        return entry

    def chunk(self, offset: int, length: int) -> bytes:
        """A chunk added earlier (for readers while the pack is not yet written)."""
        return bytes(self._buf[offset:offset + length])

    def seal(self) -> tuple[bytes, memoryview]:
        """(pack id, pack bytes: a view of the buffer); no chunk may be added afterwards
        (``chunk`` still reads, for readers while the pack is being written)."""
        table = self._len
        rows = b"".join(_PACK_ENTRY.pack(e.digest, e.offset, e.length) for e in self.entries)
        count_and_offset = struct.pack("<QQ", len(self.entries), table)
        tail = rows + count_and_offset + hashlib.sha256(rows + count_and_offset).digest()
        self._put(table, tail)
        self._len = table + len(tail)
        self._sealed = True
        data = memoryview(self._buf)[:self._len]
        return hashlib.sha256(tail).digest(), data


def tail_offset(size: int) -> int:
    """Where a pack of ``size`` bytes keeps its fixed-size tail."""
    return size - TAIL_SIZE


def parse_tail(tail: bytes, size: int) -> tuple[int, int]:
    """(entry count, entries offset) from a pack's last TAIL_SIZE bytes."""
    if len(tail) != TAIL_SIZE:
        raise IntegrityError(f"pack tail is {len(tail)} bytes, expected {TAIL_SIZE}")
    count, table, _ = _PACK_TAIL.unpack(tail)
    if table < HEADER_SIZE or table + count * _PACK_ENTRY.size != size - TAIL_SIZE:
        raise IntegrityError(f"pack tail inconsistent ({count} entries at {table}, "
                             f"size {size})")
    return count, table


def parse_entries(table: bytes, tail: bytes) -> list[Entry]:
    """The entries of a pack from its entry table and tail, checked against the tail's
    checksum; IntegrityError when damaged."""
    count, _offset, seal = _PACK_TAIL.unpack(tail)
    if hashlib.sha256(table + tail[:16]).digest() != seal or \
            len(table) != count * _PACK_ENTRY.size:
        raise IntegrityError("pack entry table does not match its checksum")
    entries = [Entry(*_PACK_ENTRY.unpack_from(table, i * _PACK_ENTRY.size))
               for i in range(count)]
    return entries


def check_header(head: bytes) -> None:
    if len(head) < HEADER_SIZE:
        raise IntegrityError("pack is truncated")
    magic, version, _ = _PACK_HEAD.unpack_from(head)
    if magic != PACK_MAGIC or version != FORMAT:
        raise IntegrityError(f"not a pack of format {FORMAT} (magic {magic!r}, v{version})")


def encode_index(packs: list[tuple[bytes, list[Entry]]]) -> tuple[bytes, bytes]:
    """A pack index object for ``packs`` [(pack id, entries)]: (index id, bytes)."""
    rows = sorted((e.digest, n, e.offset, e.length)
                  for n, (_, entries) in enumerate(packs) for e in entries)
    out = bytearray(_INDEX_HEAD.pack(INDEX_MAGIC, FORMAT, len(packs), len(rows)))
    for pack_id, _ in packs:
        out += pack_id
    for row in rows:
        out += _INDEX_ENTRY.pack(*row)
    out += hashlib.sha256(out).digest()
    data = bytes(out)
    return hashlib.sha256(data).digest(), data


def decode_index(data: bytes) -> tuple[list[bytes], list[tuple[bytes, int, int, int]]]:
    """(pack ids, [(digest, pack number, offset, length)]) of a pack index object;
    IntegrityError when it is damaged."""
    if len(data) < _INDEX_HEAD.size + 32:
        raise IntegrityError(f"pack index is truncated ({len(data)} bytes)")
    if hashlib.sha256(data[:-32]).digest() != data[-32:]:
        raise IntegrityError("pack index does not match its checksum (damaged)")
    magic, version, npacks, count = _INDEX_HEAD.unpack_from(data)
    if magic != INDEX_MAGIC or version != FORMAT:
        raise IntegrityError(f"not a pack index of format {FORMAT} (magic {magic!r})")
    start = _INDEX_HEAD.size
    if len(data) != start + 32 * npacks + _INDEX_ENTRY.size * count + 32:
        raise IntegrityError("pack index length does not match its counts")
    packs = [data[start + 32 * i: start + 32 * (i + 1)] for i in range(npacks)]
    base = start + 32 * npacks
    rows = [_INDEX_ENTRY.unpack_from(data, base + i * _INDEX_ENTRY.size) for i in range(count)]
    for _, number, _, _ in rows:
        if number >= npacks:
            raise IntegrityError(f"pack index names pack {number} of {npacks}")
    return packs, rows
