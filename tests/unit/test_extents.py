"""Properties of the extent arithmetic, checked against a byte-set model."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mover.extents import Extent, align, block_count, blocks, normalize, plan_reads, total

BLOCK_SIZES = st.sampled_from([1, 3, 4, 16, 512])
extent_st = st.builds(Extent, st.integers(0, 300), st.integers(1, 80))
extents_st = st.lists(extent_st, max_size=12)


def covered(extents: list[Extent]) -> set[int]:
    return {b for e in extents for b in range(e.start, e.end)}


@given(extents_st)
def test_normalize_preserves_bytes_and_is_canonical(extents: list[Extent]) -> None:
    out = normalize(extents)
    assert covered(out) == covered(extents)
    assert normalize(out) == out
    for a, b in itertools.pairwise(out):
        assert a.end < b.start  # sorted, disjoint and not adjacent
    assert total(out) == len(covered(extents))


@given(extents_st, BLOCK_SIZES, st.integers(0, 400))
def test_align_covers_rounds_and_clips(extents: list[Extent], bs: int, capacity: int) -> None:
    out = align(extents, bs, capacity)
    want = {b for b in covered(extents) if b < capacity}
    assert want <= covered(out)
    assert normalize(out) == out
    for e in out:
        assert e.start % bs == 0
        assert e.end % bs == 0 or e.end == capacity
        assert e.end <= capacity
    # rounding out adds less than one block at each end of each input extent
    assert total(out) - len(want) < 2 * bs * max(len(extents), 1)


@given(extents_st, BLOCK_SIZES, st.integers(1, 5), st.integers(0, 400))
def test_plan_reads_partitions_aligned_input(
    extents: list[Extent], bs: int, per_read: int, capacity: int
) -> None:
    aligned = align(extents, bs, capacity)
    max_read = bs * per_read
    reads = plan_reads(aligned, bs, max_read)
    assert sorted(reads) == reads
    assert total(reads) == total(aligned)
    assert covered(reads) == covered(aligned)  # with equal totals: an exact partition
    for r in reads:
        assert r.length <= max_read
        assert r.start % bs == 0
        assert r.end % bs == 0 or r.end == capacity


@given(st.integers(0, 10_000), BLOCK_SIZES)
def test_block_count_is_ceil(capacity: int, bs: int) -> None:
    n = block_count(capacity, bs)
    assert n * bs >= capacity > (n - 1) * bs or capacity == n == 0


def test_blocks_of_short_last_block() -> None:
    assert blocks(Extent(8, 10), 4) == range(2, 5)
    assert blocks(Extent(0, 4), 4) == range(0, 1)


@pytest.mark.parametrize(
    ("start", "length"), [(-1, 1), (0, 0), (5, -2)], ids=["negative-start", "empty", "negative"]
)
def test_invalid_extent(start: int, length: int) -> None:
    with pytest.raises(ValueError):
        Extent(start, length)


def test_plan_reads_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="multiple"):
        plan_reads([Extent(0, 8)], 4, 6)
    with pytest.raises(ValueError, match="block"):
        plan_reads([Extent(2, 8)], 4, 8)
    with pytest.raises(ValueError, match="block"):
        blocks(Extent(1, 3), 4)


def test_align_example_one_mib() -> None:
    mib = 1 << 20
    got = align([Extent(mib + 5, 10), Extent(3 * mib - 1, 2)], mib, 3 * mib + 100)
    assert got == [Extent(mib, 2 * mib + 100)]  # adjacent blocks merge
    assert plan_reads(got, mib, 2 * mib) == [Extent(mib, 2 * mib), Extent(3 * mib, 100)]
