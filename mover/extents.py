"""Extent arithmetic: byte ranges of a disk, merged, rounded to blocks and split into reads.

Pure functions over immutable values. Every function returns a new list and never mutates
its input. Invalid arguments (a misaligned extent where alignment is required, a read size
that is not a multiple of the block size) raise ``ValueError``: they are programming
errors, not conditions a user can fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True, slots=True)
class Extent:
    """The byte range ``[start, start + length)``; ``start >= 0`` and ``length > 0``."""

    start: int
    length: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.length <= 0:
            raise ValueError(f"invalid extent start={self.start} length={self.length}")

    @property
    def end(self) -> int:
        """The first byte after the extent."""
        return self.start + self.length


def normalize(extents: Iterable[Extent]) -> list[Extent]:
    """Sorted extents covering the same bytes, with overlapping and adjacent ones merged.

    The result is disjoint and no extent ends where the next begins, so it is the one
    canonical form of a set of bytes; ``normalize`` of its own output returns it unchanged.
    """
    merged: list[Extent] = []
    for extent in sorted(extents):
        if merged and extent.start <= merged[-1].end:
            last = merged[-1]
            if extent.end > last.end:
                merged[-1] = Extent(last.start, extent.end - last.start)
        else:
            merged.append(extent)
    return merged


def align(extents: Iterable[Extent], block_size: int, capacity: int) -> list[Extent]:
    """Round every extent out to whole blocks, clip to ``capacity``, and normalize.

    Every input byte below ``capacity`` is covered. Starts are multiples of ``block_size``;
    ends are too, except an extent ending at ``capacity`` when the last block is short.
    Bytes at or beyond ``capacity`` are dropped (CBT never reports them; a caller that
    passes them gets the clipped range rather than reads past the end of the disk).
    """
    _check_block_size(block_size)
    rounded: list[Extent] = []
    for extent in extents:
        start = extent.start - extent.start % block_size
        end = min(-(-extent.end // block_size) * block_size, capacity)
        if start < end:
            rounded.append(Extent(start, end - start))
    return normalize(rounded)


def plan_reads(aligned: Iterable[Extent], block_size: int, max_read: int) -> list[Extent]:
    """Split block-aligned extents into reads of at most ``max_read`` bytes, in disk order.

    The reads cover exactly the union of ``aligned`` (it is normalized first), each read
    starts on a block boundary, and only a read ending at an unaligned end of the input (the
    disk's short last block) ends unaligned. ``max_read`` must be a positive multiple of
    ``block_size`` so that a block never straddles two reads.
    """
    _check_block_size(block_size)
    if max_read <= 0 or max_read % block_size:
        raise ValueError(f"max_read {max_read} is not a positive multiple of {block_size}")
    reads: list[Extent] = []
    for extent in normalize(aligned):
        if extent.start % block_size:
            raise ValueError(f"{extent} does not start on a {block_size}-byte block")
        for start in range(extent.start, extent.end, max_read):
            reads.append(Extent(start, min(max_read, extent.end - start)))
    return reads


def blocks(extent: Extent, block_size: int) -> range:
    """Numbers of the blocks an extent covers; its start must be block-aligned.

    A short end (the disk's last block) still counts as a whole block.
    """
    _check_block_size(block_size)
    if extent.start % block_size:
        raise ValueError(f"{extent} does not start on a {block_size}-byte block")
    return range(extent.start // block_size, -(-extent.end // block_size))


def total(extents: Iterable[Extent]) -> int:
    """Sum of the lengths (overlaps are counted twice; normalize first to avoid that)."""
    return sum(extent.length for extent in extents)


def block_count(capacity: int, block_size: int) -> int:
    """Number of blocks of a disk of ``capacity`` bytes; the last one may be short."""
    _check_block_size(block_size)
    if capacity < 0:
        raise ValueError(f"negative capacity {capacity}")
    return -(-capacity // block_size)


def _check_block_size(block_size: int) -> None:
    if block_size <= 0:
        raise ValueError(f"block size must be positive, got {block_size}")


def without_blocks(aligned: Iterable[Extent], done: bytes | bytearray, block_size: int,
                   capacity: int) -> list[Extent]:
    """The parts of block-aligned ``aligned`` whose blocks are not marked in ``done`` (one
    byte per block, non-zero = done): what a resumed backup still has to read."""
    _check_block_size(block_size)
    left: list[Extent] = []
    run_start: int | None = None
    for extent in normalize(aligned):
        for block in blocks(extent, block_size):
            if block < len(done) and done[block]:
                if run_start is not None:
                    left.append(Extent(run_start, block * block_size - run_start))
                    run_start = None
            elif run_start is None:
                run_start = block * block_size
        if run_start is not None:
            left.append(Extent(run_start, min(extent.end, capacity) - run_start))
            run_start = None
    return normalize(left)
