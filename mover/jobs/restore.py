"""Restore one disk of one backup into an image file (or a block device).

Every chunk is decoded and its SHA-256 checked before its bytes are written; a mismatch
stops the restore with an IntegrityError naming the chunk. All-zero blocks become holes in a
regular file (it is created empty and sized to the disk) and are written as zeros on a
device. The output is fsynced before the job reports success.
"""

from __future__ import annotations

import collections
import os
import stat
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mover import clock
from mover.errors import NotFoundError, RepositoryError, UsageError
from mover.index import FixedIndex
from mover.jobs.settings import RestoreSettings
from mover.repo import Repository


@dataclass(slots=True)
class RestoreResult:
    backup_id: str
    disk_key: int
    output: str
    capacity: int
    bytes_written: int
    zero_blocks: int
    seconds: float


def run_restore(settings: RestoreSettings) -> RestoreResult:
    started = clock.monotonic()
    repo = Repository.open(settings.repo, create=False)
    with repo.reading():  # gc waits while a restore reads
        return _restore(repo, settings, started)


def _restore(repo: Repository, settings: RestoreSettings, started: float) -> RestoreResult:
    record = repo.get_backup(settings.backup_id)
    if not any(d.key == settings.disk_key for d in record.disks):
        keys = ", ".join(str(d.key) for d in record.disks)
        raise NotFoundError(f"backup {record.id} has no disk {settings.disk_key}; its disks "
                            f"are {keys}")
    index = repo.read_index(record, settings.disk_key)
    fd, is_device = _open_output(settings.output, settings.force)
    try:
        if not is_device:
            os.ftruncate(fd, index.capacity)
        written = _write_blocks(fd, index, repo, is_device, settings.workers)
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        if not is_device:
            settings.output.unlink(missing_ok=True)
        raise RepositoryError(f"cannot write the restored disk to {settings.output}: "
                              f"{exc.strerror or exc}; check free space and permissions "
                              "there") from exc
    except BaseException:
        os.close(fd)
        if not is_device:  # never leave a half-restored image that looks complete
            settings.output.unlink(missing_ok=True)
        raise
    os.close(fd)
    return RestoreResult(record.id, settings.disk_key, str(settings.output), index.capacity,
                         written, index.zero_blocks(), clock.monotonic() - started)


def _open_output(path: Path, force: bool) -> tuple[int, bool]:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise UsageError(f"cannot use --output {path}: {exc.strerror}") from exc
    if mode is not None and stat.S_ISBLK(mode):
        try:
            return os.open(path, os.O_WRONLY), True
        except OSError as exc:
            raise UsageError(f"cannot open the device {path}: {exc.strerror}") from exc
    if mode is not None and not force:
        raise UsageError(f"{path} exists; restore refuses to overwrite it: choose another "
                         "--output or add --force")
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), False
    except OSError as exc:
        raise RepositoryError(f"cannot create {path}: {exc.strerror}") from exc


def _write_blocks(fd: int, index: FixedIndex, repo: Repository, is_device: bool,
                  workers: int) -> int:
    zeros = bytes(index.block_size) if is_device else b""

    def block_length(block: int) -> int:
        return min(index.block_size, index.capacity - block * index.block_size)

    def restore(block: int) -> int:
        digest = index.get(block)
        offset = block * index.block_size
        if digest is None:
            if is_device:
                os.pwrite(fd, zeros[: block_length(block)], offset)
            return 0
        data = repo.read_block(digest)
        if len(data) != block_length(block):
            raise RepositoryError(f"chunk {digest.hex()} holds {len(data)} bytes, block {block} "
                                  f"needs {block_length(block)}: the index is inconsistent")
        return os.pwrite(fd, data, offset)

    # A bounded window of blocks in flight: memory must not grow with the disk.
    written, window = 0, workers * 4
    in_flight: collections.deque[Future[int]] = collections.deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="mover-restore") as pool:
        for block in range(len(index)):
            if len(in_flight) >= window:
                written += in_flight.popleft().result()
            in_flight.append(pool.submit(restore, block))
        while in_flight:
            written += in_flight.popleft().result()
    return written
