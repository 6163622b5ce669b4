"""The CBT canary's sample: which blocks an incremental re-reads although CBT calls them
unchanged, and how likely that sample is to catch a CBT that lost changes.

Pure functions. CBT has had silent bugs (VMware KB 2090639, KB 2136854; since ESXi 6.5 a
corrupt CBT no longer faults), so every incremental reads ``n`` blocks that CBT says did not
change and compares their digests with the parent's index. A mismatch proves CBT lost a
change; the job then reads the disk again as a full (``mover.jobs.canary``).

The sample is a uniformly random ``n``-subset of the unchanged blocks, drawn by a keyed hash
(BLAKE2b of the seed, which names the backup and the disk, and a draw counter): the same
backup always samples the same blocks (a resume checks exactly what the interrupted run
checked), and every new backup samples others.

Detection. If CBT missed changes in ``m`` of the ``U`` blocks it calls unchanged, a sample of
``n`` of them finds at least one with probability

    P(detect) = 1 - C(U - m, n) / C(U, n)  ~=  1 - (1 - m/U) ** n.

The default ``n = 32`` (1 MiB blocks: 32 MiB read per disk per incremental) detects a CBT that
lost 10% of the unchanged blocks' changes with P = 0.966 in one run, 5% with 0.806, 1% with
0.275. Lost changes stay wrong in every later synthetic full until the block is written again,
so each night's new sample is another chance: a persistent 1% loss is caught within a week
(7 runs, 224 blocks) with P = 0.895. ``docs/performance.md`` has the measured cost.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_right
from collections.abc import Iterable

from mover.extents import Extent

DEFAULT_BLOCKS = 32


def seed(backup_id: str, disk_key: int) -> bytes:
    """The sampler's seed for one disk of one backup."""
    return f"mover-canary/{backup_id}/{disk_key}".encode()


def unchanged_runs(changed: Iterable[Extent], block_size: int,
                   block_count: int) -> list[tuple[int, int]]:
    """Runs ``(first block, count)`` of the blocks no extent of ``changed`` touches."""
    runs: list[tuple[int, int]] = []
    cursor = 0
    touched = sorted((e.start // block_size, -(-e.end // block_size)) for e in changed)
    for first, end in touched:
        first, end = min(first, block_count), min(end, block_count)
        if first > cursor:
            runs.append((cursor, first - cursor))
        cursor = max(cursor, end)
    if cursor < block_count:
        runs.append((cursor, block_count - cursor))
    return runs


def sample(key: bytes, runs: list[tuple[int, int]], n: int) -> list[int]:
    """``n`` distinct blocks of ``runs``, uniformly at random given ``key``, sorted; every
    block when the runs hold ``n`` or fewer. Deterministic: the same arguments give the same
    blocks."""
    population = sum(count for _, count in runs)
    if n <= 0 or population == 0:
        return []
    if population <= n:
        return [b for first, count in runs for b in range(first, first + count)]
    starts: list[int] = []
    acc = 0
    for _, count in runs:
        starts.append(acc)
        acc += count
    picked: set[int] = set()
    draw = 0
    # Rejecting repeats of uniform draws yields a uniform n-subset. At most half the
    # population is ever picked here, so the expected number of draws stays below 2n.
    want = n if 2 * n <= population else population - n
    while len(picked) < want:
        j = _draw(key, draw) % population
        draw += 1
        run = bisect_right(starts, j) - 1
        picked.add(runs[run][0] + j - starts[run])
    if want == n:
        return sorted(picked)
    # n above half the population: drawing the blocks to leave out is cheaper.
    return [b for first, count in runs for b in range(first, first + count) if b not in picked]


def _draw(key: bytes, i: int) -> int:
    digest = hashlib.blake2b(i.to_bytes(8, "little"), digest_size=8, key=key[:64]).digest()
    return int.from_bytes(digest, "little")


def detection_probability(unchanged: int, lost: int, n: int) -> float:
    """P(a sample of ``n`` of ``unchanged`` blocks contains one of the ``lost`` ones)."""
    if not 0 <= lost <= unchanged:
        raise ValueError(f"lost={lost} must be within 0..unchanged={unchanged}")
    n = min(max(n, 0), unchanged)
    if unchanged - lost < n:
        return 1.0
    return 1.0 - math.comb(unchanged - lost, n) / math.comb(unchanged, n)


def blocks_needed(probability: float, lost_fraction: float) -> int:
    """The smallest ``n`` with ``1 - (1 - f) ** n >= probability`` (large disks)."""
    if not 0 < probability < 1 or not 0 < lost_fraction < 1:
        raise ValueError("probability and lost_fraction must be within (0, 1)")
    return math.ceil(math.log(1 - probability) / math.log(1 - lost_fraction))
