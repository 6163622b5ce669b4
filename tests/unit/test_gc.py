"""forget and gc on the memory store: exactly the garbage goes, every kept backup restores,
gc waits for running backups, and gc killed at any point leaves a sound repository."""

from __future__ import annotations

import contextlib
import random
import threading
import time

import pytest

from mover.index import FixedIndex
from mover.jobs.maintenance import ForgetResult
from mover.repo import BackupRecord, DiskRecord, MemoryLocks, MemoryStore, Repository, layout
from mover.repo.faulty import FaultyStore, InjectedFault
from mover.repo.gc import collect, live_chunks, repair_index
from mover.retention import Candidate, KeepPolicy, select

BS = 4096
KEY = 2000
VM = "vm-uuid-1"
Image = dict[int, bytes]


def new_repo(store: MemoryStore | FaultyStore | None = None,
             locks: MemoryLocks | None = None) -> Repository:
    return Repository.on(store or MemoryStore(), locks or MemoryLocks(), block_size=BS,
                         pack_target=3 * BS)


def write_backup(repo: Repository, backup_id: str, image: Image, created: str,
                 vm: str = VM) -> BackupRecord:
    """A committed backup of one disk holding ``image`` (block -> bytes), as the pipeline
    stores one: chunks, sync, index, record."""
    pending = repo.begin(vm, backup_id)
    index = FixedIndex(16 * BS, BS)
    for block, data in image.items():
        digest = repo.chunks.digest(data)
        if not repo.chunks.has(digest):
            repo.chunks.put(digest, data)
        index.set(block, digest)
    repo.chunks.sync()
    pending.write_index(KEY, index)
    record = BackupRecord(
        id=backup_id, vm_name="web", vm_instance_uuid=vm, vm_moref="vm-1", created=created,
        finished=created, parent=None, snapshot={}, disks=[DiskRecord(
            key=KEY, label="d", uuid="u", capacity=16 * BS, file="[ds] f", change_id="",
            mode="full", reason="r", block_size=BS, changed_bytes=0, bytes_read=0,
            bytes_stored=0, blocks=16, zero_blocks=0, new_chunks=0, dedup_chunks=0,
            seconds=0.0)])
    pending.commit(record)
    return record


def restored(repo: Repository, record: BackupRecord) -> Image:
    """What a restore reads (under the shared lock, which rebuilds a table gc outdated)."""
    with repo.reading():
        index = repo.read_index(record, KEY)
        return {b: repo.read_block(d) for b in range(len(index)) if (d := index.get(b))}


def history(repo: Repository, count: int = 10) -> dict[str, Image]:
    """``count`` daily backups with overlapping data: each changes three blocks."""
    rng, image, images = random.Random(4), {}, {}
    for day in range(count):
        for block in rng.sample(range(16), 3):
            image[block] = rng.randbytes(BS)
        backup_id = f"2026110{day}T020000Z-aaaaa{day}" if day < 10 else f"b{day}"
        write_backup(repo, backup_id, dict(image), f"2026-11-{day + 1:02d}T02:00:00Z")
        images[backup_id] = dict(image)
    return images


def forget(repo: Repository, policy: KeepPolicy) -> ForgetResult:
    records = {r.id: r for r in repo.list_backups()}
    result = ForgetResult(policy.describe(), False)
    (selection,) = select([Candidate(r.id, r.vm_instance_uuid, _time(r.created))
                           for r in records.values()], policy)
    for gone in selection.forgotten:
        repo.remove_backup(records[gone.id])
        result.forgotten.append({"id": gone.id})
    return result


def _time(text: str):  # type: ignore[no-untyped-def]
    from datetime import datetime
    return datetime.fromisoformat(text)


def chunk_count(repo: Repository) -> int:
    from mover.repo import PackedChunks
    return len(PackedChunks(repo.store, repo.codec))


def test_forget_then_gc_removes_exactly_the_garbage() -> None:
    repo = new_repo()
    images = history(repo)
    before = chunk_count(repo)
    forgotten = forget(repo, KeepPolicy(last=2, daily=4, weekly=1)).forgotten
    assert len(forgotten) == 10 - 4           # last 2 are within the 4 newest days
    kept = {r.id for r in repo.list_backups()}
    needed = {repo.chunks.digest(d) for k in kept for d in images[k].values()}
    assert live_chunks(repo) == needed
    report = collect(repo, repack_threshold=0.5)
    assert chunk_count(repo) == len(needed) < before
    assert report.live_chunks == len(needed)
    for record in repo.list_backups():
        assert restored(repo, record) == images[record.id]
    assert repo.verify(read_data=True) == []
    again = collect(repo)                       # nothing left to do
    assert (again.packs_deleted, again.chunks_removed) == (0, 0)


def test_gc_dry_run_changes_nothing() -> None:
    repo = new_repo()
    history(repo, 4)
    forget(repo, KeepPolicy(last=1))
    objects = list(repo.store.list(""))
    report = collect(repo, dry_run=True)
    assert report.bytes_freed > 0 and list(repo.store.list("")) == objects


