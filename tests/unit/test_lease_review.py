"""Regression tests for the review of the leased locks (docs/repository.md, "Leased locks"):
each forces, on the memory store with fake time, an interleaving that lost data or gave a
wrong result before."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mover import clock
from mover.errors import RepositoryError
from mover.repo import MemoryStore, Repository, layout
from mover.repo.config import RepoConfig
from mover.repo.faulty import FaultyStore
from mover.repo.gc import ORPHAN_GRACE, collect
from mover.repo.leases import LeasedLocks, LeaseTimes
from mover.repo.packfile import PackBuilder
from mover.repo.packs import REFRESH_EVERY, PackedChunks, write_pack
from mover.repo.pending import PendingBackup
from mover.repo.store import Stat

from .test_leases import TIMES, FakeTime, fake, locks
from .test_repository import BS, VM, backup, disk, record, store_disk

__all__ = ["fake"]   # the fixture, used by name


class Hook:
    """A store that runs ``action`` once, just before the first call of ``method`` whose
    first argument starts with ``match``."""

    def __init__(self, inner: MemoryStore, method: str, match: str) -> None:
        self.inner, self.method, self.match = inner, method, match
        self.action: Any = None

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.inner, name)
        if name != self.method:
            return found

        def hooked(first: str, *args: Any, **kwargs: Any) -> Any:
            if self.action is not None and first.startswith(self.match):
                action, self.action = self.action, None
                action()
            return found(first, *args, **kwargs)
        return hooked


def packs(store: MemoryStore) -> set[str]:
    return set(store.list(layout.PACKS))


def indexed_packs_exist(store: MemoryStore) -> bool:
    from mover.repo.packfile import decode_index
    named = {layout.pack(p) for n in store.list(layout.INDEX)
             for p in decode_index(store.get(n))[0]}
    return named <= packs(store)


# -- D1: gc deleted a writer's new pack as an orphan ----------------------------------------

def test_a_pack_landing_while_gc_lists_is_not_deleted_as_an_orphan(fake: FakeTime) -> None:
    """A writer checked its lease, then its pack (and index) landed between gc's LIST of
    index/ and its LIST of packs/: gc must keep the young unindexed pack."""
    store = MemoryStore()
    repo = Repository.on(store, locks(store, "w"), block_size=BS)
    backup(repo, "20261201T000000Z-aaaaaa")
    builder = PackBuilder()
    block = b"Z" * BS
    builder.add(repo.chunks.digest(block), repo.codec.encode(block))
    hook = Hook(store, "list", layout.PACKS)
    hook.action = lambda: write_pack(store, builder)   # the late put of a checked writer
    gc_repo = Repository.on(hook, locks(hook, "gc"))
    report = collect(gc_repo)
    assert report.orphan_packs == 0 and indexed_packs_exist(store)
    # A pack whose index never came is removed once it is older than the grace.
    orphan = PackBuilder()
    orphan.add(repo.chunks.digest(b"o" * BS), repo.codec.encode(b"o" * BS))
    pack_id, data = orphan.seal()
    store.put(layout.pack(pack_id), data)
    gc_repo = Repository.on(store, locks(store, "gc2"))
    assert collect(gc_repo).orphan_packs == 0
    fake.t += ORPHAN_GRACE + 1
    assert collect(gc_repo).orphan_packs == 1
    assert layout.pack(pack_id) not in packs(store) and indexed_packs_exist(store)


def test_a_writer_paused_past_its_lease_writes_no_pack(fake: FakeTime) -> None:
    store = MemoryStore()
    repo = Repository.on(store, locks(store, "w"), block_size=BS)
    backup(repo, "20261201T000000Z-aaaaaa")
    before = packs(store)
    pending = repo.begin(VM, "20261202T000000Z-bbbbbb")
    block = b"q" * BS
    repo.chunks.put(repo.chunks.digest(block), block)
    fake.t += TIMES.stale + 1
    with pytest.raises(RepositoryError, match="no longer held"):
        repo.chunks.sync()
    assert packs(store) == before
    pending.suspend()


# -- D2: staleness judged with the acquirer's lease, not the holder's -----------------------

def test_a_short_lease_acquirer_does_not_delete_a_long_lease_holders_object(
        fake: FakeTime) -> None:
    """gc with MOVER_LOCK_LEASE=10 met a worker on 300 s, renewed 20 s ago."""
    store = MemoryStore()
    worker = LeasedLocks(store, LeaseTimes(), holder="worker", refresh_thread=False)
    held = worker.acquire(layout.LOCK_REPOSITORY, shared=True)
    assert held is not None
    fake.t += 20
    gc = LeasedLocks(store, LeaseTimes.scaled(10.0), holder="gc", refresh_thread=False)
    assert gc.acquire(layout.LOCK_REPOSITORY, wait=False) is None
    assert store.stat(held.object_name) is not None
    held.check()
    fake.t += LeaseTimes().stale + 1     # stale by the holder's own lease: now it goes
    taken = gc.acquire(layout.LOCK_REPOSITORY, wait=False)
    assert taken is not None and store.stat(held.object_name) is None


@pytest.mark.parametrize("body", [b"", b"{not json", b'{"lease": "long"}'],
                         ids=["empty", "not-json", "no-number"])
def test_a_lock_object_whose_body_says_nothing_is_not_judged_stale(
        fake: FakeTime, body: bytes) -> None:
    store = MemoryStore()
    name = layout.lock_object(layout.LOCK_REPOSITORY, True, "someone")
    store.put(name, body)
    fake.t += TIMES.stale * 10
    assert locks(store, "gc").acquire(layout.LOCK_REPOSITORY, wait=False) is None
    assert store.stat(name) is not None


# -- D3: clocks that stop during suspend; a renewal racing a stale delete -------------------

def test_the_lease_clock_counts_a_suspended_machines_sleep() -> None:
    boot = getattr(time, "CLOCK_BOOTTIME", None)
    if boot is None:
        pytest.skip("no CLOCK_BOOTTIME on this system")
    before = time.clock_gettime(boot)
    assert before <= clock.boottime() <= time.clock_gettime(boot)


def test_a_holder_woken_from_suspend_finds_its_lease_gone(
        fake: FakeTime, monkeypatch: pytest.MonkeyPatch) -> None:
    """Suspended for 10 minutes: the monotonic clock barely moved, the boot-time clock and
    the store's did. Its renewal must not count (it would recreate an object another
    acquirer may be deleting as stale)."""
    frozen = fake.t
    monkeypatch.setattr(clock, "monotonic", lambda: frozen)
    store = MemoryStore()
    held = locks(store, "h").acquire(layout.LOCK_REPOSITORY)
    assert held is not None
    fake.t += 600
    assert held.renew() is False
    with pytest.raises(RepositoryError, match="no longer held"):
        held.check()
    assert locks(store, "gc").acquire(layout.LOCK_REPOSITORY, wait=False) is not None


def test_an_acquirer_looks_again_after_deleting_a_stale_object(fake: FakeTime) -> None:
    """The stale holder's renewal, sent before the acquirer's DELETE, lands after it and
    recreates the object: the acquirer must see it before it decides it holds the lock."""
    store = MemoryStore()
    held = locks(store, "h").acquire(layout.LOCK_REPOSITORY)
    assert held is not None
    fake.t += TIMES.stale + 1
    recreated: list[bool] = []

    def delete_then_renewal_lands(name: str) -> None:
        store.delete(name)
        if name == held.object_name and not recreated:
            recreated.append(store.put(name, b'{"stale": 80}\n', replace=True))
    racy = Hook(store, "stat", "")      # a plain pass-through for the other methods
    racy.__dict__["delete"] = delete_then_renewal_lands
    gc = LeasedLocks(racy, TIMES, holder="gc", refresh_thread=False)  # type: ignore[arg-type]
    assert gc.acquire(layout.LOCK_REPOSITORY, wait=False) is None
    assert recreated == [True]


# -- D4: a writer whose lease ran out removed the objects of the run that took over ---------

def _taken_over(fake: FakeTime) -> tuple[PendingBackup, Repository, PendingBackup]:
    store = MemoryStore()
    repo = Repository.on(store, locks(store, "w"), block_size=BS)
    bid = "20261202T000000Z-bbbbbb"
    zombie = repo.begin(VM, bid)
    zombie.write_checkpoint({"disks": {}})
    fake.t += TIMES.stale + 1                           # the writer is paused
    other = Repository.on(store, locks(store, "r"), block_size=BS)
    resumed = other.begin(VM, bid, resume=True)
    index = store_disk(other, [b"n" * BS, None, b"m" * BS, b"o" * 100], 3 * BS + 100)
    resumed.write_index(2000, index)
    return zombie, other, resumed


@pytest.mark.parametrize("leave", ["abort", "suspend"])
def test_a_writer_whose_lease_ran_out_leaves_the_takeovers_objects(
        fake: FakeTime, leave: str) -> None:
    zombie, other, resumed = _taken_over(fake)
    with pytest.raises(RepositoryError, match="no longer held"):
        zombie.write_checkpoint({"disks": {"2000": {}}})
    getattr(zombie, leave)()                            # it wakes and gives up
    resumed.commit(record(resumed.backup_id, [disk()]))
    assert [r.id for r in other.list_backups()] == [resumed.backup_id]
    assert other.verify(read_data=True) == []


def test_commit_refuses_when_a_disk_index_it_wrote_is_gone(fake: FakeTime) -> None:
    store = MemoryStore()
    repo = Repository.on(store, locks(store, "w"), block_size=BS)
    bid = "20261202T000000Z-bbbbbb"
    pending = repo.begin(VM, bid)
    pending.write_index(2000, store_disk(repo, [b"n" * BS], 3 * BS + 100))
    store.delete(layout.disk_index(VM, bid, 2000))      # as a takeover's abort would
    with pytest.raises(RepositoryError, match="is gone"):
        pending.commit(record(bid, [disk()]))
    assert store.stat(layout.record(VM, bid)) is None
    pending.abort()


# -- W1: gc checked its lease once per delete phase, not before each delete -----------------

def test_gc_paused_between_two_deletes_deletes_nothing_more(fake: FakeTime) -> None:
    """gc is frozen after its first index delete; a writer takes the lock meanwhile,
    deduplicates against the second doomed pack (its index still there) and commits."""
    store = MemoryStore()
    repo = Repository.on(store, locks(store, "a"), block_size=BS)
    blocks = [bytes([n]) * BS for n in (7, 8)]
    for n, block in enumerate(blocks):            # two backups: a pack and an index each
        bid = f"2026120{n + 1}T000000Z-aaaaa{n}"
        with repo.begin(VM, bid) as pending:
            pending.write_index(2000, store_disk(repo, [block], 3 * BS + 100))
            pending.commit(record(bid, [disk()]))
    for found in repo.list_backups():
        repo.remove_backup(found)                 # both packs are garbage now

    def writer_commits_meanwhile() -> None:
        fake.t += TIMES.stale + 1                 # gc is frozen here
        other = Repository.on(store, locks(store, "w"), block_size=BS)
        bid = "20261205T000000Z-bbbbbb"
        with other.begin(VM, bid) as pending:
            # one of the two dedups against the doomed pack whose index is still there
            pending.write_index(2000, store_disk(other, blocks, 3 * BS + 100))
            pending.commit(record(bid, [disk()]))

    class PausesAfterFirstIndexDelete(Hook):
        def delete(self, name: str) -> None:
            self.inner.delete(name)
            if name.startswith(layout.INDEX) and self.action is not None:
                action, self.action = self.action, None
                action()

    paused = PausesAfterFirstIndexDelete(store, "", "")
    paused.action = writer_commits_meanwhile
    with pytest.raises(RepositoryError, match="no longer held"):
        collect(Repository.on(paused, locks(paused, "gc")))  # type: ignore[arg-type]
    reader = Repository.on(store, locks(store, "r"))
    assert [r.id for r in reader.list_backups()] == ["20261205T000000Z-bbbbbb"]
    assert reader.verify(read_data=True) == []


# -- R1: a refresh took this process's own new index for a gc -------------------------------

class ListsThenRuns(Hook):
    """``list`` answers what was there when it started, then runs ``action`` before it
    returns (what another thread did while the LIST was on the wire)."""

    def list(self, prefix: str) -> Iterator[str]:
        names = list(self.inner.list(prefix))
        if self.action is not None and prefix.startswith(self.match):
            action, self.action = self.action, None
            action()
        return iter(names)


def test_a_refresh_is_not_fooled_by_a_pack_this_process_writes_during_its_list(
        fake: FakeTime) -> None:
    """Another thread (another disk) seals a pack while ``sync``'s refresh lists index/:
    its index is loaded but not in the listing. Before, sync failed ("the repository was
    garbage-collected") with a pack open, or dropped the table without one."""
    store = MemoryStore()
    racy = ListsThenRuns(store, "list", layout.INDEX)
    chunks = PackedChunks(racy, RepoConfig(block_size=BS).codec(), target=2 * BS)  # type: ignore[arg-type]
    blocks = [os.urandom(BS) for _ in range(4)]   # incompressible: 2 fill a pack
    chunks.put(chunks.digest(blocks[0]), blocks[0])

    def other_thread_fills_a_pack() -> None:
        for block in blocks[1:]:        # one pack written, one open
            chunks.put(chunks.digest(block), block)
    racy.action = other_thread_fills_a_pack
    fake.t += REFRESH_EVERY + 1
    chunks.sync()
    assert racy.action is None and len(chunks) == 4
    assert all(chunks.read_block(chunks.digest(b)) == b for b in blocks)


def test_a_failed_dedup_refresh_does_not_fail_the_sync(fake: FakeTime) -> None:
    store = FaultyStore(MemoryStore())
    chunks = PackedChunks(store, RepoConfig(block_size=BS).codec())
    block = os.urandom(BS)
    chunks.put(chunks.digest(block), block)
    store.fail("list", layout.INDEX)
    fake.t += REFRESH_EVERY + 1
    chunks.sync()
    assert store.rules[0].fired == 1 and chunks.read_block(chunks.digest(block)) == block


# -- R2: clean_stale compared the local clock with the store's mtimes -----------------------

class StoreClockBehind(MemoryStore):
    """A store whose clock is two hours behind ours."""

    def stat(self, name: str) -> Stat | None:
        found = super().stat(name)
        return None if found is None else Stat(found.size, found.mtime - 7200)


def test_clean_stale_judges_age_by_the_stores_clock(fake: FakeTime) -> None:
    store = StoreClockBehind()
    repo = Repository.on(store, locks(store, "w"), block_size=BS)
    debris = layout.disk_index(VM, "20261202T000000Z-bbbbbb", 2000)
    store.put(debris, b"left by a writer that died a minute ago")
    fake.t += 60
    assert repo.clean_stale(max_age=3600) == [] and store.stat(debris) is not None
    fake.t += 3600
    assert repo.clean_stale(max_age=3600) == [layout.backup_dir(VM, "20261202T000000Z-bbbbbb")]
    assert store.stat(debris) is None


# -- R3: what a check costs (docs/repository.md says it) ------------------------------------

def test_a_backups_check_costs_one_head_per_lock_it_holds(fake: FakeTime) -> None:
    store = FaultyStore(MemoryStore())
    repo = Repository.on(store, locks(store, "w"), block_size=BS)
    pending = repo.begin(VM, "20261202T000000Z-bbbbbb")
    before = dict(store.calls)
    pending.check_locks()
    assert {k: v - before.get(k, 0) for k, v in store.calls.items()
            if v != before.get(k, 0)} == {"stat": 2}
    pending.abort()


# -- R4: gc waited for ever, and said once whom for -----------------------------------------

def test_gc_waits_at_most_wait_seconds(fake: FakeTime) -> None:
    store = MemoryStore()
    repo = Repository.on(store, locks(store, "w"), block_size=BS)
    pending = repo.begin(VM, "20261202T000000Z-bbbbbb")   # a running backup
    started = fake.t
    with pytest.raises(RepositoryError, match=r"gc waited 30 s .* longer --wait"):
        collect(Repository.on(store, locks(store, "gc")), wait=30.0)
    assert 30.0 <= fake.t - started < 30.0 + 10.0
    pending.abort()


def test_a_waiting_acquire_names_the_holder_now_and_then(
        fake: FakeTime, caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    long = LeaseTimes.scaled(600.0)                        # stale after 840 s
    held = LeasedLocks(store, long, holder="busy", refresh_thread=False).acquire(
        layout.LOCK_REPOSITORY, shared=True)
    assert held is not None
    caplog.set_level("INFO", logger="mover.repo.leases")
    assert locks(store, "gc").acquire(layout.LOCK_REPOSITORY) is not None   # once stale
    waits = [r for r in caplog.records if r.getMessage().startswith("waiting for lock")]
    assert len(waits) >= 10 and all("busy" in r.getMessage() for r in waits)


def test_a_holders_stale_is_capped_at_the_longest_lease(fake: FakeTime) -> None:
    store = MemoryStore()
    name = layout.lock_object(layout.LOCK_REPOSITORY, True, "someone")
    store.put(name, b'{"stale": 1e12}\n')
    fake.t += LeaseTimes.scaled(86400.0).stale + 1
    assert locks(store, "gc").acquire(layout.LOCK_REPOSITORY, wait=False) is not None
    assert store.stat(name) is None
