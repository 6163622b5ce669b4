"""Where VMs live in a real inventory, and mover finding and backing up each one: the
default inventory's VMs (a standalone host's and a cluster's resource pool)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mover_lab import Lab

from .runner import backup, mover_snapshots, restore_sha256, snapshot_digests

KiB = 1 << 10


@pytest.mark.parametrize("name", ["DC0_H0_VM1", "DC0_C0_RP0_VM1"])
def test_a_default_inventory_vm_backs_up_like_a_lab_vm(lab: Lab, tmp_path: Path,
                                                       name: str) -> None:
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
