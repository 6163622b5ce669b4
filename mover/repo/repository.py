"""The local repository: layout, backups and their indexes. See ``docs/repository.md``."""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zstandard

from mover import chunk, clock
from mover.errors import IntegrityError, NotFoundError, RepositoryError
from mover.index import FixedIndex
from mover.repo import dirty, locks
from mover.repo.atomic import fsync_dir, make_dir, write_temp
from mover.repo.chunks import ChunkStore, LocalChunkStore
from mover.repo.config import RepoConfig, ensure_id, new_id
from mover.repo.ioerrors import io_error
from mover.repo.pending import RECORD, PendingBackup, index_name, read_checkpoint
from mover.repo.records import BackupRecord
from mover.repo.stale import clean_stale
from mover.repo.verify import verify

CONFIG = "config.json"
LAYOUT = ("chunks", "backups", "locks", "tmp")
# Names a directory may already hold and still become a repository (a fresh mount point).
_TOLERATED = {*LAYOUT, CONFIG, "lost+found"}
_BACKUP_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class Repository:
    """One repository directory. Thread-safe and safe for several processes; see the package
    docstring for which operations may run together."""

    def __init__(self, path: Path, config: RepoConfig) -> None:
        self.path = path
        self.config = config
        self.chunks: ChunkStore = LocalChunkStore(path / "chunks", path / "tmp")

    @classmethod
    def open(cls, path: Path, create: bool = True, block_size: int | None = None) -> Repository:
        """Open the repository at ``path``, creating it (with ``block_size``) if ``create``.

        RepositoryError if it is missing and not ``create``, if ``path`` holds something else,
        or if ``block_size`` contradicts the existing repository's.
        """
        path = Path(path).absolute()
        config_path = path / CONFIG
        if config_path.exists():
            config = RepoConfig.load(config_path)
            if not config.id:  # a repository from before ids: give it one, once
                config = ensure_id(config_path, path / "tmp")
        elif not create:
            raise RepositoryError(f"no mover repository at {path} ({CONFIG} missing); "
                                  "check the path")
        else:
            config = _create(path, RepoConfig(id=new_id()) if block_size is None
                             else RepoConfig(block_size=block_size, id=new_id()))
        if block_size is not None and block_size != config.block_size:
            raise RepositoryError(f"repository {path} uses block size {config.block_size}, "
                                  f"not {block_size}; omit the block size or use another "
                                  "repository")
        try:
            for name in LAYOUT:  # an older or damaged layout: the directories are harmless
                make_dir(path / name)
        except OSError as exc:
            raise io_error(f"cannot create the layout of {path}", exc) from exc
        return cls(path, config)

    def compressor(self) -> zstandard.ZstdCompressor:
        """A new compressor at the repository's level; use one per thread."""
        return zstandard.ZstdCompressor(level=self.config.level)

    def read_block(self, digest: bytes, decompressor: zstandard.ZstdDecompressor) -> bytes:
        """The verified bytes of the block with ``digest`` (IntegrityError if damaged)."""
        return chunk.decode(self.chunks.get(digest), digest, decompressor)

    @staticmethod
    def new_backup_id() -> str:
        """``YYYYMMDDTHHMMSSZ-xxxxxx``: sorts by creation second, unique by 24 random bits
        (and ``begin`` refuses an id that is already taken)."""
        stamp = clock.now().strftime("%Y%m%dT%H%M%SZ")
        return f"{stamp}-{secrets.token_hex(3)}"

    def begin(self, vm_instance_uuid: str, backup_id: str, resume: bool = False) -> PendingBackup:
        """Start writing backup ``backup_id`` of a VM. Call it before storing the backup's
        chunks: the shared repository lock it takes is what a future GC will wait for.

        ``resume`` takes over the pending directory an interrupted run left (see
        ``resumable``) instead of creating a new one."""
        _check_name("VM instance UUID", vm_instance_uuid)
        _check_name("backup id", backup_id)
        held: list[tuple[int, Path | None]] = []
        try:
            shared = locks.acquire(self.path / "locks" / "repository.lock", shared=True)
            assert shared is not None  # waiting acquire always returns a descriptor
            held.append((shared, None))
            own = self.path / "locks" / f"backup-{backup_id}.lock"
            fd = locks.acquire(own, wait=False)
            if fd is None:  # a live writer uses this id: fail now rather than wait for it
                raise FileExistsError(own)
            held.append((fd, own))
            directory = self.path / "backups" / vm_instance_uuid / backup_id
            make_dir(directory.parent)
            if not resume:
                directory.mkdir()
            elif (directory / RECORD).exists() or not directory.is_dir():
                raise FileExistsError(directory)
        except FileExistsError as exc:
            _release(held)
            raise RepositoryError(f"backup id {backup_id} is already in use") from exc
        except OSError as exc:
            _release(held)
            raise io_error(f"cannot start backup {backup_id} in {self.path}", exc) \
                from exc
        try:
            marker = dirty.mark(self.path / "locks", backup_id)
        except OSError as exc:
            _release(held)
            raise io_error(f"cannot start backup {backup_id} in {self.path}", exc) from exc
        return PendingBackup(directory, self.path / "tmp", backup_id, vm_instance_uuid, held,
                             marker, self.chunks.sync)

    def resumable(self, vm_instance_uuid: str) -> list[tuple[str, dict[str, Any]]]:
        """Pending backups of a VM that left a checkpoint: (backup id, checkpoint), newest
        first. One may still be running; ``begin(resume=True)`` refuses that one."""
        _check_name("VM instance UUID", vm_instance_uuid)
        found = []
        try:
            directories = sorted(os.scandir(self.path / "backups" / vm_instance_uuid),
                                 key=lambda e: e.name, reverse=True)
        except FileNotFoundError:
            return []
        for entry in directories:
            directory = Path(entry.path)
            if entry.is_dir() and not (directory / RECORD).exists():
                checkpoint = read_checkpoint(directory)
                if checkpoint is not None:
                    found.append((entry.name, checkpoint))
        return found

    @staticmethod
    def is_backup_id(text: str) -> bool:
        """Whether ``text`` has the form of ``new_backup_id``."""
        return _BACKUP_ID.fullmatch(text) is not None

    def is_running(self, backup_id: str) -> bool:
        """Whether some process is writing backup ``backup_id`` now (holds its lock)."""
        path = self.path / "locks" / f"backup-{backup_id}.lock"
        fd = locks.acquire(path, wait=False)
        if fd is None:
            return True
        locks.release(fd)
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
        for _path, record in self.scan(vm_instance_uuid):
            if isinstance(record, RepositoryError):
                raise record
            records.append(record)
        return sorted(records, key=lambda r: (r.created, r.id))

    def get_backup(self, backup_id: str) -> BackupRecord:
        """The backup with this id, or NotFoundError."""
        if _NAME.fullmatch(backup_id):
            for path in (self.path / "backups").glob(f"*/{backup_id}/{RECORD}"):
                return _read_record(path)
        raise NotFoundError(f"backup {backup_id} is not in repository {self.path}; "
                            "`mover list` shows the backups there")

    def latest(self, vm_instance_uuid: str) -> BackupRecord | None:
        """The newest committed backup of a VM, or None."""
        backups = self.list_backups(vm_instance_uuid)
        return backups[-1] if backups else None

    def index_path(self, record: BackupRecord, key: int) -> Path:
        return self.path / "backups" / record.vm_instance_uuid / record.id / index_name(key)

    def read_index(self, record: BackupRecord, key: int) -> FixedIndex:
        """The index of disk ``key``; IntegrityError naming the file if missing or damaged."""
        path = self.index_path(record, key)
        try:
            index = FixedIndex.from_bytes(path.read_bytes())
        except FileNotFoundError as exc:
            raise IntegrityError(f"index {path} of backup {record.id} is missing") from exc
        except OSError as exc:
            raise io_error(f"cannot read index {path}", exc) from exc
        except IntegrityError as exc:
            raise IntegrityError(f"index {path} is damaged: {exc}") from exc
        disk = next((d for d in record.disks if d.key == key), None)
        if disk and (disk.capacity, disk.block_size) != (index.capacity, index.block_size):
            raise IntegrityError(f"index {path} describes {index.capacity} bytes in blocks of "
                                 f"{index.block_size}, the record {disk.capacity}/"
                                 f"{disk.block_size}")
        return index

    def scan(self, vm_instance_uuid: str | None = None
             ) -> Iterator[tuple[Path, BackupRecord | RepositoryError]]:
        """Every ``backup.json`` with its record or the error reading it (for verify)."""
        root = self.path / "backups"
        pattern = f"{vm_instance_uuid}/*/{RECORD}" if vm_instance_uuid else f"*/*/{RECORD}"
        if vm_instance_uuid is not None:
            _check_name("VM instance UUID", vm_instance_uuid)
        for path in sorted(root.glob(pattern)):
            try:
                yield path, _read_record(path)
            except RepositoryError as exc:
                yield path, exc

    def verify(self, read_data: bool = False) -> list[str]:
        """Problems found, one sentence each; empty means healthy (see :func:`verify`)."""
        return verify(self, read_data)

    def clean_stale(self, max_age: float = 3600.0) -> list[Path]:
        """Remove debris of crashed writers older than ``max_age`` seconds (see
        :func:`clean_stale`) and return the removed paths."""
        return clean_stale(self, max_age)


