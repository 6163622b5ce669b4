"""Pack files, pack indexes, the chunk table and the packed chunk store."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mover.errors import IntegrityError, RepositoryError
from mover.repo import ChunkCodec, MemoryStore, PackedChunks, layout
from mover.repo.chunktable import ChunkTable
from mover.repo.faulty import FaultyStore
from mover.repo.packfile import (
    TAIL_SIZE,
    PackBuilder,
    check_header,
    decode_index,
    encode_index,
    parse_entries,
    parse_tail,
)

digests = st.binary(min_size=32, max_size=32)


@given(st.lists(st.tuples(digests, st.integers(0, 50), st.integers(0, 2**32 - 1),
                          st.integers(0, 2**32 - 1)), max_size=300))
@settings(max_examples=60, deadline=None)
def test_chunk_table_is_a_map(rows: list[tuple[bytes, int, int, int]]) -> None:
    table, want = ChunkTable(), {}
    for digest, pack, offset, length in rows:
        table.add(digest, pack, offset, length)
        want[digest] = (pack, offset, length)
    assert len(table) == len(want)
    for digest, location in want.items():
        assert table.get(digest) == location
        assert digest in table
    assert table.digests() == set(want)
    assert table.get(b"\xff" * 31 + b"\x00") == want.get(b"\xff" * 31 + b"\x00")


def test_chunk_table_ignores_matches_across_records() -> None:
    """The bytes of a digest may occur straddling two records of its bucket (a location
    of zeros, then the next digest): that is not the digest."""
    table = ChunkTable()
    a, b = b"\x00\x00" + b"A" * 30, b"\x00\x00" + b"B" * 30
    table.add(a, 0, 0, 0)
    table.add(b, 7, 7, 7)
    ghost = bytes(12) + b[:20]                # a's location, then the start of b
    assert table.get(ghost) is None and ghost not in table
    table.add(ghost, 4, 5, 6)
    assert (table.get(ghost), table.get(a), table.get(b)) == ((4, 5, 6), (0, 0, 0), (7, 7, 7))
    assert len(table) == 3


def test_pack_round_trip_and_damage() -> None:
    builder = PackBuilder()
    blobs = [os.urandom(n) for n in (1, 100, 5000)]
    entries = [builder.add(hashlib.sha256(b).digest(), b) for b in blobs]
    pack_id, data = builder.seal()
    check_header(bytes(data[:16]))
    count, table = parse_tail(bytes(data[-TAIL_SIZE:]), len(data))
    # the id names the trailer (entries, n, T, checksum), not the 16 MiB before it
    assert pack_id == hashlib.sha256(bytes(data[table:])).digest()
    parsed = parse_entries(bytes(data[table:len(data) - TAIL_SIZE]), bytes(data[-TAIL_SIZE:]))
    assert count == 3 and parsed == entries
    for e, blob in zip(parsed, blobs, strict=True):
        assert bytes(data[e.offset:e.offset + e.length]) == blob
    data[table + 3] ^= 1
    with pytest.raises(IntegrityError, match="checksum"):
        parse_entries(bytes(data[table:len(data) - TAIL_SIZE]), bytes(data[-TAIL_SIZE:]))


def test_pack_id_names_the_chunks_and_their_places() -> None:
    """Same chunks at the same offsets: the same id; a chunk more, fewer or elsewhere: not."""
    def pack(*blobs: bytes) -> bytes:
        builder = PackBuilder()
        for b in blobs:
            builder.add(hashlib.sha256(b).digest(), b)
        return builder.seal()[0]

    a, b, c = b"a" * 10, b"b" * 20, b"c" * 30
    assert pack(a, b) == pack(a, b)
    assert len({pack(a, b), pack(b, a), pack(a, b, c), pack(a), pack(a, c)}) == 5


def test_pack_index_round_trip_and_damage() -> None:
    builder = PackBuilder()
    e1 = builder.add(b"\x02" * 32, b"x")
    e2 = builder.add(b"\x01" * 32, b"yy")
    index_id, data = encode_index([(b"\x09" * 32, [e1, e2])])
    assert index_id == hashlib.sha256(data).digest()
    packs, rows = decode_index(data)
    assert packs == [b"\x09" * 32]
    assert rows == [(b"\x01" * 32, 0, e2.offset, 2), (b"\x02" * 32, 0, e1.offset, 1)]
    damaged = bytearray(data)
    damaged[30] ^= 1
    with pytest.raises(IntegrityError, match="checksum"):
        decode_index(bytes(damaged))


def hold_pack_writes(store: MemoryStore) -> tuple[threading.Event, threading.Event]:
    """Make ``store`` hold every pack write until released: (``writing``, set when a pack
    write has begun; ``release``, which lets it and later ones go)."""
    writing, release = threading.Event(), threading.Event()
    put = store.put

    def held_put(name: str, data: object, *, replace: bool = False) -> bool:
        if name.startswith(layout.PACKS):
            writing.set()
            release.wait(5)
        return put(name, data, replace=replace)  # type: ignore[arg-type]

    store.put = held_put  # type: ignore[method-assign]
    return writing, release


def blocks(n: int, size: int = 4096) -> list[bytes]:
    return [os.urandom(size // 2) * 2 for _ in range(n)]


def test_packed_chunks_store_sync_and_reopen() -> None:
    store, codec = MemoryStore(), ChunkCodec(3)
    chunks = PackedChunks(store, codec, target=20000)
    data = blocks(40)
    for block in data:
        digest = codec.digest(block)
        assert not chunks.has(digest)
        assert chunks.put(digest, block) > 0
        assert chunks.has(digest)
        assert chunks.put(digest, block) == 0                # a dedup hit
        assert chunks.read_block(digest) == block            # readable before it is written
    packs_before_sync = len(list(store.list(layout.PACKS)))
    chunks.sync()
    packs = list(store.list(layout.PACKS))
    assert 1 < packs_before_sync <= len(packs) <= 40 // 4 + 1  # far fewer packs than chunks
    assert len(list(store.list(layout.INDEX))) == len(packs)
    again = PackedChunks(store, codec)
    assert len(again) == 40
    for block in data:
        assert again.read_block(codec.digest(block)) == block


def test_a_chunk_reads_while_its_pack_is_being_written() -> None:
    store, codec = MemoryStore(), ChunkCodec(3)
    chunks = PackedChunks(store, codec, target=1 << 30)
    (block,) = blocks(1)
    digest = codec.digest(block)
    chunks.put(digest, block)
    seen: list[bytes] = []
    put = store.put

    def slow_put(name: str, data: object, *, replace: bool = False) -> bool:
        if name.startswith(layout.PACKS):
            seen.append(chunks.read_block(digest))       # sealed, not yet written
        return put(name, data, replace=replace)  # type: ignore[arg-type]

    store.put = slow_put  # type: ignore[method-assign]
    chunks.sync()
    assert seen == [block] and chunks.read_block(digest) == block


def test_a_pending_backup_waits_for_pack_writes_in_flight_before_its_locks_go() -> None:
    """A pack another thread is writing when the backup ends (a cancelled copy's worker)
    lands before the locks are released: a gc waiting for them must not see it late."""
    from mover.repo import MemoryLocks, Repository
    store, codec = MemoryStore(), ChunkCodec(3)
    writing, release = hold_pack_writes(store)
    locks = MemoryLocks()
    repo = Repository.on(store, locks, pack_target=4096)
    pending = repo.begin("vm", "20261201T000000Z-aaaaaa")
    block = os.urandom(5000)                                # incompressible: fills a pack
    worker = threading.Thread(target=repo.chunks.put, args=(codec.digest(block), block))
    worker.start()
    assert writing.wait(5)
    ended = threading.Thread(target=pending.abort)
    ended.start()
    ended.join(0.3)
    assert ended.is_alive()                                 # waits for the write
    assert locks.acquire("repository", wait=False) is None  # still holding the lock
    release.set()
    worker.join(5)
    ended.join(5)
    assert not ended.is_alive() and len(list(store.list(layout.INDEX))) == 1


def test_pack_buffers_are_reused() -> None:
    store, codec = MemoryStore(), ChunkCodec(3)
    chunks = PackedChunks(store, codec, target=8192)
    data = [os.urandom(5000) for _ in range(6)]
    for block in data:
        chunks.put(codec.digest(block), block)
    chunks.sync()
    assert 1 <= len(chunks._spare) <= 2
    again = PackedChunks(store, codec)
    assert all(again.read_block(codec.digest(b)) == b for b in data)


def test_a_failed_pack_write_breaks_the_store_for_this_process() -> None:
    faulty = FaultyStore(MemoryStore())
    chunks = PackedChunks(faulty, ChunkCodec(3), target=1 << 30)
    block = blocks(1)[0]
    chunks.put(chunks.digest(block), block)
    faulty.fail("put", match="packs/")
    with pytest.raises(RepositoryError, match="injected"):
        chunks.sync()
    other = blocks(1)[0]
    with pytest.raises(RepositoryError, match="earlier pack write failed"):
        chunks.put(chunks.digest(other), other)
    assert list(faulty.inner.list(layout.INDEX)) == []      # nothing names the lost chunks


def test_missing_and_truncated_packs_are_integrity_errors() -> None:
    store, codec = MemoryStore(), ChunkCodec(3)
    chunks = PackedChunks(store, codec)
    a, b = blocks(2)
    chunks.put(codec.digest(a), a)
    chunks.put(codec.digest(b), b)
    chunks.sync()
    (pack,) = list(store.list(layout.PACKS))
    store.put(pack, store.get(pack)[:100], replace=True)
    reader = PackedChunks(store, codec)
    with pytest.raises(IntegrityError, match=r"truncated|does not"):
        reader.read_block(codec.digest(b))
    store.delete(pack)
    with pytest.raises(IntegrityError, match="is missing"):
        reader.read_block(codec.digest(a))
    with pytest.raises(IntegrityError, match="in no pack"):
        reader.read_block(b"\x00" * 32)


def test_a_damaged_pack_index_is_skipped_and_named() -> None:
    store, codec = MemoryStore(), ChunkCodec(3)
    chunks = PackedChunks(store, codec)
    (a,) = blocks(1)
    chunks.put(codec.digest(a), a)
    chunks.sync()
    (name,) = list(store.list(layout.INDEX))
    store.put(name, b"garbage", replace=True)
    reader = PackedChunks(store, codec)
    assert reader.damaged == [name] and not reader.has(codec.digest(a))


def test_a_sync_now_and_then_sees_what_other_writers_stored(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers backing up at once deduplicate against each other: a sync reloads the
    pack indexes others wrote, at most every REFRESH_EVERY seconds."""
    from mover import clock
    from mover.repo.packs import REFRESH_EVERY

    now = [100.0]
    monkeypatch.setattr(clock, "monotonic", lambda: now[0])
    store, codec = MemoryStore(), ChunkCodec(3)
    first, second = PackedChunks(store, codec), PackedChunks(store, codec)
    block = os.urandom(4096)
    digest = first.digest(block)
    first.put(digest, block)
    first.sync()
    second.sync()
    assert not second.has(digest)                 # refreshed too recently
    now[0] += REFRESH_EVERY + 0.1
    second.sync()
    assert second.has(digest) and second.put(digest, block) == 0


def test_the_thread_that_fills_a_pack_does_not_write_it() -> None:
    """The filled pack goes to the writer: ``put`` returns while the store is still writing
    it, and ``sync`` returns only once it is written and indexed."""
    store, codec = MemoryStore(), ChunkCodec(3)
    writing, release = hold_pack_writes(store)
    chunks = PackedChunks(store, codec, target=4096)
    block = os.urandom(5000)                                # incompressible: fills a pack
    chunks.put(codec.digest(block), block)                  # returns: the writer writes
    assert writing.wait(5) and not release.is_set()
    synced = threading.Thread(target=chunks.sync)
    synced.start()
    synced.join(0.3)
    assert synced.is_alive()                                # waits for the write
    release.set()
    synced.join(5)
    assert not synced.is_alive() and len(list(store.list(layout.INDEX))) == 1


@pytest.mark.parametrize("threads", [2, 4, 8])
def test_many_threads_filling_packs_against_a_slow_store(threads: int) -> None:
    """Threads filling small packs faster than a slow store takes them: no thread waits
    for another (the hang of a first writer-thread design), every chunk is stored once and
    readable after ``sync``, and at most open + writing + queued + one per waiting thread
    packs are ever unwritten (bounded memory)."""
    import time

    from mover.repo.packs import QUEUED

    store, codec = MemoryStore(), ChunkCodec(3)
    put = store.put
    unwritten_max = 0

    def slow_put(name: str, data: object, *, replace: bool = False) -> bool:
        nonlocal unwritten_max
        if name.startswith(layout.PACKS):
            unwritten_max = max(unwritten_max, len(chunks._buffers))
            time.sleep(0.002)
        return put(name, data, replace=replace)  # type: ignore[arg-type]

    store.put = slow_put  # type: ignore[method-assign]
    chunks = PackedChunks(store, codec, target=6000)
    per_thread = [[os.urandom(3000) for _ in range(40)] for _ in range(threads)]
    shared = [os.urandom(3000) for _ in range(10)]          # every thread stores these too

    def work(mine: list[bytes]) -> None:
        for i, block in enumerate(mine):
            chunks.put(codec.digest(block), block)
            if i % 4 == 0:
                b = shared[(i // 4) % len(shared)]
                chunks.put(codec.digest(b), b)
            if i % 13 == 0:
                chunks.sync()

    workers = [threading.Thread(target=work, args=(m,)) for m in per_thread]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert not any(w.is_alive() for w in workers)
    chunks.sync()
    assert chunks._in_flight == 0 and not chunks._queue and chunks._writer is None
    assert 1 <= unwritten_max <= 2 + QUEUED + threads
    everything = [b for m in per_thread for b in m] + shared
    again = PackedChunks(store, codec)
    assert len(again) == len(everything)                    # each chunk once
    assert all(again.read_block(codec.digest(b)) == b for b in everything)


def test_a_failed_write_with_packs_queued_behind_it_ends_every_wait() -> None:
    """The writer fails a pack while others wait in the queue and threads wait for room:
    every ``put`` and ``sync`` then raises (none hangs), and no index names a lost chunk."""
    faulty = FaultyStore(MemoryStore())
    faulty.fail("put", match="packs/")
    codec = ChunkCodec(3)
    chunks = PackedChunks(faulty, codec, target=4096)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                block = os.urandom(5000)
                chunks.put(codec.digest(block), block)
            chunks.sync()
        except RepositoryError as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert not any(w.is_alive() for w in workers)
    assert len(errors) == 4 and all("injected" in str(e) for e in errors)
    with pytest.raises(RepositoryError, match="earlier pack write failed"):
        chunks.sync()
    chunks.drain()                                          # returns: nothing in flight
    assert chunks._in_flight == 0
    assert list(faulty.inner.list(layout.INDEX)) == []
