"""Regression tests for problems found in the review of repository format 2."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mover.errors import RepositoryError
from mover.extents import Extent
from mover.index import FixedIndex
from mover.pipeline.copy import PipelineSettings, copy_disk
from mover.pipeline.process import BlockProcessor
from mover.repo import BackupRecord, DiskRecord, MemoryLocks, MemoryStore, Repository, layout
from mover.repo.faulty import FaultyStore
from mover.repo.gc import collect, live_chunks
from mover.repo.packfile import decode_index

BS = 4096


class _Disk:
    name = "disk"
    max_readers = 2

    def __init__(self, size: int) -> None:
        self.size = size

    async def read_into(self, offset: int, buf: memoryview) -> None:
        for i in range(0, len(buf), BS):
            buf[i:i + BS] = (offset + i).to_bytes(8, "little") * (BS // 8)

    async def close(self) -> None:
        pass


class _SlowSyncSink:
    """A sink whose sync blocks until released (a slow pack write)."""

    def __init__(self) -> None:
        self.sync_started = threading.Event()
        self.release = threading.Event()
        self.syncing = False

    def digest(self, block: bytes | bytearray | memoryview) -> bytes:
        import hashlib
        return hashlib.sha256(block).digest()

    def has(self, digest: bytes) -> bool:
        return False

    def put(self, digest: bytes, block: bytes | bytearray | memoryview) -> int:
        return len(block)

    def sync(self) -> None:
        self.syncing = True
        self.sync_started.set()
        self.release.wait(10)
        self.syncing = False


async def test_cancelled_copy_does_not_leave_a_sync_running() -> None:
    """A cancelled copy (another disk failed, SIGTERM) must not return while its sync (pack
    and pack index writes, then a journal segment) still runs in a thread: the backup then
    suspends and releases the repository lock, and gc could list the indexes, see the
    late pack as unindexed and delete it, after which its index names a missing pack (later
    backups deduplicate against chunks that are gone); a late journal segment could also
    land after a resume's RESET."""
    sink = _SlowSyncSink()
    settings = PipelineSettings(fetchers=1, workers=1, queue_depth=1, max_read=BS,
                                sync_every=BS)
    journaled: list[int] = []
    with ThreadPoolExecutor(1) as executor:
        task = asyncio.ensure_future(copy_disk(
            _Disk(64 * BS), [Extent(0, 64 * BS)], FixedIndex(64 * BS, BS),
            BlockProcessor(sink, BS), executor, settings,
            recorder=lambda rs: journaled.extend(r.block for r in rs)))
        while not sink.sync_started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), 0.5)
        still_running = task.done() and sink.syncing
        sink.release.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert not still_running, "copy_disk returned while its sink sync was still running"


# -- gc --------------------------------------------------------------------------------


VM = "vm-uuid-1"
KEY = 2000


def _repo(store: MemoryStore | FaultyStore | None = None) -> Repository:
    return Repository.on(store or MemoryStore(), MemoryLocks(), block_size=BS,
                         pack_target=3 * BS)


def _backup(repo: Repository, backup_id: str, blocks: dict[int, bytes]) -> BackupRecord:
    pending = repo.begin(VM, backup_id)
    index = FixedIndex(16 * BS, BS)
    for block, data in blocks.items():
        digest = repo.chunks.digest(data)
        repo.chunks.put(digest, data)
        index.set(block, digest)
    repo.chunks.sync()
    pending.write_index(KEY, index)
    record = BackupRecord(
        id=backup_id, vm_name="web", vm_instance_uuid=VM, vm_moref="vm-1",
        created="2026-11-01T00:00:00Z", finished="2026-11-01T00:00:00Z", parent=None,
        snapshot={}, disks=[DiskRecord(
            key=KEY, label="d", uuid="u", capacity=16 * BS, file="[ds] f", change_id="",
            mode="full", reason="r", block_size=BS, changed_bytes=0, bytes_read=0,
            bytes_stored=0, blocks=16, zero_blocks=0, new_chunks=0, dedup_chunks=0,
            seconds=0.0)])
    pending.commit(record)
    return record


