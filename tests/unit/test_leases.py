"""Leased locks (``mover.repo.leases``) on the memory store with fake time: exclusion,
staleness after lease + margin judged by the store's clock, renewals that count and ones
that do not, and the writer whose lease ran out while it was paused."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from mover import clock
from mover.errors import RepositoryError
from mover.repo import MemoryStore, Repository, layout
from mover.repo.gc import collect
from mover.repo.leases import LeasedLocks, LeaseTimes
from mover.repo.store import Store

from .test_repository import BS, VM, backup, disk, record, store_disk

TIMES = LeaseTimes(lease=60.0, refresh=10.0, margin=20.0, headroom=30.0)   # stale after 80


class FakeTime:
    def __init__(self) -> None:
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t

    boottime = monotonic

    def now(self) -> datetime:
        return datetime(2026, 12, 2, tzinfo=UTC) + timedelta(seconds=self.t)

    def sleep(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    for name in ("monotonic", "boottime", "now", "sleep"):
        monkeypatch.setattr(clock, name, getattr(fake, name))
    return fake


def locks(store: Store, holder: str) -> LeasedLocks:
    return LeasedLocks(store, TIMES, holder=holder, refresh_thread=False)


def test_exclusion_and_sharing(fake: FakeTime) -> None:
    store = MemoryStore()
    a, b = locks(store, "a"), locks(store, "b")
    s1 = a.acquire("repository", shared=True)
    s2 = b.acquire("repository", shared=True)
    assert s1 is not None and s2 is not None
    assert b.acquire("repository", wait=False) is None
    assert sorted(n.split("/")[2][:4] for n in store.list(layout.LOCKS)) == ["s-a-", "s-b-"]
    s1.release()
    s1.release()                        # idempotent
    assert b.acquire("repository", wait=False) is None
    s2.release()
    x = b.acquire("repository", wait=False)
    assert x is not None
    assert a.acquire("repository", shared=True, wait=False) is None
    assert a.acquire("backup-1", wait=False) is not None     # another lock name
    x.release()
    assert [n for n in store.list(layout.lock_prefix("repository"))] == []


@pytest.mark.parametrize("age, stale", [(79.0, False), (81.0, True)],
                         ids=["within-lease-and-margin", "past-lease-and-margin"])
def test_a_holder_that_stops_renewing_goes_stale(fake: FakeTime, age: float,
                                                 stale: bool) -> None:
    store = MemoryStore()
    dead = locks(store, "dead").acquire("backup-x")
    assert dead is not None
    fake.t += age
    taken = locks(store, "next").acquire("backup-x", wait=False)
    assert (taken is not None) is stale
    assert (store.stat(dead.object_name) is None) is stale
    if stale:
        with pytest.raises(RepositoryError, match="no longer held: its lease ran out"):
            dead.check()


def test_staleness_is_judged_by_the_stores_clock_not_the_holders(fake: FakeTime) -> None:
    store = MemoryStore()
    holder = locks(store, "holder").acquire("repository", shared=True)
    assert holder is not None
    # Whatever this machine's clock says, only the objects' stamps are compared: a lock
    # stamped 50 s before the acquirer's own object is live.
    store.set_mtime(holder.object_name, fake.now().timestamp() - 50)
    assert locks(store, "gc").acquire("repository", wait=False) is None
    store.set_mtime(holder.object_name, fake.now().timestamp() - 81)
    assert locks(store, "gc").acquire("repository", wait=False) is not None


def test_renewals_keep_a_lock_for_as_long_as_they_come(fake: FakeTime) -> None:
    store = MemoryStore()
    held = locks(store, "writer").acquire("repository", shared=True)
    assert held is not None
    for _ in range(30):                 # 300 s, five leases
        fake.t += TIMES.refresh
        assert held.renew()
    assert locks(store, "gc").acquire("repository", wait=False) is None
    held.check()


def test_a_renewal_after_the_lease_ran_out_does_not_count(fake: FakeTime) -> None:
    store = MemoryStore()
    held = locks(store, "paused").acquire("repository", shared=True)
    assert held is not None
    fake.t += TIMES.lease + 1           # paused (SIGSTOP, a suspended VM) past its lease
    assert not held.renew()
    assert not held.renew()             # lost for good
    with pytest.raises(RepositoryError, match=r"lock 'repository' of memory store .* no "
                                              r"longer held: its lease ran out"):
        held.check()


class SlowPuts:
    """A store whose replacing puts take ``seconds`` of fake time (a hung request)."""

    def __init__(self, inner: MemoryStore, fake: FakeTime, seconds: float) -> None:
        self.inner, self.fake, self.seconds = inner, fake, seconds

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def put(self, name: str, data: bytes | bytearray | memoryview, *,
            replace: bool = False) -> bool:
        done = self.inner.put(name, data, replace=replace)
        if replace and name.startswith(layout.LOCKS):
            self.fake.t += self.seconds
        return done


def test_a_renewal_that_returns_too_late_does_not_count(fake: FakeTime) -> None:
    store = MemoryStore()
    lock_store = SlowPuts(store, fake, 0.0)
    held = LeasedLocks(lock_store, TIMES, holder="w", refresh_thread=False).acquire(
        "repository", shared=True)
    assert held is not None
    fake.t += 50
    lock_store.seconds = 15.0           # started 10 s before the lease's end, returned after
    assert not held.renew()
    with pytest.raises(RepositoryError, match="returned after the lease had run out"):
        held.check()


def test_check_renews_when_little_lease_is_left(fake: FakeTime) -> None:
    store = MemoryStore()
    held = locks(store, "w").acquire("repository", shared=True)
    assert held is not None
    fake.t += 40                        # 20 s left < headroom: check renews first
    held.check()
    fake.t += 40
    held.check()


def test_a_lock_removed_by_another_process_is_lost(fake: FakeTime) -> None:
    store = MemoryStore()
    held = locks(store, "w").acquire("repository", shared=True)
    assert held is not None
    store.delete(held.object_name)
    with pytest.raises(RepositoryError, match="removed by another process"):
        held.check()


def writer(fake: FakeTime) -> tuple[MemoryStore, Repository]:
    store = MemoryStore()
    return store, Repository.on(store, locks(store, "writer"), block_size=BS)


def test_a_writer_paused_past_its_lease_commits_nothing(fake: FakeTime) -> None:
    store, repo = writer(fake)
    first, _ = backup(repo, "20261201T000000Z-aaaaaa")
    index = store_disk(repo, [b"n" * BS, None, b"m" * BS, b"o" * 100], 3 * BS + 100)
    pending = repo.begin(VM, "20261202T000000Z-bbbbbb")
    pending.write_index(2000, index)
    fake.t += TIMES.stale + 1           # paused; meanwhile gc may have run
    gc_repo = Repository.on(store, locks(store, "gc"))
    collect(gc_repo)                    # does not wait: the writer's lease is stale
    with pytest.raises(RepositoryError, match="no longer held"):
        pending.commit(record("20261202T000000Z-bbbbbb", [disk()]))
    with pytest.raises(RepositoryError, match="no longer held"):
        pending.journal(2000).append([(0, b"\1" * 32)])
    assert store.stat(layout.record(VM, "20261202T000000Z-bbbbbb")) is None
    pending.suspend()
    assert [r.id for r in repo.list_backups()] == [first.id]
    assert repo.verify(read_data=True) == []


def test_gc_waits_for_a_live_writer_and_takes_over_from_a_dead_one(fake: FakeTime) -> None:
    store, repo = writer(fake)
    backup(repo, "20261201T000000Z-aaaaaa")
    repo.begin(VM, "20261202T000000Z-bbbbbb")   # never renewed: a killed writer
    gc_repo = Repository.on(store, locks(store, "gc"))
    waited: list[str] = []
    started = fake.t
    report = collect(gc_repo, progress=waited.append)
    assert waited and fake.t - started > TIMES.stale      # it slept until the lock was stale
    assert report.live_chunks == 3
    assert list(store.list(layout.lock_prefix("repository"))) == []


class LosesLeaseWhileMarking:
    """gc's own lease runs out while it lists the packs (gc paused mid-run)."""

    def __init__(self, inner: MemoryStore, fake: FakeTime) -> None:
        self.inner, self.fake = inner, fake

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def list(self, prefix: str) -> Iterator[str]:
        if prefix == layout.PACKS:
            self.fake.t += TIMES.lease + 1
        return self.inner.list(prefix)


