"""Sub-block fetch planning: which bytes of a disk a copy reads, and which it takes from the
block's base (its parent's chunk, or zeros).

Pure functions over immutable values. An incremental that read whole 1 MiB blocks for
64 KiB changes fetched 2.7x the changed bytes; here a block CBT reports partly changed is
fetched only where it changed (rounded out to the CBT granularity, at least ``MIN_PIECE``),
and the copy fills the rest from the block's base before storing the block as usual.

A :class:`Fetch` is the unit of work of the copy loop: consecutive blocks, at most
``max_read`` bytes of them (as reads were before), and the pieces of those blocks to read.
A whole-block fetch has one piece covering it: exactly the reads of ``plan_reads``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mover.extents import Extent, align, normalize, plan_reads, total

MIN_PIECE = 64 * 1024
"""The smallest piece fetched: CBT's own granularity on ESXi (and the lab's default)."""

PIECE_COST = 128 * 1024
"""What one more ranged GET costs, in bytes of transfer it is worth. A partly changed block is
fetched in pieces when ``changed + pieces * PIECE_COST < block + PIECE_COST``; otherwise
whole. Measured (docs/performance.md): on the lab's loopback /folder one GET costs 0.42 ms
plus 0.70 ms per MiB (a fixed cost worth ~600 KiB there); behind a real host's ~100 MB/s per
connection the same fixed cost is worth ~45 KiB. Fetchers overlap those fixed costs, and the
pieces of neighbouring blocks merge into one GET, so 128 KiB is used: a 64 KiB change in a
1 MiB block is one 64 KiB GET, a block changed in 8 scattered places is read whole."""


@dataclass(frozen=True, slots=True)
class Fetch:
    """The consecutive blocks ``[start, start + length)`` (block-aligned start; only the
    disk's short last block ends unaligned), of which only ``pieces`` are read. ``pieces``
    are sorted, disjoint, non-adjacent, inside the blocks and cover at least one byte."""

    start: int
    length: int
    pieces: tuple[Extent, ...]

    @classmethod
    def whole(cls, extent: Extent) -> Fetch:
        return cls(extent.start, extent.length, (extent,))

    @property
    def end(self) -> int:
        return self.start + self.length

    @property
    def fetched(self) -> int:
        """Bytes read from the source."""
        return total(self.pieces)

    def is_whole(self) -> bool:
        return len(self.pieces) == 1 and self.pieces[0] == Extent(self.start, self.length)

    def fills(self, block_size: int) -> list[tuple[int, list[Extent]]]:
        """Per block that needs its base: (block number, the byte ranges not read), in disk
        order. Empty for a whole fetch."""
        if self.is_whole():
            return []
        out = []
        for bstart in range(self.start, self.end, block_size):
            bend = min(bstart + block_size, self.end)
            holes = gaps(bstart, bend, self.pieces)
            if holes:
                out.append((bstart // block_size, holes))
        return out


def gaps(start: int, end: int, pieces: Iterable[Extent]) -> list[Extent]:
    """The parts of ``[start, end)`` that no piece covers, in order."""
    out: list[Extent] = []
    cursor = start
    for piece in normalize(pieces):
        if piece.end <= cursor:
            continue
        if piece.start >= end:
            break
        if piece.start > cursor:
            out.append(Extent(cursor, piece.start - cursor))
        cursor = max(cursor, piece.end)
    if cursor < end:
        out.append(Extent(cursor, end - cursor))
    return out


def plan_fetches(changed: Iterable[Extent], block_size: int, capacity: int, max_read: int,
                 granularity: int | None = None,
                 has_base: Callable[[int], bool] | None = None,
                 skip: bytes | bytearray = b"") -> list[Fetch]:
    """The fetches that bring every block ``changed`` touches up to date, in disk order.

    ``has_base(block)`` says whether the block may be completed from its base (an
    incremental: the parent's chunk or a zero block); None, or ``granularity`` None, fetches
    whole blocks only (a full). ``skip`` marks blocks already done (one byte per block,
    non-zero = done: a resume). Every changed byte below ``capacity`` is in a piece; every
    block a fetch covers is either wholly read or has a base. Fetches span at most
    ``max_read`` bytes, a positive multiple of ``block_size``."""
    if granularity is None or has_base is None or block_size % max(granularity, MIN_PIECE):
        aligned = align(changed, block_size, capacity)
        return [Fetch.whole(e) for e in plan_reads(_drop(aligned, skip, block_size, capacity),
                                                   block_size, max_read)]
    if max_read <= 0 or max_read % block_size:
        raise ValueError(f"max_read {max_read} is not a positive multiple of {block_size}")
    step = max(granularity, MIN_PIECE)
    rounded = align(changed, step, capacity)
    # (first block, block count, pieces): whole runs, and single partly changed blocks.
    items: list[tuple[int, int, list[Extent]]] = []
    for extent in rounded:
        first, end = extent.start // block_size, -(-extent.end // block_size)
        for block in (first, end - 1) if end - first > 1 else (first,):
            bstart, bend = block * block_size, min((block + 1) * block_size, capacity)
            piece = Extent(max(bstart, extent.start), min(bend, extent.end) - max(bstart,
                                                                                   extent.start))
            items.append((block, 1, [piece]))
        if end - first > 2:
            inner = (first + 1) * block_size
            items.append((first + 1, end - first - 2,
                          [Extent(inner, (end - 1) * block_size - inner)]))
    items.sort(key=lambda item: item[0])
    blocks: list[tuple[int, int, list[Extent]]] = []
    for first, count, pieces in items:  # join the pieces of one block, decide whole or not
        if blocks and count == 1 and blocks[-1][1] == 1 and blocks[-1][0] == first:
            blocks[-1][2].extend(pieces)
        else:
            blocks.append((first, count, list(pieces)))
    runs: list[tuple[int, int, list[Extent]]] = []
    for first, count, pieces in blocks:
        bstart = first * block_size
        length = min((first + count) * block_size, capacity) - bstart
        if count == 1 and not _worth_pieces(pieces, length, has_base(first)):
            pieces = [Extent(bstart, length)]
        for run_first, run_count in _kept(first, count, skip):
            start = run_first * block_size
            end = min((run_first + run_count) * block_size, capacity)
            runs.append((run_first, run_count,
                         [p for p in pieces if p.end > start and p.start < end]
                         if count == 1 else [Extent(start, end - start)]))
    return _group(runs, block_size, capacity, max_read)


def _worth_pieces(pieces: list[Extent], length: int, has_base: bool) -> bool:
    covered = total(normalize(pieces))
    return has_base and covered + len(pieces) * PIECE_COST < length + PIECE_COST


def _kept(first: int, count: int, skip: bytes | bytearray) -> list[tuple[int, int]]:
    """The runs of ``[first, first + count)`` that ``skip`` does not mark."""
    out: list[tuple[int, int]] = []
    run: int | None = None
    for block in range(first, first + count):
        done = block < len(skip) and skip[block]
        if done and run is not None:
            out.append((run, block - run))
            run = None
        elif not done and run is None:
            run = block
    if run is not None:
        out.append((run, first + count - run))
    return out


def _drop(aligned: list[Extent], skip: bytes | bytearray, block_size: int,
          capacity: int) -> list[Extent]:
    if not skip:
        return aligned
    out = []
    for extent in aligned:
        first = extent.start // block_size
        for run_first, count in _kept(first, -(-extent.end // block_size) - first, skip):
            start = run_first * block_size
            out.append(Extent(start, min((run_first + count) * block_size, capacity) - start))
    return out


def _group(runs: list[tuple[int, int, list[Extent]]], block_size: int, capacity: int,
           max_read: int) -> list[Fetch]:
    """Consecutive blocks into fetches of at most ``max_read`` bytes of blocks."""
    per_fetch = max_read // block_size
    fetches: list[Fetch] = []
    first = count = 0
    pieces: list[Extent] = []

    def close() -> None:
        if count:
            start = first * block_size
            end = min((first + count) * block_size, capacity)
            fetches.append(Fetch(start, end - start, tuple(normalize(pieces))))

    for run_first, run_count, run_pieces in runs:
        if count and (run_first != first + count or count == per_fetch):
            close()
            first, count, pieces = run_first, 0, []
        if not count:
            first = run_first
        if run_count == 1:
            count += 1
            pieces.extend(run_pieces)
            continue
        # a whole run: as many of its blocks as fit the current fetch, then new ones
        block = run_first
        left = run_count
        while left:
            take = min(left, per_fetch - count)
            start = block * block_size
            pieces.append(Extent(start, min((block + take) * block_size, capacity) - start))
            count += take
            block += take
            left -= take
            if left:
                close()
                first, count, pieces = block, 0, []
    close()
    return fetches


def skip_zero_blocks(reads: Iterable[Fetch], zeros: Iterable[Extent],
                     block_size: int) -> list[Fetch]:
    """A full's whole-block fetches without the blocks that lie entirely inside ``zeros``
    (NBD block status ``STATE_ZERO``: the source promises they read as zeros, so they are
    stored as zero blocks without reading them). Kept blocks are regrouped into whole
    fetches, each inside one of the original fetches; fetches in pieces pass unchanged."""
    zero = normalize(zeros)
    out: list[Fetch] = []
    for fetch in reads:
        if not fetch.is_whole():
            out.append(fetch)
            continue
        run_start = None
        for bstart in range(fetch.start, fetch.end, block_size):
            bend = min(bstart + block_size, fetch.end)
            if not gaps(bstart, bend, zero):          # all of the block reads as zero
                if run_start is not None:
                    out.append(Fetch.whole(Extent(run_start, bstart - run_start)))
                    run_start = None
            elif run_start is None:
                run_start = bstart
        if run_start is not None:
            out.append(Fetch.whole(Extent(run_start, fetch.end - run_start)))
    return out
