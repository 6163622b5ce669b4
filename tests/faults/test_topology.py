"""Where VMs live in a real inventory, and mover finding and backing up each one: the
default inventory's VMs (a standalone host's and a cluster's resource pool), a VM in a vApp,
a datacenter inside folders, names with spaces, ``+``, ``%``, ``]`` and non-ASCII, a disk on
another datastore than the VM's files."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e.runner import backup, mover_snapshots, restore_sha256, snapshot_digests

from mover_lab import Lab

KiB = 1 << 10
Matrix = Callable[[str, str], None]


@pytest.mark.parametrize("name", ["DC0_H0_VM1", "DC0_C0_RP0_VM1"])
def test_a_default_inventory_vm_backs_up_like_a_lab_vm(lab: Lab, tmp_path: Path, name: str,
                                                       matrix: Matrix) -> None:
    lab.configure(snapshotDigests=True)
    [disk] = lab.vm(name)["disks"]
    key = disk["key"]
    lab.write(name, key, 64 * KiB, random.Random(name).randbytes(300 * KiB))
    repo = tmp_path / "repo"
    full = backup(lab, name, repo)            # mover enables CBT (a stun cycle) and backs up
    assert [d["mode"] for d in full["disks"]] == ["full"]
    frozen = snapshot_digests(lab, name, full["snapshot"])
    assert restore_sha256(repo, full["backup_id"], key, tmp_path / "f.img") == frozen[key]
    lab.write(name, key, 896 * KiB, b"\x5a" * (64 * KiB))
    incremental = backup(lab, name, repo)
    [d] = incremental["disks"]
    assert d["mode"] == "incremental"
    assert d["bytes_read"] == 64 * KiB
    frozen = snapshot_digests(lab, name, incremental["snapshot"])
    assert restore_sha256(repo, incremental["backup_id"], key, tmp_path / "i.img") == frozen[key]
    assert mover_snapshots(lab, name) == []
    matrix(f"default inventory VM {name}", "mover enables CBT, full and incremental, "
           "restores identical")


MiB = 1 << 20
NESTED_DC = "DC 1+ü"          # in folders Europe/Zürich 100%25 (docs/lab.md, "Topology")


@pytest.mark.parametrize(
    ("typed", "placement", "disks"),
    [
        # a VM in a vApp has no parent folder, only parentVApp
        pytest.param("in vapp", {"vapp": True}, [{"capacity": 4 * MiB}], id="vm-in-vapp"),
        # a datacenter inside two folders, names with space, +, %, ], non-ASCII, a second
        # disk on another datastore than the VM's files
        pytest.param("wéb 01+100%] x", {"datacenter": NESTED_DC},
                     [{"capacity": 4 * MiB}, {"capacity": 2 * MiB, "datastore": "LocalDS_1"}],
                     id="nested-datacenter-awkward-names-two-datastores"),
    ],
)
def test_mover_finds_and_backs_up_a_vm_wherever_it_lives(
        lab: Lab, tmp_path: Path, typed: str, placement: dict[str, object],
        disks: list[dict[str, object]], request: pytest.FixtureRequest,
        matrix: Matrix) -> None:
    lab.configure(snapshotDigests=True)
    # vSphere stores "%" as %25 (and "/" as %2f): the lab's name is the API's; the user
    # types the name as shown in the vSphere Client
    name = f"{typed.replace('%', '%25')} {request.node.callspec.id[:6]}"
    lab.create_vm(name, disks, cbt=True, **placement)
    request.addfinalizer(lambda: lab.delete_vm(name))
    rng = random.Random(name)
    for i, _ in enumerate(disks):
        lab.write(name, 2000 + i, MiB, rng.randbytes(MiB))
    repo = tmp_path / "repo"
    user_name = name.replace("%25", "%")
    result = backup(lab, user_name, repo)
    frozen = snapshot_digests(lab, name, result["snapshot"])
    assert sorted(d["key"] for d in result["disks"]) == [2000 + i for i in range(len(disks))]
    for d in result["disks"]:
        assert d["bytes_read"] == MiB
        assert restore_sha256(repo, result["backup_id"], d["key"],
                              tmp_path / "o.img") == frozen[d["key"]]
    assert mover_snapshots(lab, name) == []
    matrix(f"topology: {request.node.callspec.id}", "found by the name as typed, every disk "
           "restores identical")
