"""The block journal of a pending backup: which blocks of a disk are durably stored.

``journal-<key>/<seq>`` are the segments of one disk's journal, each one object written
once (``Store.put``), in ``seq`` order. A segment is a run of 44-byte little-endian records:
a u64 block number, the block's digest (32 bytes; all zeros for an all-zero block) and a
CRC-32 of those 40 bytes. A record is written only after a ``sync`` of the chunk store made
its chunk durable and indexed, so every record can be trusted as it is. A later record for
a block supersedes an earlier one.

A segment that begins with the ``RESET`` record replaces every earlier segment (it is how
a resume onto a new snapshot forgets blocks that changed since: ``rewrite``). Readers start
at the last such segment, so a crash between writing it and deleting the older segments
changes nothing.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterable, Iterator

from mover.errors import IntegrityError
from mover.repo import layout
from mover.repo.store import Store

_BODY = struct.Struct("<Q32s")
RECORD_SIZE = _BODY.size + 4
ZERO = bytes(32)
RESET = (1 << 63) - 1


def _encode(entries: Iterable[tuple[int, bytes | None]]) -> bytearray:
    out = bytearray()
    for block, digest in entries:
        body = _BODY.pack(block, digest or ZERO)
        out += body + struct.pack("<I", zlib.crc32(body))
    return out


class Journal:
    """The journal of one disk of one pending backup. One writer (the disk's copy)."""

    def __init__(self, store: Store, vm: str, backup_id: str, key: int,
                 guard: Callable[[], None] | None = None) -> None:
        self.store = store
        self._guard = guard      # called before each segment is written (lease check)
        self.prefix = layout.journal_prefix(vm, backup_id, key)
        self._vm, self._id, self._key = vm, backup_id, key
        self._next = self._last() + 1

    def _segments(self) -> list[str]:
        return list(self.store.list(self.prefix))

    def _last(self) -> int:
        names = self._segments()
        return int(names[-1][len(self.prefix):]) if names else -1

    def append(self, entries: Iterable[tuple[int, bytes | None]]) -> None:
        """One segment with a record for each (block, digest or None for a zero block)."""
        self._put(_encode(entries))

    def rewrite(self, entries: Iterable[tuple[int, bytes | None]]) -> None:
        """Replace the whole journal by records for exactly ``entries``, atomically."""
        older = self._segments()
        self._put(_encode([(RESET, None)]) + _encode(entries), force=True)
        self.store.delete_many(older)

    def clear(self) -> None:
        """Start the journal afresh (a disk planned from scratch)."""
        self.rewrite(())

    def _put(self, data: bytearray, force: bool = False) -> None:
        if not data and not force:
            return
        if self._guard is not None:
            self._guard()
        while not self.store.put(layout.journal_segment(self._vm, self._id, self._key,
                                                        self._next), data):
            self._next += 1  # taken: an earlier writer of this backup got there first
        self._next += 1

    def read(self) -> Iterator[tuple[int, bytes | None]]:
        """Every record in order from the last reset: (block, digest or None). Streams:
        memory does not grow with the disk. IntegrityError names a damaged segment."""
        names = self._segments()
        start = 0
        for at in range(len(names) - 1, -1, -1):
            head = self.store.get(names[at], 0, RECORD_SIZE)
            if len(head) == RECORD_SIZE and _BODY.unpack_from(head)[0] == RESET:
                start = at
                break
        for name in names[start:]:
            data = self.store.get(name)
            if len(data) % RECORD_SIZE:
                raise IntegrityError(f"journal segment {name} is torn ({len(data)} bytes)")
            for offset in range(0, len(data), RECORD_SIZE):
                body = data[offset:offset + _BODY.size]
                (crc,) = struct.unpack_from("<I", data, offset + _BODY.size)
                if zlib.crc32(body) != crc:
                    raise IntegrityError(f"journal segment {name} is damaged at {offset}")
                block, digest = _BODY.unpack(body)
                if block != RESET:
                    yield block, None if digest == ZERO else digest