def test_gc_whose_lease_ran_out_deletes_nothing(fake: FakeTime) -> None:
    store, repo = writer(fake)
    first, _ = backup(repo, "20261201T000000Z-aaaaaa")
    backup(repo, "20261202T000000Z-bbbbbb")
    repo.remove_backup(first)
    before = sorted(store.list(""))
    paused = LosesLeaseWhileMarking(store, fake)
    gc_repo = Repository.on(paused, LeasedLocks(paused, TIMES, holder="gc",
                                                 refresh_thread=False))
    with pytest.raises(RepositoryError, match="no longer held"):
        collect(gc_repo, repack_threshold=0.0)
    after = sorted(n for n in store.list("") if not n.startswith(layout.LOCKS))
    assert set(after) >= {n for n in before if not n.startswith(layout.LOCKS)}


def test_forget_removes_only_stale_lock_objects(fake: FakeTime) -> None:
    store = MemoryStore()
    live = locks(store, "live").acquire("backup-1")
    dead = locks(store, "dead").acquire("backup-2")
    assert live is not None and dead is not None
    fake.t += 50
    live.renew()
    fake.t += 40
    sweeper = locks(store, "sweeper")
    assert sweeper.names() == ["backup-1", "backup-2"]
    for name in sweeper.names():
        sweeper.forget(name)
    assert sweeper.names() == ["backup-1"]