def test_gc_reads_a_pending_journal_once_not_once_per_segment() -> None:
    """live_chunks read a disk's whole journal once for every segment of it: a suspended
    backup of a 2 TiB disk (32,768 segments at the default 64 MiB sync) costs gc ~10^9
    object reads."""
    faulty = FaultyStore(MemoryStore())
    repo = _repo(faulty)
    pending = repo.begin(VM, "20261101T000000Z-aaaaaa")
    pending.write_checkpoint({"format": 1})
    journal = pending.journal(KEY)
    segments = 40
    for block in range(segments):
        data = bytes([block + 1]) * BS
        digest = repo.chunks.digest(data)
        repo.chunks.put(digest, data)
        repo.chunks.sync()
        journal.append([(block, digest)])
    pending.suspend()
    before = faulty.calls.get("get", 0)
    assert len(live_chunks(repo)) == segments
    reads = faulty.calls.get("get", 0) - before
    assert reads <= 3 * segments, f"{reads} object reads for {segments} journal segments"


class _ForgetsDuringGc(MemoryStore):
    """Runs ``forget`` of one backup (record, then its indexes) just as gc reads that
    backup's record: gc listed the record, forget removed it before gc read it."""

    def __init__(self) -> None:
        super().__init__()
        self.victim: BackupRecord | None = None

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        victim = self.victim
        if victim is not None and name == layout.record(victim.vm_instance_uuid, victim.id):
            self.victim = None
            prefix = layout.backup_dir(victim.vm_instance_uuid, victim.id)
            for gone in list(self.list(prefix)):
                self.delete(gone)
        return super().get(name, offset, length)


def test_gc_running_alongside_forget_does_not_abort() -> None:
    """docs/repository.md: forget and gc run together ("gc marks from the records it read:
    a backup forgotten meanwhile is collected next time"). gc instead stops with
    'gc cannot read ...; fix or remove it first' naming a record that is simply gone."""
    store = _ForgetsDuringGc()
    repo = _repo(store)
    old = _backup(repo, "20261101T000000Z-aaaaaa", {0: b"a" * BS})
    new = _backup(repo, "20261102T000000Z-bbbbbb", {0: b"b" * BS})
    store.victim = old
    collect(repo)                                # must not raise
    assert repo.read_block(repo.read_index(new, KEY).get(0)) == b"b" * BS  # type: ignore[arg-type]


def test_verify_running_alongside_forget_reports_no_problem() -> None:
    """verify with forget is marked safe ([1]: a listing may miss a forgotten backup); a
    backup forgotten between the listing and the read must not be reported as damage
    (exit status 10)."""
    store = _ForgetsDuringGc()
    repo = _repo(store)
    old = _backup(repo, "20261101T000000Z-aaaaaa", {0: b"a" * BS})
    _backup(repo, "20261102T000000Z-bbbbbb", {0: b"b" * BS})
    store.victim = old
    assert repo.verify() == []



# -- LocalStore ------------------------------------------------------------------------

def test_local_put_of_an_existing_object_makes_its_name_durable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``put`` that finds the name taken returns False without fsyncing the directory. The
    other writer may have linked the file and not yet fsynced the directory; the caller
    treats False as "it is there, durably" and writes a pack index naming the pack: a power
    loss can then keep the index and lose the pack's directory entry."""
    from mover.repo import localstore
    store = localstore.LocalStore(tmp_path)
    store.put("packs/ab/x", b"one")
    synced: list[Path] = []
    real = localstore._fsync_dir
    monkeypatch.setattr(localstore, "_fsync_dir",
                        lambda path: (synced.append(Path(path)), real(path))[1])
    assert store.put("packs/ab/x", b"one") is False
    assert tmp_path / "packs" / "ab" in synced


