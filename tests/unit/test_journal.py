"""The block journal of pending backups, and the arithmetic of what is left to read."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mover.extents import Extent, align, block_count, blocks, without_blocks
from mover.repo.journal import RECORD_SIZE, JournalWriter, read_journal

BS = 4096


@st.composite
def plans(draw: st.DrawFn) -> tuple[int, list[Extent], bytearray]:
    capacity = draw(st.integers(1, 64 * BS))
    raw = draw(st.lists(st.tuples(st.integers(0, capacity - 1), st.integers(1, 8 * BS)),
                        max_size=8))
    extents = [Extent(s, min(n, capacity - s)) for s, n in raw]
    done = bytearray(draw(st.lists(st.booleans(), min_size=block_count(capacity, BS),
                                   max_size=block_count(capacity, BS))))
    return capacity, align(extents, BS, capacity), done


def covered(extents: list[Extent]) -> set[int]:
    return {b for e in extents for b in blocks(e, BS)}


@given(plans())
def test_without_blocks_leaves_exactly_the_blocks_not_done(plan) -> None:
    capacity, aligned, done = plan
    left = without_blocks(aligned, done, BS, capacity)
    want = {b for b in covered(aligned) if not done[b]}
    assert covered(left) == want
    assert all(e.start % BS == 0 and e.end <= capacity for e in left)


def write(path: Path, records: list[tuple[int, bytes | None, bool]]) -> None:
    writer = JournalWriter(path)
    for block, digest, synced in records:
        writer.append([(block, digest)], synced)
    writer.close()


def test_journal_round_trip_keeps_order_and_the_synced_flag(tmp_path: Path) -> None:
    path = tmp_path / "disk-2000.journal"
    records = [(0, b"a" * 32, False), (1, None, False), (0, b"a" * 32, True),
               (2**40, b"b" * 32, True)]
    write(path, records)
    assert list(read_journal(path)) == records
    assert path.stat().st_size == 4 * RECORD_SIZE


def test_a_torn_or_damaged_record_ends_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "j"
    write(path, [(i, bytes([i + 1]) * 32, True) for i in range(5)])
    data = path.read_bytes()
    path.write_bytes(data[: 3 * RECORD_SIZE + 7])            # torn fourth record
    assert [b for b, _, _ in read_journal(path)] == [0, 1, 2]
    damaged = bytearray(data)
    damaged[RECORD_SIZE + 9] ^= 0xFF                         # bit rot in the second record
    path.write_bytes(bytes(damaged))
    assert [b for b, _, _ in read_journal(path)] == [0]
    assert list(read_journal(tmp_path / "missing")) == []


def test_reopening_cuts_a_torn_tail_so_new_records_stay_readable(tmp_path: Path) -> None:
    path = tmp_path / "j"
    write(path, [(1, None, True), (2, None, True)])
    path.write_bytes(path.read_bytes()[: RECORD_SIZE + 5])   # the process died mid-write
    write(path, [(3, None, True)])
    assert [b for b, _, _ in read_journal(path)] == [1, 3]


def test_truncate_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "j"
    write(path, [(7, None, True)])
    writer = JournalWriter(path, truncate=True)
    writer.append([(8, None)], synced=False)
    writer.close()
    assert list(read_journal(path)) == [(8, None, False)]
