"""Restore one disk of one backup onto a restore target (``mover.pipeline.targets``).

Chunks are read, decoded and SHA-256-checked by worker threads, a bounded window of blocks
ahead (memory does not grow with the disk); the blocks are handed to the target in disk
order from this thread, so a stream gets every byte in sequence and a failure has one
offset below which the new image is complete. A chunk that does not match its digest stops
the restore with an IntegrityError naming it.

Kinds (``RestoreSettings``):

- a new file (``--output PATH``; ``--force`` replaces an existing file): temp + rename;
- a block device (``--output /dev/...``, with ``--force``): opened exclusively (a mounted or
  otherwise held device is refused), written in place, zero blocks as zeros;
- standard output (``--output -``): every byte in order;
- differential (``--output EXISTING --base BASE_ID``): the target holds backup ``BASE_ID``
  today; only the blocks whose index entries differ (``mover.restoreplan``) are written.
  Re-running the same differential restore after a failure completes it: each block is
  either already the new one or still the base's.
"""

from __future__ import annotations

import collections
import errno
import os
import stat
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mover import clock, restoreplan
from mover.errors import MoverError, NotFoundError, RepositoryError, UsageError
from mover.index import FixedIndex
from mover.jobs.settings import RestoreSettings
from mover.pipeline.targets import InPlace, NewFile, RestoreTarget, Stream
from mover.repo import BackupRecord, Repository


@dataclass(slots=True)
class RestoreResult:
    backup_id: str
    disk_key: int
    output: str
    capacity: int
    bytes_written: int          # bytes handed to the target and written (holes excluded)
    blocks_written: int         # blocks written (a differential restore: the changed ones)
    zero_blocks: int            # all-zero blocks of the restored image
    seconds: float
    base_id: str | None = None  # the backup a differential restore started from
    verified_blocks: int = 0    # target blocks checked against the base before writing


def run_restore(settings: RestoreSettings) -> RestoreResult:
    started = clock.monotonic()
    repo = Repository.open(settings.repo, create=False)
    with repo.reading():  # gc waits while a restore reads
        record = repo.get_backup(settings.backup_id)
        index = _disk_index(repo, record, settings.disk_key)
        blocks: Iterable[int] = restoreplan.all_blocks(index)
        base: FixedIndex | None = None
        if settings.base_id is not None:
            base = _base_index(repo, record, index, settings)
            blocks = list(restoreplan.changed_blocks(base, index))
        target = _open_target(settings, index.capacity)
        verified, done = 0, Progress()
        try:
            if base is not None:
                verified = _verify_base(repo, target, base, index, settings)
            copy_blocks(repo, index, blocks, target, settings.workers, done)
            try:
                target.commit()
            except FileExistsError as exc:  # NewFile: the name was taken while we wrote
                raise UsageError(f"{target.describe()} appeared while the restore wrote (or "
                                 "is no longer a regular file --force may replace); it was "
                                 "left as it is: choose another --output, or add --force to "
                                 "replace a file") from exc
            except OSError as exc:  # fsync or rename: the data may not be durable
                raise RepositoryError(f"cannot write the restored disk to "
                                      f"{target.describe()} (making it durable): "
                                      f"{exc.strerror or exc}; check free space and the file "
                                      "system there") from exc
        except BaseException as exc:
            target.abort()
            raise _explained(exc, target, settings, done) from exc
    return RestoreResult(record.id, settings.disk_key, target.describe(), index.capacity,
                         done.bytes, done.blocks, index.zero_blocks(),
                         clock.monotonic() - started, settings.base_id, verified)


@dataclass(slots=True)
class Progress:
    """What the copy has handed to the target so far."""

    blocks: int = 0
    bytes: int = 0
    below: int = 0   # the new image is complete below this offset


def _disk_index(repo: Repository, record: BackupRecord, key: int) -> FixedIndex:
    if not any(d.key == key for d in record.disks):
        keys = ", ".join(str(d.key) for d in record.disks)
        raise NotFoundError(f"backup {record.id} has no disk {key}; its disks are {keys}")
    return repo.read_index(record, key)


