"""Garbage collection: remove chunks no backup needs, repack packs that are mostly garbage.

Safety rests on the ``repository`` lock (restic's scheme): every backup, resume, restore and
verify holds it *shared* from start to end; gc holds it *exclusively* from before it reads
the first index until after its last delete. So no writer can deduplicate against a chunk
while gc decides whether it is garbage, and no reader can be reading a pack gc deletes.
A process that loaded its chunk table before gc ran rebuilds it when it next takes the lock
(``PackedChunks.refresh`` sees index objects gone).

What is *live*: every chunk named by a committed backup's disk indexes, and by a pending
backup's journals and disk indexes (an interrupted backup keeps what it stored for its
resume). Everything else is garbage.

Order of the sweep, so that gc killed at any moment leaves every live chunk in an indexed
pack that exists:

1. repack: for each pack with more garbage than ``repack_threshold`` (and some live
   chunks), write its live chunks into new packs, each new pack and then its index;
2. delete the index objects of the packs being removed (their live chunks, if any, are now
   indexed in the new packs; from here on the old packs are unreferenced);
3. delete the old packs, and packs no index names (left by a writer killed between
   writing a pack and its index) once they are older than ``ORPHAN_GRACE`` by the store's
   clock, counted back from when gc took its lock: a young one may be a writer's whose
   index is on its way (a writer checks its lease just before each put, but a put may
   land late; ``docs/repository.md``).

A chunk stored twice (two writers at once) is live only in the pack the table names; the
other copy is garbage like any other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mover import clock
from mover.errors import IntegrityError, ObjectMissing, RepositoryError
from mover.index import FixedIndex
from mover.repo import layout
from mover.repo.journal import Journal
from mover.repo.leases import LeaseTimes
from mover.repo.locks import Lock
from mover.repo.packfile import (
    TAIL_SIZE,
    Entry,
    PackBuilder,
    decode_index,
    encode_index,
    parse_entries,
    parse_tail,
)
from mover.repo.packs import PACK_TARGET, PackedChunks, write_pack
from mover.repo.store import Store
from mover.repo.storeclock import store_now

if TYPE_CHECKING:
    from mover.repo.repository import Repository


ORPHAN_GRACE = 2 * LeaseTimes().stale
"""Seconds: a pack no index names is removed only when it is older than this. Twice the
longest time a leased lock can outlive its holder's last check (``LeaseTimes.stale``):
a writer that passed its check before gc took the lock has put its pack and its index by
then, or its index never comes. A longer ``MOVER_LOCK_LEASE`` lengthens it in proportion."""


WAIT_POLL = 5.0
"""Seconds between two looks at the repository lock when gc waits at most ``--wait``."""
LOOK_EVERY = 100
"""gc checks its lease before every delete, and asks the store whether its lock object is
still there before every ``LOOK_EVERY``-th (a HEAD each time would double the requests)."""


@dataclass(slots=True)
class GcReport:
    live_chunks: int = 0
    packs_before: int = 0
    packs_deleted: int = 0
    packs_repacked: int = 0
    packs_written: int = 0
    orphan_packs: int = 0
    chunks_removed: int = 0
    bytes_before: int = 0
    bytes_freed: int = 0
    objects_deleted: int = 0
    dry_run: bool = False
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def live_chunks(repo: Repository) -> set[bytes]:
    """Every digest a committed or pending backup needs (IntegrityError on a damaged
    record or index: gc must not guess what it cannot read)."""
    live: set[bytes] = set()
    for name, record in repo.scan():
        if isinstance(record, ObjectMissing):
            continue  # forgotten since it was listed (forget runs alongside gc)
        if isinstance(record, RepositoryError):
            raise IntegrityError(f"gc cannot read {name} ({record}); fix or remove it first "
                                 "(`mover verify` names the problems)")
        for disk in record.disks:
            try:
                digests = repo.read_index(record, disk.key).digests()
            except IntegrityError:
                if repo.store.stat(name) is None:
                    break  # forgotten meanwhile: forget deletes the record, then indexes
                raise
            live.update(digests)
    pending: dict[tuple[str, str], set[str]] = {}
    for name in repo.store.list(layout.BACKUPS):
        parts = layout.split_backup(name)
        if parts is not None:
            pending.setdefault(parts[:2], set()).add(parts[2])
    for (vm, backup_id), rests in pending.items():
        if layout.RECORD in rests:
            continue
        journals: set[str] = set()   # one read per journal, not one per segment
        for rest in rests:
            if rest.startswith("journal-") and rest.count("/") == 1:
                journals.add(rest.split("/")[0])
            elif rest.startswith("disk-") and rest.endswith(".idx"):
                name = layout.backup_dir(vm, backup_id) + rest
                try:
                    data = repo.store.get(name)
                except ObjectMissing:
                    continue  # removed meanwhile (forget, clean_stale): needed by nobody
                live.update(FixedIndex.from_bytes(data).digests())
        for journal in sorted(journals):
            key = int(journal[len("journal-"):])
            with contextlib.suppress(ObjectMissing):  # removed meanwhile (clean_stale)
                live.update(d for _, d in Journal(repo.store, vm, backup_id, key).read()
                            if d is not None)
    return live


def pack_entries(store: Store, pack_id: bytes) -> list[Entry]:
    """The chunks a pack lists in its own trailer (IntegrityError if it is damaged)."""
    name = layout.pack(pack_id)
    stat = store.stat(name)
    if stat is None:
        raise IntegrityError(f"pack {name} is missing")
    tail = store.get(name, stat.size - TAIL_SIZE, TAIL_SIZE)
    _count, table = parse_tail(tail, stat.size)
    return parse_entries(store.get(name, table, stat.size - TAIL_SIZE - table), tail)


def collect(repo: Repository, dry_run: bool = False, repack_threshold: float = 0.5,
            progress: Callable[[str], None] | None = None,
            pack_target: int = PACK_TARGET, wait: float | None = None) -> GcReport:
    """Run gc under the exclusive repository lock, waiting for running backups: for ever,
    or (``wait``) at most that many seconds, then RepositoryError."""
    lock = repo.locks.acquire(layout.LOCK_REPOSITORY, wait=False)
    if lock is None:
        if progress is not None:
            progress("waiting for the backups, restores and verifies that use the repository"
                     + ("" if wait is None else f" (at most {wait:.0f} s)"))
        lock = _acquire_within(repo, wait)
    assert lock is not None
    try:
        return _collect(repo, dry_run, repack_threshold, pack_target, lock.check)
    finally:
        lock.release()


def _acquire_within(repo: Repository, wait: float | None) -> Lock:
    if wait is None:
        lock = repo.locks.acquire(layout.LOCK_REPOSITORY)
        assert lock is not None  # a waiting acquire always returns a lock
        return lock
    deadline = clock.boottime() + wait
    while True:
        lock = repo.locks.acquire(layout.LOCK_REPOSITORY, wait=False)
        if lock is not None:
            return lock
        if clock.boottime() >= deadline:
            raise RepositoryError(
                f"gc waited {wait:.0f} s for the repository lock of {repo.location} and it is "
                "still held by running backups, restores or verifies (the log names them); "
                "run gc again when they are done, or with a longer --wait")
        clock.sleep(min(WAIT_POLL, max(deadline - clock.boottime(), 0.0)))


def _collect(repo: Repository, dry_run: bool, threshold: float, target: int,
             check: Callable[..., None]) -> GcReport:
    deletes = 0

    def still_held() -> None:
        """Before every delete: a leased lock that ran out lets backups in that may
        deduplicate against the chunks about to go (cheap; a HEAD every LOOK_EVERY)."""
        nonlocal deletes
        check(look=deletes % LOOK_EVERY == 0)
        deletes += 1

    store, report = repo.store, GcReport(dry_run=dry_run)
    grace = max(ORPHAN_GRACE, 2 * LeaseTimes.from_environment().stale)
    young = store_now(store) - grace   # under the lock, before anything is listed
    table = PackedChunks(store, repo.codec)       # fresh: what the repository holds now
    if table.damaged:
        raise IntegrityError(f"pack indexes {', '.join(table.damaged)} are damaged; run "
                             "`mover repair index` before gc")
    live = live_chunks(repo)
    report.live_chunks = len(live)
    missing = [d for d in live if table.locate(d) is None]
    if missing:
        raise IntegrityError(f"{len(missing)} chunks that backups need are in no pack (first "
                             f"{missing[0].hex()}); run `mover verify`, gc changes nothing")
    # Which index objects name which packs, and what each pack holds.
    indexes: dict[str, list[bytes]] = {}
    holders: dict[bytes, list[str]] = {}
    for name in store.list(layout.INDEX):
        packs, _ = decode_index(store.get(name))
        indexes[name] = packs
        for pack_id in packs:
            holders.setdefault(pack_id, []).append(name)
    sizes: dict[bytes, int] = {}
    mtimes: dict[bytes, float] = {}
    for name in store.list(layout.PACKS):
        found, stat = layout.pack_id_of(name), store.stat(name)
        if found is not None and stat is not None:
            sizes[found], mtimes[found] = stat.size, stat.mtime
    report.packs_before = len(sizes)
    report.bytes_before = sum(sizes.values())
    remove: list[bytes] = []
    repack: list[tuple[bytes, list[Entry]]] = []
    for pack_id in sizes:
        if pack_id not in holders:
            if mtimes[pack_id] > young:
                continue  # its index may be on its way
            report.orphan_packs += 1
            remove.append(pack_id)
            continue
        try:
            entries = pack_entries(store, pack_id)
        except IntegrityError as exc:
            raise IntegrityError(
                f"pack {layout.pack(pack_id)} of {store.describe()} is damaged ({exc}); "
                "`mover verify --read-data` names the backups that need its chunks; gc "
                "changes nothing") from exc
        keep = [e for e in entries if e.digest in live
                and (where := table.locate(e.digest)) is not None and where[0] == pack_id]
        garbage = sum(e.length for e in entries) - sum(e.length for e in keep)
        report.chunks_removed += len(entries) - len(keep)
        if not keep:
            remove.append(pack_id)
        elif garbage > threshold * sum(e.length for e in entries):
            repack.append((pack_id, keep))
            remove.append(pack_id)
        else:
            report.chunks_removed -= len(entries) - len(keep)  # kept as they are
    report.packs_repacked = len(repack)
    report.packs_deleted = len(remove)
    freed = sum(sizes[p] for p in remove)
    if dry_run:
        report.bytes_freed = freed
        return report
    # 1. the live chunks of repacked packs, into new packs (pack, then index). Packs are
    # named by their content: a "new" pack may already exist (an interrupted gc wrote it),
    # and whatever this run writes or finds so is never deleted below.
    written: set[str] = set()
    builder = PackBuilder()
    for pack_id, keep in repack:
        name = layout.pack(pack_id)
        for e in keep:
            builder.add(e.digest, store.get(name, e.offset, e.length))
            if len(builder) >= target:
                freed -= _write(store, builder, written)
                report.packs_written += 1
                builder = PackBuilder()
    if builder.entries:
        freed -= _write(store, builder, written)
        report.packs_written += 1
    # 2. the index objects of removed packs, 3. the packs. Each delete only while the
    # lock is surely held (still_held).
    doomed = {p for p in remove if layout.pack(p) not in written}
    for name, packs in indexes.items():
        if set(packs) & doomed and name not in written:
            if not set(packs) <= doomed:
                # an index shared with packs that stay: rewrite it without the doomed ones
                kept = [(p, pack_entries(store, p)) for p in packs if p not in doomed]
                index_id, data = encode_index(kept)
                store.put(layout.index(index_id), data)
            still_held()
            store.delete(name)
            report.objects_deleted += 1
    for pack_id in remove:
        if pack_id in doomed:
            still_held()
            store.delete(layout.pack(pack_id))
            report.objects_deleted += 1
    report.bytes_freed = freed
    return report


def _write(store: Store, builder: PackBuilder, written: set[str]) -> int:
    """Write a pack, then its index; record both names; return the bytes written."""
    pack_id, index_id, size = write_pack(store, builder)
    written.update((layout.pack(pack_id), layout.index(index_id)))
    return size


def repair_index(repo: Repository) -> list[str]:
    """Rebuild pack index objects from the packs' own trailers: for every pack that no
    intact index object names, write one; then remove damaged index objects. Returns what
    was done, in words."""
    lock = repo.locks.acquire(layout.LOCK_REPOSITORY)
    assert lock is not None
    try:
        store, done = repo.store, []
        named: set[bytes] = set()
        damaged = []
        for name in store.list(layout.INDEX):
            try:
                packs, _ = decode_index(store.get(name))
            except IntegrityError:
                damaged.append(name)
                continue
            named.update(packs)
        # First: a rebuilt index has the name of the damaged one it replaces (names are
        # content hashes), so the damaged ones must go before the new ones are written.
        if damaged:
            lock.check()
        for name in damaged:
            store.delete(name)
            done.append(f"removed damaged pack index {name}")
        for name in store.list(layout.PACKS):
            pack_id = layout.pack_id_of(name)
            if pack_id is None or pack_id in named:
                continue
            try:
                entries = pack_entries(store, pack_id)
            except IntegrityError as exc:
                done.append(f"pack {name} is damaged ({exc}); its chunks are lost, "
                            "`mover verify` names the backups that need them")
                continue
            index_id, data = encode_index([(pack_id, entries)])
            store.put(layout.index(index_id), data)
            done.append(f"indexed pack {name} ({len(entries)} chunks)")
        return done
    finally:
        lock.release()