def test_local_delete_is_durable_before_it_returns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """gc deletes a pack's index before the pack, so that a reader never finds an index
    naming a missing pack. Without an fsync of ``index/`` the unlink of the index may be
    lost in a power loss while the later unlink of the pack (another directory) is not."""
    from mover.repo import localstore
    store = localstore.LocalStore(tmp_path)
    store.put("index/a", b"i")
    store.put("index/b", b"j")
    synced: list[Path] = []
    real = localstore._fsync_dir
    monkeypatch.setattr(localstore, "_fsync_dir",
                        lambda path: (synced.append(Path(path)), real(path))[1])
    store.delete("index/a")
    assert tmp_path / "index" in synced


# -- opening a repository while gc runs -------------------------------------------------

class _GcDeletesIndexes(MemoryStore):
    """gc's step 2 running in another process: an index listed by a reader is deleted
    (with its pack) before the reader gets it."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if self.armed and name.startswith(layout.INDEX):
            self.armed = False
            packs, _ = decode_index(super().get(name))
            self.delete(name)
            for pack_id in packs:
                self.delete(layout.pack(pack_id))
        return super().get(name, offset, length)


def test_opening_a_repository_while_gc_deletes_indexes_does_not_fail() -> None:
    """docs: "new backups wait for gc". But Repository.on loads the pack indexes without
    the lock, so a backup (or restore, verify) started while gc deletes indexes fails at
    once with 'object index/... does not exist' instead of waiting for the lock."""
    store = _GcDeletesIndexes()
    repo = _repo(store)
    _backup(repo, "20261101T000000Z-aaaaaa", {0: b"a" * BS, 1: b"b" * BS})
    store.armed = True
    reopened = Repository.on(store, repo.locks, block_size=BS)  # must not raise
    pending = reopened.begin(VM, "20261102T000000Z-bbbbbb")
    pending.abort()


def test_gc_names_a_pack_whose_trailer_is_damaged() -> None:
    """gc stops on a damaged pack trailer with 'pack entry table does not match its
    checksum': no pack name, no fix."""
    repo = _repo()
    _backup(repo, "20261101T000000Z-aaaaaa", {0: b"a" * BS})
    (name,) = repo.store.list(layout.PACKS)
    data = bytearray(repo.store.get(name))
    data[-40] ^= 0xFF                             # the entry count in the tail
    repo.store.put(name, bytes(data), replace=True)
    with pytest.raises(RepositoryError) as failure:
        collect(repo)
    assert name in str(failure.value) and "mover" in str(failure.value)


# -- resuming a full backup onto a new snapshot ---------------------------------------

EPOCH = "52 de c0 d9 3e 4d 58 a8-62 9a 1c 61 7e 2b 83 58"


