"""Which transport reads which disk (mover.jobs.routes), and a full's zero blocks skipped
by NBD block status (mover.fetchplan.skip_zero_blocks)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mover.errors import UnsupportedVMError, UsageError
from mover.extents import Extent, align, plan_reads
from mover.fetchplan import Fetch, skip_zero_blocks
from mover.jobs.routes import choose
from mover.vsphere.disks import DiskInfo

MiB = 1 << 20


def disk(delta: bool = False) -> DiskInfo:
    return DiskInfo(key=2000, label="Hard disk 1", uuid="u", capacity=64 * MiB,
                    file="[ds] vm/vm.vmdk", change_id="", thin=True, eager_zeroed=False,
                    is_delta=delta, independent=False)


@pytest.mark.parametrize(("option", "delta", "unservable", "missing", "kind", "says"), [
    ("auto", False, None, None, "folder", "a flat disk"),
    ("auto", False, None, "no vddk", "folder", "a flat disk"),
    ("auto", True, None, None, "nbd", "delta of an earlier snapshot"),
    ("auto", False, "a vSAN object", None, "nbd", "a vSAN object"),
    ("nbd", False, None, "ignored", "nbd", "--transport nbd"),
    ("folder", False, None, None, "folder", "--transport folder"),
], ids=["auto-flat", "auto-flat-without-nbd", "auto-delta", "auto-vsan", "nbd", "folder"])
def test_the_route_and_its_reason(option: str, delta: bool, unservable: str | None,
                                  missing: str | None, kind: str, says: str) -> None:
    path = None if delta or unservable else "vm/vm-flat.vmdk"
    route = choose(option, disk(delta), path, unservable, missing)
    assert route.kind == kind and says in route.reason
    assert (route.data_path == path) if kind == "folder" else route.data_path is None


@pytest.mark.parametrize(("option", "missing", "says"), [
    ("auto", "nbdkit has no plugin 'vddk'", "NBD is not available (nbdkit has no plugin"),
    ("folder", None, "--transport nbd (VDDK through nbdkit) reads it"),
], ids=["auto-without-nbd", "folder-asked"])
def test_a_delta_is_refused_with_both_reasons(option: str, missing: str | None,
                                              says: str) -> None:
    with pytest.raises(UnsupportedVMError) as info:
        choose(option, disk(delta=True), None, None, missing)
    assert "delta of an earlier snapshot" in str(info.value) and says in str(info.value)
    assert "consolidate" in str(info.value)


BS = MiB
extents = st.lists(st.tuples(st.integers(0, 63), st.integers(1, 8)), max_size=8).map(
    lambda runs: [Extent(a * BS // 2, n * BS // 2) for a, n in runs])


@given(reads=extents, zeros=extents)
def test_only_blocks_wholly_inside_zeros_are_skipped(reads: list[Extent],
                                                     zeros: list[Extent]) -> None:
    capacity = 40 * MiB
    fetches = [Fetch.whole(r) for r in plan_reads(align(
        [e for e in reads if e.start < capacity], BS, capacity), BS, 4 * MiB)]
    kept = skip_zero_blocks(fetches, zeros, BS)

    def blocks(fs: list[Fetch]) -> set[int]:
        return {b for f in fs for b in range(f.start // BS, (f.end + BS - 1) // BS)}

    def is_zero(b: int) -> bool:
        covered = [z for z in zeros if z.start < (b + 1) * BS and z.end > b * BS]
        at = b * BS
        for z in sorted(covered, key=lambda z: z.start):
            if z.start > at:
                return False
            at = max(at, z.end)
        return at >= (b + 1) * BS

    assert blocks(kept) == {b for b in blocks(fetches) if not is_zero(b)}
    assert all(f.is_whole() and f.length <= 4 * MiB for f in kept)
    assert all(any(o.start <= f.start and f.end <= o.end for o in fetches) for f in kept)


@pytest.mark.parametrize(("job", "says"), [
    ({"transport": "ftp"}, "'transport' must be one of"),
    ({"nbdkit_filter": "retry"}, "'nbdkit_filter' must be a list of strings"),
], ids=["unknown-transport", "filter-not-a-list"])
def test_job_files_check_the_nbd_keys(job: dict[str, object], says: str) -> None:
    import json

    from mover.cli.main import job_commands
    from mover.jobfile import load

    body = {"type": "backup", "server": "vc", "user": "u", "vm": "v", "repo": "/r", **job}
    with pytest.raises(UsageError, match=says):
        load(json.dumps(body), "job.json", {"backup": job_commands()["backup"]})


def test_a_job_file_may_name_filters_and_refuses_the_plugins_own_keys() -> None:
    from mover.jobs.settings import NbdSettings

    assert NbdSettings(filters=("retry",), filter_args=("retries=5",)).filters == ("retry",)
    with pytest.raises(UsageError, match="mover's to set"):
        NbdSettings(filter_args=("password=hunter2",))
