"""The block journal of a pending backup: which blocks of a disk are already stored.

``disk-<key>.journal`` is append-only. Each record is 44 bytes, little-endian: the block
number (u64), its digest (32 bytes; all zeros for an all-zero block) and a CRC-32 of those
40 bytes. A record is appended only after the chunk it names was stored, so every record
names a chunk that exists. A crash can leave a torn last record; readers stop at the first
record that is short or fails its CRC. Records appended with ``os.write`` survive the death
of the process (they are in the page cache); ``sync`` makes them survive a power loss.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from mover.repo.ioerrors import io_error

_BODY = struct.Struct("<Q32s")
_RECORD = struct.Struct("<Q32sI")
RECORD_SIZE = _RECORD.size
ZERO = bytes(32)


def journal_name(key: int) -> str:
    return f"disk-{key}.journal"


class JournalWriter:
    """Appends records for one disk. Not thread-safe: one writer per disk, on one thread."""

    def __init__(self, path: Path, truncate: bool = False) -> None:
        self.path = path
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        try:
            self._fd = os.open(path, flags | (os.O_TRUNC if truncate else 0), 0o644)
        except OSError as exc:
            raise io_error(f"cannot open journal {path}", exc) from exc

    def append(self, entries: Iterable[tuple[int, bytes | None]]) -> None:
        """One write for all ``entries`` (block, digest or None for a zero block)."""
        out = bytearray()
        for block, digest in entries:
            body = _BODY.pack(block, digest or ZERO)
            out += body + struct.pack("<I", zlib.crc32(body))
        if out:
            try:
                os.write(self._fd, out)
            except OSError as exc:
                raise io_error(f"cannot append to journal {self.path}", exc) from exc

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_journal(path: Path) -> Iterator[tuple[int, bytes | None]]:
    """Every intact record in order (a later record for a block supersedes an earlier one):
    (block, digest or None for a zero block). Streams: memory does not grow with the disk."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise io_error(f"cannot read journal {path}", exc) from exc
    with f:
        while len(batch := f.read(RECORD_SIZE * 4096)) >= RECORD_SIZE:
            for offset in range(0, len(batch) - RECORD_SIZE + 1, RECORD_SIZE):
                block, digest, crc = _RECORD.unpack_from(batch, offset)
                if zlib.crc32(batch[offset : offset + _BODY.size]) != crc:
                    return  # a torn write: nothing after it can be trusted
                yield block, None if digest == ZERO else digest
            if len(batch) % RECORD_SIZE:
                return  # a torn last record
