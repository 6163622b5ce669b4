"""Point-in-time snapshot images on layered disks, as ESXi lays them out."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from mover_lab import Lab

from .conftest import (
    GiB,
    LabVM,
    MiB,
    disks_of,
    folder_get,
    remove_snapshot,
    session_cookie,
    snapshot,
)

CAP = 64 * MiB


def test_snapshot_layers_and_backing_chain(
    lab: Lab, make_vm: Callable[..., LabVM], si: object
) -> None:
    v = make_vm(disks=[{"capacity": CAP}, {"capacity": CAP}])
    n = v.name
    s1 = snapshot(v.ref, "s1")
    s2 = snapshot(v.ref, "s2")
    live = disks_of(v.ref)
    assert live[2000].backing.fileName == f"[LocalDS_0] {n}/{n}-000002.vmdk"
    assert live[2000].backing.parent.fileName == f"[LocalDS_0] {n}/{n}-000001.vmdk"
    assert live[2000].backing.parent.parent.fileName == f"[LocalDS_0] {n}/{n}.vmdk"
    assert live[2001].backing.parent.parent.fileName == f"[LocalDS_0] {n}/{n}_1.vmdk"
    assert disks_of(s1)[2000].backing.fileName == f"[LocalDS_0] {n}/{n}.vmdk"
    assert disks_of(s1)[2000].backing.parent is None
    assert disks_of(s2)[2000].backing.fileName == f"[LocalDS_0] {n}/{n}-000001.vmdk"
    assert [s["name"] for s in lab.snapshots(n)] == ["s1", "s2"]

    # Removing s1 merges the first delta into the base: s2 and the VM are repointed.
    task = remove_snapshot(s1)
    assert task.info.state == "success"
    assert task.info.entity == v.ref  # vcsim would report the snapshot; pyvmomi reads it fine
    assert disks_of(s2)[2000].backing.fileName == f"[LocalDS_0] {n}/{n}.vmdk"
    assert disks_of(v.ref)[2000].backing.parent.fileName == f"[LocalDS_0] {n}/{n}.vmdk"
    ds_dir = lab_vm_dir(lab, n)
    assert not (ds_dir / f"{n}-000001-delta.vmdk").exists()
    remove_snapshot(s2)
    assert disks_of(v.ref)[2000].backing.fileName == f"[LocalDS_0] {n}/{n}.vmdk"
    assert disks_of(v.ref)[2000].backing.parent is None
    assert lab.snapshots(n) == []


def lab_vm_dir(lab: Lab, name: str) -> Path:
    (ds,) = (lab.dir / "datastores").glob("*-LocalDS_0-*")   # vcsim's directory for it
    return ds / name


def test_snapshot_image_stays_frozen_while_guest_writes(
    lab: Lab, make_vm: Callable[..., LabVM], si: object
) -> None:
    v = make_vm()
    n = v.name
    before = os.urandom(256 * 1024)
    lab.write(n, 2000, MiB, before)
    snap = snapshot(v.ref)
    lab.write(n, 2000, MiB + 1000, b"\xff" * 100_000)  # guest keeps writing
    lab.write(n, 2000, 10 * MiB, b"\xee" * 5000)
    cookie = session_cookie(si)
    r = folder_get(lab, f"{n}/{n}-flat.vmdk", cookie, (MiB, MiB + len(before) - 1))
    assert r.status == 206 and r.body == before
    assert disks_of(snap)[2000].backing.fileName.endswith(f"{n}/{n}.vmdk")
    # The live view has the new data; the snapshot view does not.
    assert lab.read_live(n, 2000, MiB + 1000, 10) == b"\xff" * 10
    live_old = lab.read_live(n, 2000, MiB, 1000)
    assert live_old == before[:1000]
    # Consolidation keeps the live view intact.
    sha = lab.live_sha256(n, 2000)
    remove_snapshot(snap)
    assert lab.live_sha256(n, 2000) == sha
    r = folder_get(lab, f"{n}/{n}-flat.vmdk", cookie, (MiB + 1000, MiB + 1009))
    assert r.body == b"\xff" * 10


def test_snapshot_history_digests(lab: Lab, make_vm: Callable[..., LabVM]) -> None:
    lab.configure(snapshotDigests=True)
    v = make_vm()
    data = os.urandom(100_000)
    lab.write(v.name, 2000, 12345, data)
    expect = bytearray(CAP)
    expect[12345 : 12345 + len(data)] = data
    s = snapshot(v.ref, "h1")
    lab.write(v.name, 2000, 0, b"later")
    remove_snapshot(s)
    lab.configure(snapshotDigests=False)
    snapshot(v.ref, "h2")
    hist = lab.snapshot_history(v.name)
    assert [(h["name"], h["removed"]) for h in hist] == [("h1", True), ("h2", False)]
    assert hist[0]["disks"][0]["sha256"] == hashlib.sha256(expect).hexdigest()
    assert hist[1]["disks"][0]["sha256"] is None
    assert lab.live_sha256(v.name, 2000) != hist[0]["disks"][0]["sha256"]


def test_load_sparse_file(lab: Lab, make_vm: Callable[..., LabVM], tmp_path: Path) -> None:
    v = make_vm()
    img = tmp_path / "img"
    with img.open("wb") as f:
        f.truncate(8 * MiB)
        f.seek(3 * MiB)
        f.write(b"q" * 70_000)
    assert lab.load(v.name, 2000, img, offset=MiB) <= 1 * MiB
    assert lab.read_live(v.name, 2000, 4 * MiB, 4) == b"qqqq"
    expect = bytearray(CAP)
    expect[4 * MiB : 4 * MiB + 70_000] = b"q" * 70_000
    assert lab.live_sha256(v.name, 2000) == hashlib.sha256(expect).hexdigest()


def test_write_past_capacity_is_rejected(lab: Lab, make_vm: Callable[..., LabVM]) -> None:
    from mover_lab import LabError

    v = make_vm()
    with pytest.raises(LabError) as e:
        lab.write(v.name, 2000, CAP - 2, b"abc")
    assert e.value.status == 400


@pytest.mark.slow
def test_big_thin_disk_three_snapshots_stays_small(lab: Lab, make_vm: Callable[..., LabVM]) -> None:
    v = make_vm(disks=[{"capacity": 64 * GiB, "type": "thin"}])
    rng = random.Random(1)
    chunk = os.urandom(4 * MiB)
    offsets = rng.sample(range(0, 64 * GiB // (4 * MiB)), 256)  # 256 x 4 MiB = 1 GiB
    for i in offsets:
        lab.write(v.name, 2000, i * 4 * MiB, chunk)
    snaps = [snapshot(v.ref, f"s{i}") for i in range(3)]
    lab.write(v.name, 2000, 0, b"after")
    used = sum(p.stat().st_blocks * 512 for p in lab_vm_dir(lab, v.name).iterdir())
    assert used < 1.1 * GiB, used
    for s in snaps:
        remove_snapshot(s)
