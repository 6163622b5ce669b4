"""The CBT canary's sampler: deterministic per backup, different across backups, only
blocks CBT calls unchanged, and a detection rate that matches its formula."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from mover.canary import (
    DEFAULT_BLOCKS,
    blocks_needed,
    detection_probability,
    sample,
    seed,
    unchanged_runs,
)
from mover.extents import Extent

B = 1 << 20


@st.composite
def disks(draw: st.DrawFn) -> tuple[int, list[Extent]]:
    count = draw(st.integers(0, 300))
    changed = [Extent(s * B + draw(st.integers(0, B - 1)), draw(st.integers(1, 5 * B)))
               for s in draw(st.lists(st.integers(0, max(count - 1, 0)), max_size=10))]
    return count, changed


@given(disks(), st.integers(0, 80), st.text(max_size=30), st.integers(2000, 2010))
def test_sample_is_a_deterministic_subset_of_the_unchanged_blocks(
        disk: tuple[int, list[Extent]], n: int, backup: str, key: int) -> None:
    count, changed = disk
    runs = unchanged_runs(changed, B, count)
    touched = {b for e in changed for b in range(e.start // B, -(-e.end // B))}
    unchanged = [b for b in range(count) if b not in touched]
    assert [b for f, c in runs for b in range(f, f + c)] == unchanged
    got = sample(seed(backup, key), runs, n)
    assert got == sorted(set(got))
    assert set(got) <= set(unchanged)
    assert len(got) == min(n, len(unchanged))
    assert sample(seed(backup, key), runs, n) == got


def test_each_backup_samples_other_blocks() -> None:
    runs = unchanged_runs([], B, 10_000)
    samples = [frozenset(sample(seed(f"backup-{i}", 2000), runs, 32)) for i in range(50)]
    assert len(set(samples)) == 50
    overlap = sum(len(a & b) for a in samples for b in samples if a is not b)
    # two random 32-subsets of 10,000 blocks share 0.1 blocks on average
    assert overlap / (50 * 49) < 0.5


def test_every_block_is_as_likely() -> None:
    runs = unchanged_runs([Extent(10 * B, 20 * B)], B, 60)     # 40 candidate blocks
    hits = [0] * 60
    rounds = 4000
    for i in range(rounds):
        for b in sample(seed(str(i), 1), runs, 10):
            hits[b] += 1
    expected = rounds * 10 / 40
    sigma = math.sqrt(expected * (1 - 10 / 40))
    assert all(hits[b] == 0 for b in range(10, 30))
    assert all(abs(hits[b] - expected) < 5 * sigma for b in [*range(10), *range(30, 60)])


def test_detection_rate_matches_the_formula() -> None:
    """A lossy CBT missed the changes of ``lost`` of the blocks it calls unchanged: over many
    backups (seeds), the share of samples that contain one of them is P(detect)."""
    count, changed = 240, [Extent(100 * B, 40 * B)]
    runs = unchanged_runs(changed, B, count)
    unchanged = [b for f, c in runs for b in range(f, f + c)]
    for lost_count, n in ((10, 16), (2, 32), (40, 4)):
        lost = set(unchanged[7::len(unchanged) // lost_count][:lost_count])
        p = detection_probability(len(unchanged), len(lost), n)
        rounds = 3000
        found = sum(bool(lost & set(sample(seed(f"b{i}", 2000), runs, n)))
                    for i in range(rounds))
        sigma = math.sqrt(p * (1 - p) / rounds)
        assert abs(found / rounds - p) < 4.5 * sigma, (lost_count, n, found / rounds, p)


def test_formula_values_and_the_default() -> None:
    assert detection_probability(100, 0, 10) == 0.0
    assert detection_probability(100, 1, 100) == 1.0
    assert detection_probability(100, 95, 10) == 1.0      # 5 clean blocks cannot hold 10
    assert math.isclose(detection_probability(100, 1, 1), 0.01)
    # for a large disk the exact formula approaches 1 - (1 - f) ** n
    exact = detection_probability(1_000_000, 50_000, DEFAULT_BLOCKS)
    assert math.isclose(exact, 1 - 0.95 ** DEFAULT_BLOCKS, rel_tol=1e-4)
    # the documented numbers of the default: 10% lost -> 0.966, 5% -> 0.806
    assert round(1 - 0.9 ** DEFAULT_BLOCKS, 3) == 0.966
    assert round(1 - 0.95 ** DEFAULT_BLOCKS, 3) == 0.806
    assert blocks_needed(0.95, 0.1) == 29 and blocks_needed(0.9, 0.05) == 45