def _create(path: Path, config: RepoConfig) -> RepoConfig:
    try:
        if path.exists() and not {e.name for e in os.scandir(path)} <= _TOLERATED:
            raise RepositoryError(f"{path} is not empty and not a mover repository; "
                                  "choose a new or empty directory")
        for name in ("tmp", *LAYOUT):
            make_dir(path / name)
        data = json.dumps(config.to_json(), indent=2, sort_keys=True).encode() + b"\n"
        temp = write_temp(path / "tmp", data, prefix="config.")
        try:
            # link() refuses to replace: of two processes creating one repository at once,
            # one config wins and the other opens it (and checks its block size).
            os.link(temp, path / CONFIG)
        except FileExistsError:
            return RepoConfig.load(path / CONFIG)
        finally:
            temp.unlink(missing_ok=True)
        fsync_dir(path)
    except OSError as exc:
        raise io_error(f"cannot create repository {path}", exc) from exc
    return config


def _read_record(path: Path) -> BackupRecord:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"{path} is damaged ({exc}); move its directory away, "
                             "`mover verify` lists every problem") from exc
    return BackupRecord.from_json(data, str(path))


def _check_name(what: str, name: str) -> None:
    # Names become path components: refuse separators, "..", and hidden or empty names.
    if not _NAME.fullmatch(name):
        raise RepositoryError(f"{what} {name!r} is not a valid name (letters, digits, ._-)")


def _release(held: list[tuple[int, Path | None]]) -> None:
    for fd, remove in reversed(held):
        locks.release(fd, remove)
