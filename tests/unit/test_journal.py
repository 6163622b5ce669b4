"""The block journal of pending backups, and the arithmetic of what is left to read."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mover.errors import IntegrityError
from mover.extents import Extent, align, block_count, blocks, without_blocks
from mover.repo import MemoryStore
from mover.repo.journal import RECORD_SIZE, Journal

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


def journal(store: MemoryStore | None = None) -> Journal:
    return Journal(store or MemoryStore(), "vm", "20261125T021500Z-aaaaaa", 2000)


def test_journal_round_trip_keeps_order_one_segment_per_append() -> None:
    j = journal()
    j.append([(0, b"a" * 32), (1, None)])
    j.append([(0, b"c" * 32), (2**40, b"b" * 32)])
    j.append([])                                        # nothing: no segment
    assert list(j.read()) == [(0, b"a" * 32), (1, None), (0, b"c" * 32), (2**40, b"b" * 32)]
    segments = list(j.store.list(j.prefix))
    assert len(segments) == 2 and len(j.store.get(segments[0])) == 2 * RECORD_SIZE


def test_a_damaged_segment_is_an_integrity_error() -> None:
    j = journal()
    j.append([(i, bytes([i + 1]) * 32) for i in range(5)])
    (name,) = list(j.store.list(j.prefix))
    data = bytearray(j.store.get(name))
    data[RECORD_SIZE + 9] ^= 0xFF
    j.store.put(name, bytes(data), replace=True)
    with pytest.raises(IntegrityError, match="damaged"):
        list(j.read())
    j.store.put(name, bytes(data[:RECORD_SIZE + 3]), replace=True)
    with pytest.raises(IntegrityError, match="torn"):
        list(j.read())


def test_rewrite_replaces_everything_before_it_even_if_old_segments_remain() -> None:
    store = MemoryStore()
    j = journal(store)
    j.append([(7, None), (8, None)])
    older = list(store.list(j.prefix))
    j.rewrite([(9, None)])
    assert list(j.read()) == [(9, None)]
    for name in older:                                  # as if a crash came before the
        store.put(name, _segment(7))                    # older segments were deleted
    assert list(journal(store).read()) == [(9, None)]
    j2 = journal(store)
    j2.append([(10, None)])
    assert list(j2.read()) == [(9, None), (10, None)]
    j2.clear()
    assert list(j2.read()) == []


def _segment(block: int) -> bytes:
    other = journal()
    other.append([(block, None)])
    (name,) = list(other.store.list(other.prefix))
    return other.store.get(name)
