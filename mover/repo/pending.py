"""A backup being written: its indexes, then its record, committed last."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from mover.errors import ObjectMissing, RepositoryError
from mover.index import FixedIndex
from mover.repo import layout
from mover.repo.journal import Journal
from mover.repo.locks import Lock
from mover.repo.records import BackupRecord
from mover.repo.store import Store

log = logging.getLogger(__name__)


class PendingBackup:
    """An uncommitted backup (``backups/<vm>/<id>/`` without ``backup.json``) and the locks
    that mark it as running.

    Invisible to readers until :meth:`commit` writes ``backup.json``. Use it as a context
    manager: leaving the block without a commit aborts. ``write_index`` may be called from
    several threads (one per disk); ``commit`` and ``abort`` from one.
    """

    def __init__(self, store: Store, vm_instance_uuid: str, backup_id: str,
                 held: list[Lock], drain: Callable[[], None] | None = None,
                 on_finish: Callable[[PendingBackup], None] | None = None) -> None:
        self.store = store
        self._on_finish = on_finish  # told when this backup is committed or left
        self._drain = drain          # waits for the chunk store's pack writes in flight
        self.backup_id = backup_id
        self.vm_instance_uuid = vm_instance_uuid
        self.prefix = layout.backup_dir(vm_instance_uuid, backup_id)
        self._held = held
        self._written: set[int] = set()
        self._guard = threading.Lock()
        self._done = False

    def write_index(self, key: int, index: FixedIndex) -> None:
        """Store the index of disk ``key`` (replacing an earlier one of this backup)."""
        self._check_open()
        self.check_locks()
        self.store.put(layout.disk_index(self.vm_instance_uuid, self.backup_id, key),
                       index.to_bytes(), replace=True)
        with self._guard:
            self._written.add(key)

    def write_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store what a later run needs to resume this backup. A pending backup with a
        checkpoint is kept when the run fails or is interrupted."""
        self._check_open()
        self.check_locks()   # a run that took over this backup id owns its checkpoint now
        data = json.dumps(checkpoint, indent=2, sort_keys=True).encode() + b"\n"
        self.store.put(layout.checkpoint(self.vm_instance_uuid, self.backup_id), data,
                       replace=True)

    def read_checkpoint(self) -> dict[str, Any] | None:
        return read_checkpoint(self.store, self.vm_instance_uuid, self.backup_id)

    def journal(self, key: int) -> Journal:
        self._check_open()
        return Journal(self.store, self.vm_instance_uuid, self.backup_id, key,
                       guard=self.check_locks)

    def rewrite_journal(self, key: int, index: FixedIndex, done: bytes | bytearray,
                        sync: Callable[[], None]) -> None:
        """Replace the journal of disk ``key`` by records of exactly the blocks marked in
        ``done`` (with their digests in ``index``), atomically. ``sync`` makes their chunks
        durable first, so the records may name them."""
        sync()
        entries: Iterable[tuple[int, bytes | None]] = (
            (b, index.get(b)) for b, d in enumerate(done) if d)
        self.journal(key).rewrite(entries)

    def commit(self, record: BackupRecord) -> None:
        """Write ``backup.json`` last; when this returns, the backup exists and is durable.

        The caller guarantees every chunk the indexes name is durable (a sync returned).
        RepositoryError if the record does not match this backup or lacks a disk index.
        """
        self._check_open()
        missing = sorted({disk.key for disk in record.disks} - self._written)
        if record.id != self.backup_id or record.vm_instance_uuid != self.vm_instance_uuid:
            raise RepositoryError(f"record {record.id} of {record.vm_instance_uuid} does not "
                                  f"belong to pending backup {self.prefix}")
        if missing:
            raise RepositoryError(f"backup {record.id}: no index written for disks {missing}")
        record.status = "committed"
        self.check_locks()
        for key in sorted({disk.key for disk in record.disks}):
            # Written by this run, but a run that took over the backup id while this one
            # was paused may have removed it: a record must not name a missing index.
            name = layout.disk_index(self.vm_instance_uuid, self.backup_id, key)
            if self.store.stat(name) is None:
                raise RepositoryError(f"backup {record.id}: its index {name} of "
                                      f"{self.store.describe()} is gone (removed by another "
                                      "run of this backup id?); nothing is committed, run "
                                      "the backup again")
        data = json.dumps(record.to_json(), indent=2, sort_keys=True).encode() + b"\n"
        if not self.store.put(layout.record(self.vm_instance_uuid, self.backup_id), data):
            raise RepositoryError(f"backup {record.id} is already committed")
        self.store.delete_many([n for n in self.store.list(self.prefix)
                                if n.endswith("/" + layout.CHECKPOINT) or "/journal-" in n])
        self._finish()

    def suspend(self) -> None:
        """Leave the pending backup for a later resume and release its locks; an abort if
        no checkpoint was written (nothing could be resumed from it)."""
        if self._done:
            return
        if self._locks_held() and self.read_checkpoint() is None:
            self.abort()
            return
        self._finish()

    def abort(self) -> None:
        """Remove everything this backup wrote; safe to call twice or after a commit. With
        a lock lost (its lease ran out) nothing is removed: another run may have taken over
        this backup id and written there since; what is left, ``clean_stale`` sweeps."""
        if self._done:
            return
        if self._locks_held():
            with contextlib.suppress(RepositoryError):  # what is left, clean_stale sweeps
                remove_pending(self.store, self.prefix)
        self._finish()

    def _locks_held(self) -> bool:
        try:
            self.check_locks()
        except RepositoryError as exc:
            log.warning("backup %s is left as it is: %s", self.prefix, exc)
            return False
        return True

    def check_locks(self) -> None:
        """RepositoryError if a lock of this backup may have been lost (a leased lock whose
        lease ran out while the process was paused): then gc may have run, and nothing
        that names chunks may be written any more (``mover.repo.leases``)."""
        for lock in self._held:
            lock.check()

    def _check_open(self) -> None:
        if self._done:
            raise RepositoryError(f"backup {self.backup_id} was already committed or aborted")

    def _finish(self) -> None:
        self._done = True
        try:
            # No pack may land after the locks are gone: a gc waiting for them could list
            # the indexes before it and the packs after it, and delete it as unindexed.
            if self._drain is not None:
                self._drain()
        finally:
            if self._on_finish is not None:
                self._on_finish(self)
            for lock in reversed(self._held):
                lock.release()

    def __enter__(self) -> PendingBackup:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.abort()


def remove_pending(store: Store, prefix: str) -> None:
    """Delete the objects of an uncommitted backup; a committed one is left alone."""
    names = list(store.list(prefix))
    if any(n.endswith("/" + layout.RECORD) for n in names):
        return
    store.delete_many(names)


def read_checkpoint(store: Store, vm: str, backup_id: str) -> dict[str, Any] | None:
    """The checkpoint of a pending backup, or None if it has none (or a damaged one: a
    checkpoint only saves work, so a damaged one means starting clean)."""
    try:
        data = json.loads(store.get(layout.checkpoint(vm, backup_id)))
    except (ObjectMissing, ValueError):
        return None
    return data if isinstance(data, dict) else None
