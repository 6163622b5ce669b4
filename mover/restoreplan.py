"""Which blocks a restore writes: pure logic over disk indexes, no I/O.

A full restore writes every block of the disk. A differential restore onto a target that
holds backup ``base`` today writes only the blocks whose digest slots differ between
``base`` and the backup being restored: equal slots name the same bytes (digests are the
SHA-256 of the uncompressed block, and an all-zero slot means an all-zero block), so the
target already holds them. Two indexes can be diffed only if they describe the same disk
geometry; anything else is refused before a byte is written.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from mover.index import FixedIndex


class GeometryMismatch(ValueError):
    """The two indexes are not of one disk geometry (capacity and block size)."""


def all_blocks(index: FixedIndex) -> range:
    """A full restore: every block, in disk order."""
    return range(len(index))


def changed_blocks(base: FixedIndex, target: FixedIndex) -> Iterator[int]:
    """Blocks of ``target`` whose slot differs from ``base``'s, ascending.

    Writing exactly these blocks of ``target`` onto an image of ``base`` yields ``target``'s
    image. GeometryMismatch if capacity or block size differ."""
    if (base.capacity, base.block_size) != (target.capacity, target.block_size):
        raise GeometryMismatch(
            f"capacity/block size {target.capacity}/{target.block_size} against the base's "
            f"{base.capacity}/{base.block_size}")
    return (block for block in range(len(target)) if base.get(block) != target.get(block))


def sample_blocks(base: FixedIndex, target: FixedIndex, count: int,
                  seed: int = 0) -> list[int]:
    """Up to ``count`` distinct blocks to check a differential target against ``base``
    before writing ``target``'s changed blocks, ascending. Only blocks whose slot is equal
    in both indexes: the restore never writes them, so they hold ``base``'s bytes before and
    after it, and a re-run after a partial write checks the same untouched blocks (a block
    the restore does write may already hold the new bytes). Non-zero blocks first (a zeroed
    target would pass a check of zero blocks), then zero blocks if too few are stored.
    Deterministic for a seed; the two indexes are of one geometry (``changed_blocks``)."""
    rng = random.Random(seed)
    same = [b for b in range(len(base)) if base.get(b) == target.get(b)]
    stored = [b for b in same if base.get(b) is not None]
    chosen = rng.sample(stored, min(count, len(stored)))
    if len(chosen) < count:
        zeros = [b for b in same if base.get(b) is None]
        chosen += rng.sample(zeros, min(count - len(chosen), len(zeros)))
    return sorted(chosen)


def zero_runs(index: FixedIndex, offset: int, length: int) -> list[tuple[int, int, bool]]:
    """``[offset, offset + length)`` of the disk as runs ``(offset, length, is_zero)``:
    ascending, adjacent, covering the range exactly (clipped to the capacity), neighbouring
    blocks of one kind merged. What an NBD export answers to a block status request."""
    end = min(offset + length, index.capacity)
    runs: list[tuple[int, int, bool]] = []
    position = max(offset, 0)
    while position < end:
        block = position // index.block_size
        stop = min(end, (block + 1) * index.block_size)
        zero = index.get(block) is None
        if runs and runs[-1][2] == zero:
            start, _, _ = runs[-1]
            runs[-1] = (start, stop - start, zero)
        else:
            runs.append((position, stop - position, zero))
        position = stop
    return runs