async def test_resumed_full_does_not_keep_a_block_unmapped_since_the_interruption(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A full backup is interrupted after journaling block 1; the run stops cleanly (its
    snapshot is removed). Before the resume the guest trims block 1: on the new snapshot it
    is unallocated (not in the "*" areas) and CBT reports it changed since the interrupted
    snapshot. The planner clears block 1 from the done-map, but the index keeps the
    journaled (old) digest and block 1 is not re-read, since it is in no area: the backup
    restores the old bytes where the disk now reads zeros."""
    from mover.jobs.planning import Planner
    from mover.jobs.resume import Checkpoint, DiskCheckpoint
    from mover.vsphere.disks import DiskInfo

    repo = _repo()
    capacity = 4 * BS
    pending = repo.begin(VM, "20261101T000000Z-aaaaaa")
    old = b"o" * BS
    digest = repo.chunks.digest(old)
    repo.chunks.put(digest, old)
    repo.chunks.sync()
    pending.journal(KEY).append([(0, None), (1, digest)])
    saved = DiskCheckpoint(KEY, "u", capacity, BS, f"{EPOCH}/5", "full", "no backup", "*")
    checkpoint = Checkpoint("20261101T000000Z-aaaaaa", "2026-11-01T00:00:00Z", "s", "m",
                            None, {KEY: saved})
    disk = DiskInfo(KEY, "d", "u", capacity, "[ds] vm/vm.vmdk", f"{EPOCH}/6", True, False,
                    False, False)

    async def query(self: Planner, disk: DiskInfo, since: str | None) -> list[Extent]:
        if since == "*":
            return [Extent(0, BS), Extent(2 * BS, 2 * BS)]   # block 1 is unallocated now
        return [Extent(BS, BS)]                             # changed since snapshot 5

    monkeypatch.setattr(Planner, "_query", query)
    planner = Planner(repo, None, None, None, None, False, BS, lambda _: None,  # type: ignore[arg-type]
                      checkpoint, same_snapshot=False)
    plan = await planner.plan(disk, None, pending)
    reread = {b for e in plan.reads for b in range(e.start // BS, -(-e.end // BS))}
    assert plan.index.get(1) is None or 1 in reread, \
        "block 1 keeps its journaled digest and is not read again"
    pending.abort()


async def test_a_damaged_journal_does_not_block_every_later_backup_of_the_vm(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A journal only saves work, yet a damaged segment (a file system that lies about
    fsync, like the torn packs the docs consider) makes planning raise IntegrityError; the
    run then suspends and keeps the checkpoint, so every later run resumes the same backup
    and fails the same way: the VM is never backed up again."""
    from mover.jobs.planning import Planner
    from mover.jobs.resume import Checkpoint, DiskCheckpoint
    from mover.vsphere.disks import DiskInfo

    repo = _repo()
    capacity = 4 * BS
    pending = repo.begin(VM, "20261101T000000Z-aaaaaa")
    repo.store.put(layout.journal_segment(VM, pending.backup_id, KEY, 0), b"x" * 43)
    saved = DiskCheckpoint(KEY, "u", capacity, BS, f"{EPOCH}/5", "full", "no backup", "*")
    checkpoint = Checkpoint(pending.backup_id, "2026-11-01T00:00:00Z", "s", "m", None,
                            {KEY: saved})
    disk = DiskInfo(KEY, "d", "u", capacity, "[ds] vm/vm.vmdk", f"{EPOCH}/5", True, False,
                    False, False)

    async def query(self: Planner, disk: DiskInfo, since: str | None) -> list[Extent]:
        return [Extent(0, capacity)]

    monkeypatch.setattr(Planner, "_query", query)
    planner = Planner(repo, None, None, None, None, False, BS, lambda _: None,  # type: ignore[arg-type]
                      checkpoint, same_snapshot=True)
    plan = await planner.plan(disk, None, pending)          # starts the disk clean
    assert sum(e.length for e in plan.reads) == capacity
    pending.abort()


def test_a_foreign_directory_under_backups_does_not_break_every_command(
        tmp_path: Path) -> None:
    """LocalStore.list returns whatever the directory holds, but get/stat/delete and the
    layout refuse names outside [A-Za-z0-9._-]: a copied backup directory ("copy (1)")
    (no record, no checkpoint) makes clean_stale, so every backup, and gc fail with a bare
    ValueError. (With a backup.json in it, list/latest report it as damaged.)"""
    repo = Repository.open(tmp_path, block_size=BS)
    foreign = tmp_path / "backups" / VM / "20261101T000000Z-aaaaaa copy"
    foreign.mkdir(parents=True)
    (foreign / "disk-2000.idx").write_text("{}")
    for call in (repo.list_backups, repo.clean_stale, lambda: live_chunks(repo)):
        with contextlib.suppress(RepositoryError):   # a named refusal is acceptable
            call()


class _CreatedMeanwhile(MemoryStore):
    """Another process creates the repository between our failed read of config.json and
    our check that the store is empty."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = True

    def list(self, prefix: str):  # type: ignore[no-untyped-def]
        if self.armed and prefix == "":
            self.armed = False
            Repository.on(self, MemoryLocks(), block_size=BS)
        return super().list(prefix)


def test_two_processes_creating_one_repository_both_open_it() -> None:
    """docs: 'Two processes creating one repository at once are safe: ... the loser reads
    the winner's'. The loser instead says the store 'is not empty and not a mover
    repository' when the winner's config.json appears between its read and its check."""
    repo = Repository.on(_CreatedMeanwhile(), MemoryLocks(), block_size=BS)
    assert repo.config.block_size == BS
