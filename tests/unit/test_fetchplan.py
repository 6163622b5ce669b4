"""Sub-block fetch planning: any change pattern plus the parent's blocks gives exactly the
new disk, reading no more than whole blocks would."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from mover.extents import Extent, align, total
from mover.fetchplan import MIN_PIECE, Fetch, gaps, plan_fetches

KiB = 1024
BLOCK = 256 * KiB


@st.composite
def disks(draw: st.DrawFn) -> tuple[int, list[Extent], list[str], bytes]:
    """(capacity, changed extents, base kind per block, done-map)."""
    blocks = draw(st.integers(1, 9))
    capacity = blocks * BLOCK - draw(st.sampled_from([0, 0, 512, BLOCK // 2]))
    starts = st.integers(0, capacity - 1)
    changed = [Extent(s, min(draw(st.integers(1, 3 * BLOCK)), capacity - s))
               for s in draw(st.lists(starts, max_size=8))]
    # "chunk": the parent stored the block; "zero": a zero block; "none": no base (a full)
    kinds = draw(st.lists(st.sampled_from(["chunk", "zero", "none"]), min_size=blocks,
                          max_size=blocks))
    done = bytes(draw(st.lists(st.sampled_from([0, 0, 0, 1]), min_size=blocks,
                               max_size=blocks)))
    return capacity, changed, kinds, done


@settings(max_examples=150, deadline=None)
@given(disks(), st.sampled_from([4 * KiB, 64 * KiB, 128 * KiB]), st.sampled_from([1, 2, 4]),
       st.integers(0, 2**32), st.booleans())
def test_pieces_plus_base_give_exactly_the_new_blocks(
        disk: tuple[int, list[Extent], list[str], bytes], granularity: int, per_read: int,
        seed: int, resume: bool) -> None:
    rng = random.Random(seed)
    capacity, changed, kinds, done = disk
    skip = done if resume else b""
    old = bytearray(rng.randbytes(capacity))
    for block, kind in enumerate(kinds):
        if kind == "zero":
            old[block * BLOCK:(block + 1) * BLOCK] = bytes(len(old[block * BLOCK:(block + 1)
                                                                   * BLOCK]))
    new = bytearray(old)
    for e in changed:
        new[e.start:e.end] = rng.randbytes(e.length)

    fetches = plan_fetches(changed, BLOCK, capacity, per_read * BLOCK, granularity,
                           lambda b: kinds[b] != "none", skip)

    want = {b for e in align(changed, BLOCK, capacity)
            for b in range(e.start // BLOCK, -(-e.end // BLOCK))
            if not (b < len(skip) and skip[b])}
    got: set[int] = set()
    for a, b in itertools.pairwise(fetches):
        assert a.end <= b.start
    for f in fetches:
        assert f.start % BLOCK == 0 and 0 < f.length <= per_read * BLOCK
        assert f.end % BLOCK == 0 or f.end == capacity
        for p in f.pieces:
            assert f.start <= p.start and p.end <= f.end
            assert p.start % MIN_PIECE == 0 and (p.end % MIN_PIECE == 0 or p.end == capacity)
        blocks = set(range(f.start // BLOCK, -(-f.end // BLOCK)))
        assert not blocks & got
        got |= blocks
        # what the copy does: read the pieces, fill the rest from each block's base
        buf = bytearray(rng.randbytes(f.length))    # a reused buffer holds anything
        for p in f.pieces:
            buf[p.start - f.start:p.end - f.start] = new[p.start:p.end]
        for block, holes in f.fills(BLOCK):
            assert kinds[block] != "none", "a block without a base must be read whole"
            base = bytes(BLOCK) if kinds[block] == "zero" else old[block * BLOCK:
                                                                    (block + 1) * BLOCK]
            for h in holes:
                buf[h.start - f.start:h.end - f.start] = base[h.start - block * BLOCK:
                                                              h.end - block * BLOCK]
        assert buf == new[f.start:f.end]
    assert got == want
    # never more than the whole blocks; with a base everywhere, about the changed bytes
    assert sum(f.fetched for f in fetches) <= sum(min(BLOCK, capacity - b * BLOCK) for b in want)


def test_a_64k_change_in_a_1m_block_fetches_64k() -> None:
    MiB = 1024 * KiB
    [f] = plan_fetches([Extent(MiB + 128 * KiB, 100)], MiB, 8 * MiB, 4 * MiB, 64 * KiB,
                       lambda b: True)
    assert (f.start, f.length, f.pieces) == (MiB, MiB, (Extent(MiB + 128 * KiB, 64 * KiB),))
    assert [b for b, _ in f.fills(MiB)] == [1]


def test_without_a_base_or_granularity_blocks_are_read_whole() -> None:
    MiB = 1024 * KiB
    changed = [Extent(MiB + 128 * KiB, 100), Extent(2 * MiB, 10)]
    whole = [Fetch.whole(Extent(MiB, 2 * MiB))]
    assert plan_fetches(changed, MiB, 8 * MiB, 4 * MiB, 64 * KiB, lambda b: False) == whole
    assert plan_fetches(changed, MiB, 8 * MiB, 4 * MiB) == whole


def test_a_mostly_changed_block_is_read_whole() -> None:
    MiB = 1024 * KiB
    changed = [Extent(i * 128 * KiB, 64 * KiB) for i in range(8)]   # 8 pieces, half the block
    assert plan_fetches(changed, MiB, MiB, MiB, 64 * KiB, lambda b: True) == [
        Fetch.whole(Extent(0, MiB))]


def test_gaps() -> None:
    assert gaps(0, 10, [Extent(2, 3), Extent(7, 1)]) == [Extent(0, 2), Extent(5, 2),
                                                         Extent(8, 2)]
    assert gaps(0, 10, [Extent(0, 10)]) == []
    assert total(gaps(5, 6, [])) == 1
