"""A backup being written: its indexes, then its record, committed last."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from mover.errors import RepositoryError
from mover.index import FixedIndex
from mover.repo import locks
from mover.repo.atomic import fsync_dir, write_atomic
from mover.repo.ioerrors import io_error
from mover.repo.journal import JournalWriter, journal_name, read_journal
from mover.repo.records import BackupRecord

RECORD = "backup.json"
CHECKPOINT = "checkpoint.json"


def index_name(key: int) -> str:
    return f"disk-{key}.idx"


class PendingBackup:
    """The directory of an uncommitted backup, plus the locks that mark it as running.

    Invisible to readers until :meth:`commit` writes ``backup.json``. Use it as a context
    manager: leaving the block without a commit aborts. ``write_index`` may be called from
    several threads (one per disk); ``commit`` and ``abort`` from one.
    """

    def __init__(self, directory: Path, tmp_dir: Path, backup_id: str, vm_instance_uuid: str,
                 held: list[tuple[int, Path | None]], marker: Path | None = None,
                 sync: Callable[[], None] | None = None) -> None:
        self.directory = directory
        self.backup_id = backup_id
        self.vm_instance_uuid = vm_instance_uuid
        self._tmp_dir = tmp_dir
        self._held = held            # (lock fd, lock file to remove when done)
        self._marker = marker        # mover.repo.dirty: removed after a final sync
        self._sync = sync
        self._written: set[int] = set()
        self._guard = threading.Lock()
        self._done = False

    def write_index(self, key: int, index: FixedIndex) -> None:
        """Store the index of disk ``key`` atomically and durably (replacing an earlier one)."""
        path = self.directory / index_name(key)
        self._check_open()
        try:
            write_atomic(path, index.to_bytes(), self._tmp_dir)
        except OSError as exc:
            raise io_error(f"cannot write index {path}", exc) from exc
        with self._guard:
            self._written.add(key)

    def write_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store what a later run needs to resume this backup (atomically, durably). A
        pending directory with a checkpoint is kept when the run fails or is interrupted."""
        self._check_open()
        path = self.directory / CHECKPOINT
        data = json.dumps(checkpoint, indent=2, sort_keys=True).encode() + b"\n"
        try:
            write_atomic(path, data, self._tmp_dir)
            fsync_dir(self.directory.parent)
        except OSError as exc:
            raise io_error(f"cannot write checkpoint {path}", exc) from exc

    def read_checkpoint(self) -> dict[str, Any] | None:
        return read_checkpoint(self.directory)

    def journal(self, key: int, truncate: bool = False) -> JournalWriter:
        """The journal of disk ``key``; ``truncate`` starts it afresh."""
        self._check_open()
        return JournalWriter(self.directory / journal_name(key), truncate)

    def rewrite_journal(self, key: int, index: FixedIndex, done: bytes | bytearray,
                        sync: Callable[[], None]) -> None:
        """Replace the journal of disk ``key`` by synced records of exactly the blocks
        marked in ``done`` (with their digests in ``index``), atomically. ``sync`` makes
        their chunks durable first, so the records may say so."""
        self._check_open()
        sync()
        path = self.directory / journal_name(key)
        temp = path.with_suffix(".rewrite")
        writer = JournalWriter(temp, truncate=True)
        try:
            writer.append(((b, index.get(b)) for b, d in enumerate(done) if d), synced=True)
            writer.sync()
        finally:
            writer.close()
        try:
            os.replace(temp, path)
            fsync_dir(self.directory)
        except OSError as exc:
            raise io_error(f"cannot replace journal {path}", exc) from exc

    def journaled(self, key: int) -> Iterator[tuple[int, bytes | None, bool]]:
        """The journal of disk ``key`` as written by an earlier run (see ``read_journal``)."""
        return read_journal(self.directory / journal_name(key))

    def commit(self, record: BackupRecord) -> None:
        """Write ``backup.json`` last; when this returns, the backup exists and is durable.

        The caller guarantees every chunk the indexes name was stored (``put`` returned).
        RepositoryError if the record does not match this backup or lacks a disk index.
        """
        self._check_open()
        missing = sorted({disk.key for disk in record.disks} - self._written)
        if record.id != self.backup_id or record.vm_instance_uuid != self.vm_instance_uuid:
            raise RepositoryError(f"record {record.id} of {record.vm_instance_uuid} does not "
                                  f"belong to pending backup {self.directory}")
        if missing:
            raise RepositoryError(f"backup {record.id}: no index written for disks {missing}")
        record.status = "committed"
        data = json.dumps(record.to_json(), indent=2, sort_keys=True).encode() + b"\n"
        path = self.directory / RECORD
        try:
            write_atomic(path, data, self._tmp_dir)
            # The backup's and the VM's directories were created by begin(): make their
            # entries durable too, or a crash could lose a "committed" backup.
            fsync_dir(self.directory.parent)
            fsync_dir(self.directory.parent.parent)
        except OSError as exc:
            raise io_error(f"cannot commit {path}", exc) from exc
        for leftover in (CHECKPOINT, *(journal_name(k) for k in self._written)):
            (self.directory / leftover).unlink(missing_ok=True)
        self._finish()

    def suspend(self) -> None:
        """Leave the directory for a later resume and release its locks; an abort if no
        checkpoint was written (nothing could be resumed from it)."""
        if self._done:
            return
        if not (self.directory / CHECKPOINT).exists():
            self.abort()
            return
        self._finish()

    def abort(self) -> None:
        """Remove everything this backup wrote; safe to call twice or after a commit."""
        if self._done:
            return
        shutil.rmtree(self.directory, ignore_errors=True)
        self._finish()

    def _check_open(self) -> None:
        if self._done:
            raise RepositoryError(f"backup {self.backup_id} was already committed or aborted")

    def _finish(self) -> None:
        self._done = True
        try:
            if self._marker is not None:
                if self._sync is not None:
                    self._sync()  # the chunks of this backup are durable: no power-loss check
                self._marker.unlink(missing_ok=True)
        except (OSError, RepositoryError):
            pass  # the marker stays: the next clean_stale syncs or checks instead
        finally:
            for fd, remove in reversed(self._held):
                locks.release(fd, remove)

    def __enter__(self) -> PendingBackup:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.abort()


def read_checkpoint(directory: Path) -> dict[str, Any] | None:
    """The checkpoint of a pending backup directory, or None if it has none (or a damaged
    one: a checkpoint only saves work, so a damaged one means starting clean)."""
    try:
        data = json.loads((directory / CHECKPOINT).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
