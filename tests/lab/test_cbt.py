"""CBT as ESXi documents it: activation, change IDs, QueryChangedDiskAreas and its faults."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from mover_lab import Lab

from .conftest import LabVM, MiB, disks_of, query_all, remove_snapshot, rounded, snapshot

CHANGE_ID = re.compile(r"^([0-9a-f]{2} ){7}[0-9a-f]{2}-([0-9a-f]{2} ){7}[0-9a-f]{2}/\d+$")
CAP = 64 * MiB


def enable_cbt(vm: Any) -> None:
    WaitForTask(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(changeTrackingEnabled=True)))


def test_cbt_pending_until_stun_cycle(lab: Lab, make_vm: Callable[..., LabVM]) -> None:
    v = make_vm()
    enable_cbt(v.ref)
    assert v.ref.config.changeTrackingEnabled is True
    assert lab.vm(v.name)["cbt"] == {"enabled": True, "active": False}
    assert not disks_of(v.ref)[2000].backing.changeId
    # A snapshot taken now is the stun that activates tracking, but this query comes first.
    with pytest.raises(vim.fault.FileFault):
        v.ref.QueryChangedDiskAreas(snapshot=None, deviceKey=2000, startOffset=0, changeId="*")
    snap = snapshot(v.ref)
    assert lab.vm(v.name)["cbt"]["active"] is True
    cid = disks_of(snap)[2000].backing.changeId
    assert CHANGE_ID.match(cid)
    r = v.ref.QueryChangedDiskAreas(snapshot=snap, deviceKey=2000, startOffset=0, changeId="*")
    assert r.startOffset == 0 and r.length == CAP


def test_powered_off_vm_activates_at_once(lab: Lab, make_vm: Callable[..., LabVM]) -> None:
    v = make_vm(power_on=False)
    enable_cbt(v.ref)
    assert lab.vm(v.name)["cbt"] == {"enabled": True, "active": True}
    assert CHANGE_ID.match(disks_of(v.ref)[2000].backing.changeId)


def test_disabling_clears_tracking(lab: Lab, make_vm: Callable[..., LabVM]) -> None:
    v = make_vm(power_on=False, cbt=True)
    WaitForTask(v.ref.ReconfigVM_Task(spec=vim.vm.ConfigSpec(changeTrackingEnabled=False)))
    assert lab.vm(v.name)["cbt"] == {"enabled": False, "active": False}
    assert not disks_of(v.ref)[2000].backing.changeId


def test_power_cycle_activates(lab: Lab, make_vm: Callable[..., LabVM]) -> None:
    v = make_vm()
    enable_cbt(v.ref)
    WaitForTask(v.ref.PowerOffVM_Task())
    WaitForTask(v.ref.PowerOnVM_Task())
    assert lab.vm(v.name)["cbt"]["active"] is True


def test_change_ids_form_and_growth(lab: Lab, make_vm: Callable[..., LabVM]) -> None:
    v = make_vm(cbt=True, disks=[{"capacity": CAP}, {"capacity": CAP}])
    snaps = [snapshot(v.ref, f"s{i}") for i in range(3)]
    for key in (2000, 2001):
        ids = [disks_of(s)[key].backing.changeId for s in snaps]
        assert all(CHANGE_ID.match(i) for i in ids)
        assert len({i.split("/")[0] for i in ids}) == 1
        seqs = [int(i.split("/")[1]) for i in ids]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3
        live = disks_of(v.ref)[key].backing.changeId
        assert int(live.split("/")[1]) >= seqs[-1]
        uuid = disks_of(v.ref)[key].backing.uuid
        assert CHANGE_ID.match(uuid + "/0")
        assert all(disks_of(s)[key].backing.uuid == uuid for s in snaps)
    assert disks_of(v.ref)[2000].backing.uuid != disks_of(v.ref)[2001].backing.uuid
    d = disks_of(v.ref)[2000]
    assert d.capacityInBytes == CAP and d.capacityInKB == CAP // 1024
    assert d.backing.thinProvisioned is True and d.backing.eagerlyScrub is False


@pytest.mark.parametrize("granularity", [65536, 4096], ids=["gran-64k", "gran-4k"])
def test_changed_areas_match_writes(
    lab: Lab, make_vm: Callable[..., LabVM], granularity: int
) -> None:
    lab.configure(granularity=granularity)
    v = make_vm(cbt=True)
    lab.write(v.name, 2000, 0, b"a" * 4096)
    s1 = snapshot(v.ref, "base")
    rng = random.Random(7)
    writes = []
    for _ in range(40):
        off = rng.randrange(0, CAP - 300_000)
        n = rng.randrange(1, 200_000)
        lab.write(v.name, 2000, off, rng.randbytes(n))
        writes.append((off, n))
    s2 = snapshot(v.ref, "incr")
    cid1 = disks_of(s1)[2000].backing.changeId
    got = query_all(v.ref, s2, 2000, cid1, CAP)
    assert got == rounded(writes, granularity)
    # The base snapshot's "*" shows only what was written before it.
    assert query_all(v.ref, s1, 2000, "*", CAP) == rounded([(0, 4096)], granularity)


def test_paging_small_replies_cover_disk(lab: Lab, make_vm: Callable[..., LabVM]) -> None:
    lab.configure(maxAreasPerReply=3)
    v = make_vm(cbt=True)
    writes = [(i * 1 * MiB, 100) for i in range(10)]
    for off, n in writes:
        lab.write(v.name, 2000, off, b"x" * n)
    s = snapshot(v.ref)
    offset, replies, areas = 0, 0, []
    while offset < CAP:
        r = v.ref.QueryChangedDiskAreas(
            snapshot=s, deviceKey=2000, startOffset=offset, changeId="*"
        )
        assert r.startOffset == offset and len(r.changedArea) <= 3
        if len(r.changedArea) == 3:
            last = r.changedArea[-1]
            assert r.startOffset + r.length == last.start + last.length
        areas += [(a.start, a.length) for a in r.changedArea]
        offset = r.startOffset + r.length
        replies += 1
    assert offset == CAP and replies == 4
    assert areas == rounded(writes, 65536)


@pytest.mark.parametrize(
    "kind,expect_whole", [("thin", False), ("eagerZeroedThick", True)], ids=["thin", "eager"]
)
def test_star_query(lab: Lab, make_vm: Callable[..., LabVM], kind: str, expect_whole: bool) -> None:
    v = make_vm(cbt=True, disks=[{"capacity": CAP, "type": kind}])
    lab.write(v.name, 2000, 5 * MiB, b"z" * 10)
    s = snapshot(v.ref)
    areas = query_all(v.ref, s, 2000, "*", CAP)
    assert areas == ([(0, CAP)] if expect_whole else [(5 * MiB, 65536)])
    assert disks_of(s)[2000].backing.eagerlyScrub is expect_whole


def test_start_offset_at_capacity_is_invalid(lab: Lab, make_vm: Callable[..., LabVM]) -> None:
    v = make_vm(cbt=True)
    s = snapshot(v.ref)
    with pytest.raises(vmodl.fault.InvalidArgument):
        v.ref.QueryChangedDiskAreas(snapshot=s, deviceKey=2000, startOffset=CAP, changeId="*")


@pytest.mark.parametrize(
    "change_id",
    ["52 de c0 d9 3e 4d 58 a8-62 9a 1c 61 7e 2b 83 58/3", "garbage", ""],
    ids=["other-epoch", "malformed", "empty"],
)
def test_bad_change_id_is_file_fault(
    lab: Lab, make_vm: Callable[..., LabVM], change_id: str
) -> None:
    v = make_vm(cbt=True)
    s = snapshot(v.ref)
    with pytest.raises(vim.fault.FileFault):
        v.ref.QueryChangedDiskAreas(snapshot=s, deviceKey=2000, startOffset=0, changeId=change_id)


def test_cbt_reset_invalidates_old_change_ids(lab: Lab, make_vm: Callable[..., LabVM]) -> None:
    v = make_vm(cbt=True)
    s1 = snapshot(v.ref, "a")
    old = disks_of(s1)[2000].backing.changeId
    remove_snapshot(s1)
    lab.reset_cbt(v.name, 2000)
    s2 = snapshot(v.ref, "b")
    new = disks_of(s2)[2000].backing.changeId
    assert new.split("/")[0] != old.split("/")[0]
    with pytest.raises(vim.fault.FileFault):
        v.ref.QueryChangedDiskAreas(snapshot=s2, deviceKey=2000, startOffset=0, changeId=old)
    assert query_all(v.ref, s2, 2000, new, CAP) == []


def test_resize_grows_and_resets_epoch(lab: Lab, make_vm: Callable[..., LabVM]) -> None:
    v = make_vm(cbt=True)
    s1 = snapshot(v.ref, "a")
    old = disks_of(s1)[2000].backing.changeId
    remove_snapshot(s1)
    lab.resize(v.name, 2000, 2 * CAP)
    s2 = snapshot(v.ref, "b")
    assert disks_of(s2)[2000].capacityInBytes == 2 * CAP
    with pytest.raises(vim.fault.FileFault):
        v.ref.QueryChangedDiskAreas(snapshot=s2, deviceKey=2000, startOffset=0, changeId=old)


def test_untracked_writes_are_lossy_cbt(lab: Lab, make_vm: Callable[..., LabVM]) -> None:
    """The lossy-CBT fault: the bytes land on the disk and in "*", not in the change query."""
    v = make_vm(cbt=True)
    s1 = snapshot(v.ref, "base")
    lab.write(v.name, 2000, 2 * MiB, b"seen" * 1024)
    lab.write(v.name, 2000, 9 * MiB, b"lost" * 1024, untracked=True)
    s2 = snapshot(v.ref, "incr")
    cid1 = disks_of(s1)[2000].backing.changeId
    assert query_all(v.ref, s2, 2000, cid1, CAP) == [(2 * MiB, 64 * 1024)]
    assert query_all(v.ref, s2, 2000, "*", CAP) == [(2 * MiB, 64 * 1024),
                                                    (9 * MiB, 64 * 1024)]
    assert lab.read_live(v.name, 2000, 9 * MiB, 4) == b"lost"