def test_gc_waits_for_a_running_backup_that_reuses_forgotten_chunks() -> None:
    """The interleaving is forced: the backup deduplicates against chunks of a backup that
    is forgotten meanwhile, gc starts while it is pending, and must wait for its commit."""
    repo = new_repo()
    old = {0: b"o" * BS, 1: b"p" * BS}
    first = write_backup(repo, "20261101T000000Z-aaaaaa", old, "2026-11-01T00:00:00Z")
    pending = repo.begin(VM, "20261102T000000Z-bbbbbb")          # holds the shared lock
    index = FixedIndex(16 * BS, BS)
    for block, data in old.items():
        digest = repo.chunks.digest(data)
        assert repo.chunks.has(digest)                            # a dedup hit
        index.set(block, digest)
    repo.remove_backup(first)                                     # forgotten meanwhile
    done = threading.Event()
    gc = threading.Thread(target=lambda: (collect(new_repo(repo.store, repo.locks)),
                                          done.set()))
    gc.start()
    time.sleep(0.3)
    assert not done.is_set()                                      # gc waits for the backup
    pending.write_index(KEY, index)
    record = BackupRecord.from_json({**first.to_json(), "id": pending.backup_id})
    pending.commit(record)
    gc.join(timeout=10)
    assert done.is_set()
    assert restored(repo, repo.get_backup(pending.backup_id)) == old
    assert repo.verify(read_data=True) == []


def test_a_table_loaded_before_gc_is_rebuilt_when_the_next_backup_begins() -> None:
    store, locks = MemoryStore(), MemoryLocks()
    repo = new_repo(store, locks)
    history(repo, 3)
    stale = new_repo(store, locks)                # loaded now, used after gc
    forget(repo, KeepPolicy(last=1))
    collect(repo, repack_threshold=0.0)
    pending = stale.begin(VM, "20261201T000000Z-cccccc")
    for digest in list(stale.chunks._table.digests()):
        assert stale.chunks.locate(digest) is not None
        pack_id = stale.chunks.locate(digest)[0]  # type: ignore[index]
        assert store.stat(layout.pack(pack_id)) is not None     # no deleted pack is trusted
    pending.abort()


def test_gc_killed_at_every_point_leaves_a_sound_repository() -> None:
    probe = FaultyStore(MemoryStore())
    history(new_repo(probe), 6)
    forget(new_repo(probe), KeepPolicy(last=2))
    calls = dict(probe.calls)
    collect(new_repo(probe), repack_threshold=0.3)
    mutations = probe.calls.get("put", 0) - calls.get("put", 0) + \
        probe.calls.get("delete", 0) - calls.get("delete", 0)
    assert mutations > 5
    for method in ("put", "delete"):
        for point in range(1, mutations + 1):
            inner = MemoryStore()
            faulty = FaultyStore(inner)
            images = history(new_repo(faulty), 6)
            forget(new_repo(faulty), KeepPolicy(last=2))
            faulty.fail(method, kind="crash", after=point - 1)   # dies at the point-th call
            with contextlib.suppress(InjectedFault):
                collect(new_repo(faulty), repack_threshold=0.3)
            after = new_repo(inner)
            assert after.verify(read_data=True) == [], (method, point)
            for record in after.list_backups():
                assert restored(after, record) == images[record.id], (method, point)
            collect(after, repack_threshold=0.3)      # a later gc finishes the job
            assert after.verify(read_data=True) == []


def test_repair_index_rebuilds_lost_and_damaged_indexes() -> None:
    repo = new_repo()
    images = history(repo, 3)
    names = list(repo.store.list(layout.INDEX))
    repo.store.delete(names[0])
    repo.store.put(names[1], b"damaged", replace=True)
    broken = new_repo(repo.store, repo.locks)
    assert broken.verify() != []
    done = repair_index(broken)
    assert sum("indexed pack" in d for d in done) == 2
    assert any("removed damaged" in d for d in done)
    fixed = new_repo(repo.store, repo.locks)
    assert fixed.verify(read_data=True) == []
    for record in fixed.list_backups():
        assert restored(fixed, record) == images[record.id]


@pytest.mark.parametrize("threshold", [0.0, 1.0], ids=["repack-any-garbage", "never-repack"])
def test_repack_threshold(threshold: float) -> None:
    repo = new_repo()
    history(repo, 5)
    forget(repo, KeepPolicy(last=1))
    report = collect(repo, repack_threshold=threshold)
    if threshold == 1.0:
        assert report.packs_repacked == 0
    else:
        assert report.packs_repacked > 0 and report.packs_written > 0
        from mover.repo.gc import pack_entries
        live = live_chunks(repo)
        for name in repo.store.list(layout.PACKS):
            pack_id = layout.pack_id_of(name)
            assert pack_id is not None
            assert all(e.digest in live for e in pack_entries(repo.store, pack_id))
    assert repo.verify(read_data=True) == []