@pytest.mark.parametrize("text, lease", [("", 300.0), ("6", 6.0), ("900.5", 900.5)])
def test_lease_from_environment(monkeypatch: pytest.MonkeyPatch, text: str,
                                lease: float) -> None:
    monkeypatch.setenv("MOVER_LOCK_LEASE", text)
    times = LeaseTimes.from_environment()
    assert times.lease == lease
    assert times.refresh < times.headroom < times.lease < times.stale


@pytest.mark.parametrize("text", ["0", "-5", "soon", "1e9"])
def test_bad_lease_from_environment(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("MOVER_LOCK_LEASE", text)
    with pytest.raises(RepositoryError, match=r"MOVER_LOCK_LEASE=.* is not a lease"):
        LeaseTimes.from_environment()


def test_a_shared_acquire_sweeps_stale_shared_objects(fake: FakeTime) -> None:
    store = MemoryStore()
    dead = locks(store, "dead").acquire("repository", shared=True)
    assert dead is not None
    fake.t += TIMES.stale + 1
    live = locks(store, "next").acquire("repository", shared=True)
    assert live is not None
    assert list(store.list(layout.lock_prefix("repository"))) == [live.object_name]


def test_a_writer_paused_past_its_lease_publishes_no_pack_index(fake: FakeTime) -> None:
    """A pack index makes chunks visible to every writer; written after gc listed the
    indexes and before it listed the packs, it would name a pack gc deletes."""
    store, repo = writer(fake)
    backup(repo, "20261201T000000Z-aaaaaa")
    indexes = sorted(store.list(layout.INDEX))
    pending = repo.begin(VM, "20261202T000000Z-bbbbbb")
    block = b"q" * BS
    repo.chunks.put(repo.chunks.digest(block), block)
    fake.t += TIMES.lease + 1
    with pytest.raises(RepositoryError, match="no longer held"):
        repo.chunks.sync()
    assert sorted(store.list(layout.INDEX)) == indexes        # the pack stays unindexed
    pending.suspend()
    assert repo._writing == {}
