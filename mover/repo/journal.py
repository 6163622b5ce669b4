"""The block journal of a pending backup: which blocks of a disk are already stored.

``disk-<key>.journal`` is append-only. Each record is 44 bytes, little-endian: a u64 whose
low 63 bits are the block number and whose top bit is set while the block's chunk is *not
yet synced*, its digest (32 bytes; all zeros for an all-zero block), and a CRC-32 of those 40
bytes. A block gets a record as soon as its chunk is stored (that record survives the death
of the process: it is in the page cache) and a second, synced one once a sync of the chunk
store made the chunk durable (that record survives a power loss too). A later record for a
block supersedes an earlier one. Readers stop at the first record that is short or fails its
CRC (a torn write); a writer reopening the journal first cuts such a tail off.
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
_UNSYNCED = 1 << 63


def journal_name(key: int) -> str:
    return f"disk-{key}.journal"


class JournalWriter:
    """Appends records for one disk. Not thread-safe: one writer per disk, on one thread."""

    def __init__(self, path: Path, truncate: bool = False) -> None:
        self.path = path
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        try:
            self._fd = os.open(path, flags | (os.O_TRUNC if truncate else 0), 0o644)
            if not truncate:  # appending behind a torn record would hide every later one
                os.ftruncate(self._fd, _intact_length(path))
        except OSError as exc:
            raise io_error(f"cannot open journal {path}", exc) from exc

    def append(self, entries: Iterable[tuple[int, bytes | None]], synced: bool) -> None:
        """One write for all ``entries`` (block, digest or None for a zero block)."""
        flag = 0 if synced else _UNSYNCED
        out = bytearray()
        for block, digest in entries:
            body = _BODY.pack(block | flag, digest or ZERO)
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


def read_journal(path: Path) -> Iterator[tuple[int, bytes | None, bool]]:
    """Every intact record in order: (block, digest or None for a zero block, synced).
    Streams: memory does not grow with the disk."""
    for _offset, record in _records(path):
        block, digest, _ = _RECORD.unpack(record)
        yield block & ~_UNSYNCED, None if digest == ZERO else digest, not block & _UNSYNCED


def _records(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise io_error(f"cannot read journal {path}", exc) from exc
    offset = 0
    with f:
        while len(batch := f.read(RECORD_SIZE * 4096)) >= RECORD_SIZE:
            for start in range(0, len(batch) - RECORD_SIZE + 1, RECORD_SIZE):
                record = batch[start : start + RECORD_SIZE]
                (crc,) = struct.unpack_from("<I", record, _BODY.size)
                if zlib.crc32(record[: _BODY.size]) != crc:
                    return  # a torn write: nothing after it can be trusted
                yield offset, record
                offset += RECORD_SIZE
            if len(batch) % RECORD_SIZE:
                return  # a torn last record


def _intact_length(path: Path) -> int:
    end = 0
    for offset, _ in _records(path):
        end = offset + RECORD_SIZE
    return end
