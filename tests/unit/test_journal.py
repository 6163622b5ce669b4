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


def test_journal_round_trip_later_records_win(tmp_path: Path) -> None:
    path = tmp_path / "disk-2000.journal"
    writer = JournalWriter(path)
    writer.append([(0, b"a" * 32), (1, None)])
    writer.append([(0, b"b" * 32)])
    writer.sync()
    writer.close()
    assert list(read_journal(path)) == [(0, b"a" * 32), (1, None), (0, b"b" * 32)]
    assert dict(read_journal(path)) == {0: b"b" * 32, 1: None}


def test_a_torn_or_damaged_record_ends_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "j"
    writer = JournalWriter(path)
    writer.append([(i, bytes([i + 1]) * 32) for i in range(5)])
    writer.close()
    data = path.read_bytes()
    path.write_bytes(data[: 3 * RECORD_SIZE + 7])           # torn fourth record
    assert [b for b, _ in read_journal(path)] == [0, 1, 2]
    damaged = bytearray(data)
    damaged[RECORD_SIZE + 9] ^= 0xFF                        # bit rot in the second record
    path.write_bytes(bytes(damaged))
    assert [b for b, _ in read_journal(path)] == [0]
    assert list(read_journal(tmp_path / "missing")) == []


def test_truncate_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "j"
    JournalWriter(path).append([(7, None)])
    JournalWriter(path, truncate=True).append([(8, None)])
    assert list(read_journal(path)) == [(8, None)]
