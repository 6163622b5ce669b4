"""The paging loop over QueryChangedDiskAreas, against a host simulated in pure Python."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mover.errors import VSphereError
from mover.extents import Extent, normalize
from mover.vsphere.cbt import Reply, collect

GiB = 1 << 30


def paging_host(areas: list[tuple[int, int]], capacity: int, per_reply: int):
    """Answers like ESXi: areas starting at or after the offset, at most ``per_reply``."""
    calls: list[int] = []

    def query(offset: int) -> Reply:
        calls.append(offset)
        ahead = sorted(a for a in areas if a[0] >= offset)
        page = ahead[:per_reply]
        truncated = len(ahead) > per_reply
        end = page[-1][0] + page[-1][1] if truncated else capacity
        return Reply(offset, end - offset, page)

    return query, calls


@st.composite
def disks(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]]]:
    capacity = draw(st.integers(1, 64)) * 65536
    starts = draw(st.sets(st.integers(0, capacity // 65536 - 1), max_size=40))
    return capacity, [(s * 65536, 65536) for s in sorted(starts)]


@given(disks(), st.integers(1, 7))
def test_paging_returns_every_area_whatever_the_page_size(disk, per_reply) -> None:
    capacity, areas = disk
    query, calls = paging_host(areas, capacity, per_reply)
    found = collect(query, capacity, "test")
    assert found == normalize(Extent(s, n) for s, n in areas)
    # one call per page: a reply that is not truncated reaches the capacity
    assert len(calls) == max(1, -(-len(areas) // per_reply))
    assert calls == sorted(set(calls))


def test_a_single_call_would_have_missed_areas() -> None:
    """The Bareos bug: one call returns only the first page."""
    areas = [(i * 2 * 65536, 65536) for i in range(10)]
    query, calls = paging_host(areas, 20 * 65536, 3)
    assert len(query(0).areas) == 3
    calls.clear()
    assert len(collect(query, 20 * 65536, "test")) == 10
    assert calls == [0, 5 * 65536, 11 * 65536, 17 * 65536]


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        pytest.param(Reply(4096, GiB, []), "answered from 4096", id="wrong-start-offset"),
        pytest.param(Reply(0, 0, []), "empty window", id="empty-window"),
        pytest.param(Reply(0, 2 * GiB, []), "past the capacity", id="window-past-capacity"),
        pytest.param(Reply(0, 65536, [(65536, 4096)]), "outside the reply window",
                     id="area-outside-window"),
    ],
)
def test_a_reply_that_breaks_the_contract_is_refused(reply: Reply, message: str) -> None:
    with pytest.raises(VSphereError, match=message):
        collect(lambda offset: reply, GiB, "disk 2000")


def test_offset_plus_start_plus_length_loop_is_not_what_we_do() -> None:
    """migratekit's bug was ``offset += start + length``; we move to start + length."""
    seen: list[int] = []

    def query(offset: int) -> Reply:
        seen.append(offset)
        return Reply(offset, min(65536, GiB - offset), [])

    collect(query, 4 * 65536, "t")
    assert seen == [0, 65536, 131072, 196608]
