"""A repository: its configuration, chunks in packs, and backups. See ``docs/repository.md``."""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mover import clock
from mover.errors import IntegrityError, NotFoundError, ObjectMissing, RepositoryError
from mover.index import FixedIndex
from mover.repo import layout
from mover.repo.config import RepoConfig
from mover.repo.localstore import LocalStore
from mover.repo.locks import FileLocks, Lock, Locks
from mover.repo.packs import PACK_TARGET, PackedChunks
from mover.repo.pending import PendingBackup, read_checkpoint, remove_pending
from mover.repo.records import BackupRecord
from mover.repo.s3url import RepoLocation, is_s3_url
from mover.repo.store import Store

# Names a directory may already hold and still become a repository (a fresh mount point).
_TOLERATED = {"lost+found", "tmp", "locks"}


class Repository:
    """One repository on one store. Thread-safe and safe for several processes; see the
    package docstring for which operations may run together."""

    def __init__(self, store: Store, locks: Locks, config: RepoConfig,
                 pack_target: int = PACK_TARGET) -> None:
        self.store = store
        self.locks = locks
        self.config = config
        self.codec = config.codec()
        self.chunks = PackedChunks(store, self.codec, pack_target)
        self._writing: dict[int, PendingBackup] = {}   # pending backups of this process
        self._writing_guard = threading.Lock()
        self.chunks.guard = self._check_writers

    @property
    def location(self) -> str:
        return self.store.describe()

    @classmethod
    def open(cls, path: RepoLocation, create: bool = True,
             block_size: int | None = None) -> Repository:
        """Open the repository directory ``path``, creating it (with ``block_size``) if
        ``create``. See :meth:`on`.

        ``path`` may be a URL ``s3://BUCKET/PREFIX`` (endpoint and credentials from the AWS
        SDK's environment, ``mover.repo.s3store``); its locks are leased lock objects in
        the bucket (``mover.repo.leases``), and ``create`` creates a missing bucket."""
        if isinstance(path, str) and is_s3_url(path):
            return cls._open_s3(path, create, block_size)
        root = Path(path).absolute()
        if create and root.exists() and not root.is_dir():
            raise RepositoryError(f"{root} is not a directory; choose a new or empty one")
        return cls.on(LocalStore(root), FileLocks(root / "locks"), create, block_size)

    @classmethod
    def _open_s3(cls, url: str, create: bool, block_size: int | None) -> Repository:
        from mover.repo.leases import LeasedLocks, LeaseTimes
        from mover.repo.s3store import S3Store  # boto3 loads in 0.2 s: only when used
        times = LeaseTimes.from_environment()
        store = S3Store.from_url(url, create_bucket=create)
        return cls.on(_with_index_cache(store), LeasedLocks(store, times), create, block_size)

    @classmethod
    def on(cls, store: Store, locks: Locks, create: bool = True,
           block_size: int | None = None, pack_target: int = PACK_TARGET) -> Repository:
        """Open the repository in ``store``, creating it if ``create``.

        RepositoryError if it is missing and not ``create``, if the store holds something
        else, or if ``block_size`` contradicts the existing repository's.
        """
        where = store.describe()
        try:
            config = RepoConfig.parse(store.get(layout.CONFIG), f"{where}/{layout.CONFIG}")
        except ObjectMissing:
            if not create:
                raise RepositoryError(f"no mover repository at {where} ({layout.CONFIG} "
                                      "missing); check the path") from None
            config = _create(store, RepoConfig() if block_size is None
                             else RepoConfig(block_size=block_size))
        if block_size is not None and block_size != config.block_size:
            raise RepositoryError(f"repository {where} uses block size {config.block_size}, "
                                  f"not {block_size}; omit the block size or use another "
                                  "repository")
        return cls(store, locks, config, pack_target)

    def read_block(self, digest: bytes) -> bytes:
        """The verified bytes of the block with ``digest`` (IntegrityError if damaged)."""
        return self.chunks.read_block(digest)

    @staticmethod
    def new_backup_id() -> str:
        """``YYYYMMDDTHHMMSSZ-xxxxxx``: sorts by creation second, unique by 24 random bits
        (and ``begin`` refuses an id that is already taken)."""
        stamp = clock.now().strftime("%Y%m%dT%H%M%SZ")
        return f"{stamp}-{secrets.token_hex(3)}"

    is_backup_id = staticmethod(layout.is_backup_id)

    def begin(self, vm_instance_uuid: str, backup_id: str, resume: bool = False) -> PendingBackup:
        """Start writing backup ``backup_id`` of a VM. Call it before storing the backup's
        chunks: the shared repository lock it takes is what gc waits for.

        ``resume`` takes over the pending backup an interrupted run left (see
        ``resumable``) instead of starting a new one."""
        prefix = _checked(layout.backup_dir, vm_instance_uuid, backup_id)
        held: list[Lock] = []
        try:
            shared = self.locks.acquire(layout.LOCK_REPOSITORY, shared=True)
            assert shared is not None  # a waiting acquire always returns a lock
            held.append(shared)
            own = self.locks.acquire(layout.lock_backup(backup_id), wait=False)
            if own is None:  # a live writer uses this id: fail now rather than wait for it
                raise RepositoryError(f"backup id {backup_id} is already in use")
            held.append(own)
            names = list(self.store.list(prefix))
            if resume and (not names or any(n.endswith("/" + layout.RECORD) for n in names)):
                raise RepositoryError(f"backup {backup_id} cannot be resumed: it is "
                                      "committed or gone")
            if not resume and names:
                raise RepositoryError(f"backup id {backup_id} is already in use")
            self.chunks.refresh()  # deduplicate against what other writers stored since
        except BaseException:
            for lock in reversed(held):
                lock.release()
            raise
        pending = PendingBackup(self.store, vm_instance_uuid, backup_id, held,
                                self.chunks.drain, on_finish=self._finished)
        with self._writing_guard:
            self._writing[id(pending)] = pending
        return pending

    def _finished(self, pending: PendingBackup) -> None:
        with self._writing_guard:
            self._writing.pop(id(pending), None)

    def _check_writers(self) -> None:
        """Before a pack or a pack index is written: the locks of every pending backup of this
        process still hold (packs are shared by the backups of one process)."""
        with self._writing_guard:
            writers = list(self._writing.values())
        for pending in writers:
            pending.check_locks()

    def resumable(self, vm_instance_uuid: str) -> list[tuple[str, dict[str, Any]]]:
        """Pending backups of a VM that left a checkpoint: (backup id, checkpoint), newest
        first. One may still be running; ``begin(resume=True)`` refuses that one."""
        prefix = _checked(layout.vm_backups, vm_instance_uuid)
        found: dict[str, set[str]] = {}
        for name in self.store.list(prefix):
            parts = layout.split_backup(name)
            if parts is not None:
                found.setdefault(parts[1], set()).add(parts[2].split("/")[0])
        result = []
        for backup_id in sorted(found, reverse=True):
            if layout.RECORD in found[backup_id] or layout.CHECKPOINT not in found[backup_id]:
                continue
            checkpoint = read_checkpoint(self.store, vm_instance_uuid, backup_id)
            if checkpoint is not None:
                result.append((backup_id, checkpoint))
        return result

    def is_running(self, backup_id: str) -> bool:
        """Whether some process is writing backup ``backup_id`` now (holds its lock)."""
        lock = self.locks.acquire(layout.lock_backup(backup_id), wait=False)
        if lock is None:
            return True
        lock.release()
        return False

    def discard(self, vm_instance_uuid: str, backup_id: str) -> bool:
        """Remove a pending backup whose writer is gone; False if it is running."""
        try:
            pending = self.begin(vm_instance_uuid, backup_id, resume=True)
        except RepositoryError:
            return False
        pending.abort()
        return True

    def list_backups(self, vm_instance_uuid: str | None = None) -> list[BackupRecord]:
        """Committed backups, oldest first; IntegrityError names a damaged ``backup.json``."""
        records = []
        for _name, record in self.scan(vm_instance_uuid):
            if isinstance(record, RepositoryError):
                raise record
            records.append(record)
        return sorted(records, key=lambda r: (r.created_at, r.id))

    def get_backup(self, backup_id: str) -> BackupRecord:
        """The backup with this id, or NotFoundError."""
        if layout.is_backup_id(backup_id) or _valid(backup_id):
            for name, record in self.scan():
                parts = layout.split_backup(name)
                if parts is not None and parts[1] == backup_id:
                    if isinstance(record, RepositoryError):
                        raise record
                    return record
        raise NotFoundError(f"backup {backup_id} is not in repository {self.location}; "
                            "`mover list` shows the backups there")

    def latest(self, vm_instance_uuid: str) -> BackupRecord | None:
        """The newest committed backup of a VM, or None."""
        backups = self.list_backups(vm_instance_uuid)
        return backups[-1] if backups else None

    def read_index(self, record: BackupRecord, key: int) -> FixedIndex:
        """The index of disk ``key``; IntegrityError naming it if missing or damaged."""
        name = layout.disk_index(record.vm_instance_uuid, record.id, key)
        try:
            index = FixedIndex.from_bytes(self.store.get(name))
        except ObjectMissing as exc:
            raise IntegrityError(f"index {name} of backup {record.id} is missing") from exc
        except IntegrityError as exc:
            raise IntegrityError(f"index {name} is damaged: {exc}") from exc
        disk = next((d for d in record.disks if d.key == key), None)
        if disk and (disk.capacity, disk.block_size) != (index.capacity, index.block_size):
            raise IntegrityError(f"index {name} describes {index.capacity} bytes in blocks of "
                                 f"{index.block_size}, the record {disk.capacity}/"
                                 f"{disk.block_size}")
        return index

    def scan(self, vm_instance_uuid: str | None = None
             ) -> Iterator[tuple[str, BackupRecord | RepositoryError]]:
        """Every ``backup.json`` with its record or the error reading it (for verify)."""
        prefix = layout.BACKUPS if vm_instance_uuid is None else _checked(
            layout.vm_backups, vm_instance_uuid)
        for name in self.store.list(prefix):
            if not name.endswith("/" + layout.RECORD):
                continue
            try:
                yield name, _read_record(self.store, name)
            except RepositoryError as exc:
                yield name, exc

    def remove_backup(self, record: BackupRecord) -> None:
        """Forget a committed backup: its record first (from then on it does not exist),
        then its indexes. Its chunks stay until gc."""
        prefix = layout.backup_dir(record.vm_instance_uuid, record.id)
        self.store.delete(layout.record(record.vm_instance_uuid, record.id))
        remove_pending(self.store, prefix)

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Hold the repository lock shared while reading (restore, verify): gc, which takes
        it exclusively, then waits instead of deleting a pack being read. A table loaded
        before gc ran is rebuilt here."""
        lock = self.locks.acquire(layout.LOCK_REPOSITORY, shared=True)
        try:
            self.chunks.refresh()
            yield
        finally:
            if lock is not None:
                lock.release()

    def verify(self, read_data: bool = False) -> list[str]:
        """Problems found, one sentence each; empty means healthy (``mover.repo.verify``)."""
        from mover.repo.verify import verify
        with self.reading():
            return [p.message for p in verify(self, read_data)]

    def clean_stale(self, max_age: float = 3600.0) -> list[str]:
        """Remove debris of crashed writers older than ``max_age`` seconds
        (``mover.repo.stale``); returns what was removed."""
        from mover.repo.stale import clean_stale
        return clean_stale(self, max_age)


def _with_index_cache(store: Store) -> Store:
    """``store`` behind a local cache of its pack indexes (``mover.repo.indexcache``), in
    the cache directory of the repository's id; ``store`` itself for a new repository (or
    one whose config cannot be read: ``on`` says why)."""
    from mover.repo.indexcache import IndexCache, cache_root
    try:
        config = RepoConfig.parse(store.get(layout.CONFIG), layout.CONFIG)
    except RepositoryError:
        return store
    if not re.fullmatch(r"[0-9a-f]{32}", config.id):   # it names a local directory
        return store
    return IndexCache(store, cache_root() / config.id / "index")


def _create(store: Store, config: RepoConfig) -> RepoConfig:
    where = store.describe()
    if any(n.split("/")[0] not in _TOLERATED for n in store.list("")):
        with contextlib.suppress(ObjectMissing):  # another process created it just now
            return RepoConfig.parse(store.get(layout.CONFIG), f"{where}/{layout.CONFIG}")
        raise RepositoryError(f"{where} is not empty and not a mover repository; "
                              "choose a new or empty directory")
    # Create if absent: of two processes creating one repository at once, one config wins
    # and the other reads it (and checks its block size).
    if not store.put(layout.CONFIG, config.to_bytes()):
        return RepoConfig.parse(store.get(layout.CONFIG), f"{where}/{layout.CONFIG}")
    return config


def _read_record(store: Store, name: str) -> BackupRecord:
    try:
        data = json.loads(store.get(name))
    except ValueError as exc:
        raise IntegrityError(f"{store.describe()}/{name} is damaged ({exc}); `mover verify` "
                             "lists every problem") from exc
    return BackupRecord.from_json(data, f"{store.describe()}/{name}")


def _valid(name: str) -> bool:
    try:
        layout.check_component("backup id", name)
    except ValueError:
        return False
    return True


def _checked(make: Any, *parts: str) -> str:
    """A layout name from user-supplied parts; RepositoryError instead of ValueError."""
    try:
        return str(make(*parts))
    except ValueError as exc:
        raise RepositoryError(str(exc)) from None