def _base_index(repo: Repository, record: BackupRecord, restored: FixedIndex,
                settings: RestoreSettings) -> FixedIndex:
    assert settings.base_id is not None
    base = repo.get_backup(settings.base_id)
    if base.vm_instance_uuid != record.vm_instance_uuid:
        raise UsageError(f"--base {base.id} is a backup of VM {base.vm_name} "
                         f"({base.vm_instance_uuid}), backup {record.id} one of "
                         f"{record.vm_name} ({record.vm_instance_uuid}): a differential "
                         "restore needs two backups of the same VM; restore in full instead")
    if not any(d.key == settings.disk_key for d in base.disks):
        raise UsageError(f"--base {base.id} has no disk {settings.disk_key}; restore in full")
    index = _disk_index(repo, base, settings.disk_key)
    mine = record.disk(settings.disk_key)
    theirs = base.disk(settings.disk_key)
    if mine.uuid != theirs.uuid:
        raise UsageError(f"disk {settings.disk_key} of --base {base.id} is another disk "
                         f"(uuid {theirs.uuid}, not {mine.uuid}); restore in full")
    try:
        restoreplan.changed_blocks(index, restored)
    except restoreplan.GeometryMismatch as exc:
        raise UsageError(f"disk {settings.disk_key} changed size between --base {base.id} "
                         f"and {record.id} ({exc}); restore in full") from None
    return index


def _open_target(settings: RestoreSettings, capacity: int) -> RestoreTarget:
    if settings.output is None:
        if os.isatty(1):
            raise UsageError("--output - writes the raw disk image to standard output, which "
                             "is a terminal here: pipe it (| qemu-img, | ssh, > file)")
        return Stream(1)
    path = settings.output
    try:
        mode: int | None = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise UsageError(f"cannot use --output {path}: {exc.strerror}") from exc
    is_device = mode is not None and stat.S_ISBLK(mode)
    if mode is not None and stat.S_ISDIR(mode):
        raise UsageError(f"--output {path} is a directory: name the image file to create")
    if settings.base_id is not None:
        if mode is None or not (is_device or stat.S_ISREG(mode)):
            raise UsageError(f"--base needs --output to be the existing file or block device "
                             f"that holds backup {settings.base_id}; {path} is not one")
        return _in_place(path, capacity, exact=not is_device)
    if is_device:
        if not settings.force:
            raise UsageError(f"{path} is a block device; a full restore overwrites every "
                             "byte of it: add --force to do so, or --base BASE_ID if it holds "
                             "that backup of this disk today")
        return _in_place(path, capacity, exact=False)
    if mode is not None and not settings.force:
        raise UsageError(f"{path} exists; restore refuses to overwrite it: choose another "
                         "--output, add --force to replace it, or --base BASE_ID to update "
                         "it differentially")
    if settings.force and os.path.lexists(path) and not stat.S_ISREG(os.lstat(path).st_mode):
        # --force renames a new file over the name: over a FIFO, a character device or a
        # symlink (/dev/stdout) that replaces the node itself, never what it leads to.
        raise UsageError(f"{path} is not a regular file (a FIFO, device node or symlink): "
                         "--force replaces only an existing regular file; give the file "
                         "itself, a block device, or - for standard output")
    try:
        return NewFile(path, capacity, replace=settings.force)
    except OSError as exc:
        raise RepositoryError(f"cannot create {path}: {exc.strerror}; check the directory "
                              "exists, is writable and has free space") from exc


def _in_place(path: Path, capacity: int, exact: bool) -> InPlace:
    try:
        target = InPlace(path)
        size = target.size()
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise UsageError(f"{path} is in use (mounted, or held by LVM, a VM or another "
                             "process); nothing was written: unmount or release it first"
                             ) from exc
        raise UsageError(f"cannot open {path} for writing: {exc.strerror}") from exc
    if size < capacity or (exact and size != capacity):
        target.abort()
        raise UsageError(f"{path} holds {size} bytes, the disk {capacity}: it is not an "
                         "image of this disk; choose the right target or restore to a new file")
    return target


