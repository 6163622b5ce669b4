"""mover.restoreplan: the blocks a differential restore writes turn the base image into the
restored one, and no others are written."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mover.index import FixedIndex
from mover.restoreplan import (
    GeometryMismatch,
    all_blocks,
    changed_blocks,
    sample_blocks,
    zero_runs,
)

BS = 512
# A small alphabet of digests so that equal slots are common, as in real backups.
digest_st = st.one_of(st.none(), st.sampled_from([bytes([n]) * 32 for n in range(1, 4)]))


@st.composite
def index_pairs(draw: st.DrawFn) -> tuple[FixedIndex, FixedIndex]:
    capacity = draw(st.integers(0, 30)) * BS + draw(st.integers(0, BS - 1))
    base, target = FixedIndex(capacity, BS), FixedIndex(capacity, BS)
    for block in range(len(base)):
        base.set(block, draw(digest_st))
        target.set(block, draw(digest_st))
    return base, target


@given(index_pairs())
def test_writing_the_changed_blocks_onto_the_base_yields_the_target(
        pair: tuple[FixedIndex, FixedIndex]) -> None:
    base, target = pair
    image = [base.get(b) for b in range(len(base))]
    written = list(changed_blocks(base, target))
    for block in written:
        image[block] = target.get(block)
    assert image == [target.get(b) for b in range(len(target))]
    assert written == sorted(set(written))                       # ascending, once each
    assert all(base.get(b) != target.get(b) for b in written)    # nothing needless


@given(index_pairs())
def test_a_backup_against_itself_changes_nothing(pair: tuple[FixedIndex, FixedIndex]) -> None:
    base, _ = pair
    assert list(changed_blocks(base, base.copy())) == []
    assert list(all_blocks(base)) == list(range(len(base)))


@pytest.mark.parametrize("other", [FixedIndex(8 * BS, BS * 2), FixedIndex(9 * BS, BS)],
                         ids=["other-block-size", "other-capacity"])
def test_another_geometry_is_refused_before_any_block(other: FixedIndex) -> None:
    with pytest.raises(GeometryMismatch):
        changed_blocks(FixedIndex(8 * BS, BS), other)


@given(index_pairs(), st.integers(0, 40), st.integers(0, 3))
def test_samples_are_blocks_the_restore_leaves_alone_stored_first(
        pair: tuple[FixedIndex, FixedIndex], count: int, seed: int) -> None:
    base, target = pair
    chosen = sample_blocks(base, target, count, seed)
    same = [b for b in range(len(base)) if base.get(b) == target.get(b)]
    stored = [b for b in same if base.get(b) is not None]
    assert chosen == sorted(set(chosen)) and len(chosen) == min(count, len(same))
    assert not set(chosen) & set(changed_blocks(base, target))  # a re-run samples the same
    assert sum(base.get(b) is not None for b in chosen) == min(count, len(stored))
    assert sample_blocks(base, target, count, seed) == chosen


@given(index_pairs(), st.integers(0, 40 * BS), st.integers(0, 40 * BS))
def test_zero_runs_cover_the_range_and_tell_zero_blocks(
        pair: tuple[FixedIndex, FixedIndex], offset: int, length: int) -> None:
    index, _ = pair
    runs = zero_runs(index, offset, length)
    end = min(offset + length, index.capacity)
    position = offset
    for start, size, zero in runs:
        assert start == position and size > 0
        assert all((index.get(b // BS) is None) == zero for b in range(start, start + size, 64))
        position = start + size
    assert position == (end if runs else offset) and (runs or end <= offset)
    assert all(a[2] != b[2] for a, b in itertools.pairwise(runs))   # merged
