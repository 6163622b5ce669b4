"""The CBT canary end to end: a lab whose CBT loses a guest write (``untracked=true``).

With the canary the lost change is caught, the disk is read again whole in the same run, the
committed backup restores exactly the image the lab froze for its snapshot, and the exit
status is 11; without it the incremental silently restores the wrong bytes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from mover_lab import Lab

from .runner import backup, backup_args, mover, mover_snapshots, restore_sha256, snapshot_digests

MiB = 1 << 20
KEY = 2000


def lossy_vm(lab: Lab, name: str) -> str:
    lab.configure(snapshotDigests=True)
    lab.create_vm(name, [{"capacity": 48 * MiB, "type": "thin"}], cbt=True)
    lab.write(name, KEY, 0, random.Random(1).randbytes(40 * MiB))
    return name


def change(lab: Lab, vm: str) -> None:
    """One write CBT records, and one it loses (in a block CBT then calls unchanged)."""
    lab.write(vm, KEY, 3 * MiB + 4096, b"tracked" * 1000)
    lab.write(vm, KEY, 21 * MiB + 65536, b"lost by CBT" * 1000, untracked=True)


def test_the_canary_catches_lossy_cbt_and_the_backup_restores_exact(
        lab: Lab, unique_name: Callable[[str], str], tmp_path: Path) -> None:
    vm, repo = lossy_vm(lab, unique_name("lossy")), tmp_path / "repo"
    backup(lab, vm, repo)
    change(lab, vm)
    # 48 canary blocks cover every block CBT calls unchanged: detection is certain here
    # (the sampler's probability for smaller samples is tested in tests/unit/test_canary.py)
    run = mover(*backup_args(lab, vm, repo, "--canary-blocks", "48"), lab=lab)
    assert run.code == 11, run.stderr
    result = run.result
    assert result["status"] == "committed"
    [disk] = result["disks"]
    assert disk["cbt_suspect"] is True
    assert disk["canary_mismatches"] == [21 * MiB]
    assert disk["canary_blocks"] == 47 and disk["mode"] == "full"
    assert "KB 2090639" in disk["reason"]
    [warning] = result["warnings"]
    assert "KB 2090639" in warning and "KB 2136854" in warning and "--full" in warning
    assert "KB 2136854" in run.stderr
    # the incremental's 64 KiB (copied beside the canary), 47 canary blocks, then the whole
    # 48 MiB disk, without CBT
    assert disk["bytes_read"] == 64 * 1024 + 47 * MiB + 48 * MiB
    frozen = snapshot_digests(lab, vm, result["snapshot"])
    assert restore_sha256(repo, result["backup_id"], KEY, tmp_path / "o.img") == frozen[KEY]
    listed = mover("list", "--repo", repo, "--json").result["backups"]
    record = next(b for b in listed if b["id"] == result["backup_id"])
    assert record["disks"][0]["cbt_suspect"] is True
    assert record["disks"][0]["canary_mismatches"] == [21 * MiB]
    assert mover_snapshots(lab, vm) == []
    # the next incremental builds on the corrected backup; CBT lost nothing since: exit 0
    lab.write(vm, KEY, 30 * MiB, b"later" * 100)
    later = backup(lab, vm, repo)
    assert later["parent"] == result["backup_id"]
    assert later["disks"][0]["mode"] == "incremental"
    assert later["disks"][0]["cbt_suspect"] is False
    frozen = snapshot_digests(lab, vm, later["snapshot"])
    assert restore_sha256(repo, later["backup_id"], KEY, tmp_path / "o.img") == frozen[KEY]


def test_a_healthy_incremental_is_not_flagged(lab: Lab, unique_name: Callable[[str], str],
                                              tmp_path: Path) -> None:
    vm, repo = lossy_vm(lab, unique_name("healthy")), tmp_path / "repo"
    backup(lab, vm, repo)
    lab.write(vm, KEY, 3 * MiB + 4096, b"tracked" * 1000)
    lab.reset_counters()
    result = backup(lab, vm, repo)              # exit 0 (checked by backup())
    [disk] = result["disks"]
    assert disk["mode"] == "incremental" and disk["cbt_suspect"] is False
    assert disk["canary_blocks"] == 32 and disk["canary_bytes"] == 32 * MiB
    assert disk["canary_mismatches"] == [] and disk["canary_seconds"] > 0
    assert disk["bytes_read"] == 32 * MiB + 64 * 1024       # the sample and the change
    assert result["warnings"] == []


def test_without_the_canary_lossy_cbt_goes_unnoticed(lab: Lab,
                                                     unique_name: Callable[[str], str],
                                                     tmp_path: Path) -> None:
    """Why the canary exists: trusting CBT, the same backup commits the wrong bytes."""
    vm, repo = lossy_vm(lab, unique_name("blind")), tmp_path / "repo"
    backup(lab, vm, repo)
    change(lab, vm)
    result = backup(lab, vm, repo, "--no-canary")
    [disk] = result["disks"]
    assert disk["canary_blocks"] == 0 and disk["cbt_suspect"] is False
    frozen = snapshot_digests(lab, vm, result["snapshot"])
    assert restore_sha256(repo, result["backup_id"], KEY, tmp_path / "o.img") != frozen[KEY]


def test_canary_options_in_a_job_file(lab: Lab, unique_name: Callable[[str], str],
                                      tmp_path: Path) -> None:
    vm, repo = lossy_vm(lab, unique_name("job")), tmp_path / "repo"
    backup(lab, vm, repo)
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"type": "backup", "server": lab.url, "user": lab.user,
                               "vm": vm, "repo": str(repo), "canary_blocks": 5}))
    run = mover("job", job, lab=lab)
    assert run.code == 0, run.stderr
    assert run.result["disks"][0]["canary_blocks"] == 5