def _verify_base(repo: Repository, target: RestoreTarget, base: FixedIndex,
                 restored: FixedIndex, settings: RestoreSettings) -> int:
    """Check sampled blocks of the target that the restore leaves alone against the base
    backup before writing (``restoreplan.sample_blocks``)."""
    blocks = restoreplan.sample_blocks(base, restored, settings.verify_base)
    for block in blocks:
        offset = block * base.block_size
        length = min(base.block_size, base.capacity - offset)
        try:
            data = target.read(offset, length)
        except OSError as exc:
            raise RepositoryError(f"cannot read {target.describe()} at offset {offset} to "
                                  f"check it against --base {settings.base_id}: "
                                  f"{exc.strerror or exc}; nothing was written. Check the "
                                  "device or file, or restore without --verify-base") from exc
        digest = base.get(block)
        same = data == bytes(length) if digest is None else (
            len(data) == length and repo.chunks.digest(data) == digest)
        if not same:
            raise UsageError(f"{target.describe()} does not hold backup {settings.base_id}: "
                             f"block {block} (offset {offset}) differs; nothing was written. "
                             "Give the backup it holds as --base, or restore in full")
    return len(blocks)


def copy_blocks(repo: Repository, index: FixedIndex, blocks: Iterable[int],
                target: RestoreTarget, workers: int, done: Progress) -> None:
    """Write ``blocks`` of ``index`` to ``target`` in ascending order, counting in ``done``."""
    size = index.block_size

    def length(block: int) -> int:
        return min(size, index.capacity - block * size)

    def read(block: int) -> bytes | None:
        digest = index.get(block)
        if digest is None:
            return None
        data = repo.read_block(digest)
        if len(data) != length(block):
            raise RepositoryError(f"chunk {digest.hex()} holds {len(data)} bytes, block {block} "
                                  f"needs {length(block)}: the index is inconsistent")
        return data

    window = workers * 4  # blocks in flight: memory is bounded by this, not by the disk
    in_flight: collections.deque[tuple[int, Future[bytes | None]]] = collections.deque()

    def put(block: int, future: Future[bytes | None]) -> None:
        data = future.result()
        offset = block * size
        try:
            done.bytes += (target.zero(offset, length(block)) if data is None
                        else target.write(offset, data))
        except OSError as exc:
            raise RepositoryError(f"cannot write the restored disk to {target.describe()} at "
                                  f"offset {offset}: {exc.strerror or exc}; check free space "
                                  "and permissions there") from exc
        done.blocks += 1
        done.below = offset + length(block)

    with ThreadPoolExecutor(workers, thread_name_prefix="mover-restore") as pool:
        try:
            for block in blocks:
                if len(in_flight) >= window:
                    put(*in_flight.popleft())
                in_flight.append((block, pool.submit(read, block)))
            while in_flight:
                put(*in_flight.popleft())
        finally:
            for _block, future in in_flight:
                future.cancel()


def _explained(exc: BaseException, target: RestoreTarget, settings: RestoreSettings,
               done: Progress) -> BaseException:
    """The error with what it left behind: nothing (a new file), or a partly written target."""
    if not isinstance(exc, MoverError):
        return exc
    if isinstance(target, NewFile):
        state = "the partial image was removed; run the restore again"
    elif not target.partial:
        state = f"{target.describe()} was not changed"
    elif isinstance(target, Stream):
        state = "the output stream is incomplete: discard what it received"
    else:
        again = (f"run the same restore (--base {settings.base_id}) again to complete it"
                 if settings.base_id else "restore it again")
        state = (f"{target.describe()} is PARTIALLY WRITTEN: the new image is complete below "
                 f"offset {done.below}, beyond that it holds what it held before; {again}")
    if isinstance(exc, UsageError):
        return exc
    new = type(exc)(f"{exc.detail}; {state}")
    new.fields.update(exc.fields, partial_offset=done.below)
    return new
