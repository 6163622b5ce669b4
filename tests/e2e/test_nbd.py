"""Backups through NBD end to end: mover starts nbdkit per disk with the vddk plugin's
parameters, the stand-in (scripts/vddk-standin) serves the snapshot's disk from the lab, and
every restore is compared (SHA-256) with the image the lab froze for the snapshot."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

from pyVim.connect import SmartConnect

from mover.extents import align, total
from mover_lab import Lab

from .nbdlab import nbd_backup_args, nbdkit_processes
from .runner import mover, restore_sha256, snapshot_digests
from .test_backup import disk_result, folder_bytes, scattered_writes

MiB = 1 << 20
THIN, EAGER = 2000, 2001


def nbd_backup(lab: Lab, vm: str, repo: Path, *extra: str) -> dict:
    run = mover(*nbd_backup_args(lab, vm, repo, "--transport", "nbd", *extra), lab=lab)
    assert run.code == 0, f"mover backup failed ({run.code}):\n{run.stdout}\n{run.stderr}"
    assert run.result["status"] == "committed"
    return run.result


def test_nbd_full_then_three_incrementals_restore_bit_exact(
        nbd_lab: Lab, unique_name: Callable[[str], str], tmp_path: Path) -> None:
    lab, vm, repo, rng = nbd_lab, unique_name("nbd"), tmp_path / "repo", random.Random(11)
    lab.create_vm(vm, [{"capacity": 128 * MiB, "type": "thin"},
                       {"capacity": 16 * MiB, "type": "eagerZeroedThick"}])
    moref = lab.vm(vm)["moref"]
    allocated = scattered_writes(lab, vm, THIN, 128 * MiB, 10, rng)

    eager_written = scattered_writes(lab, vm, EAGER, 16 * MiB, 3, rng)

    lab.reset_counters()
    full = nbd_backup(lab, vm, repo)
    thin = disk_result(full, THIN)
    assert (thin["mode"], thin["transport"]) == ("full", "nbd")
    # Only the allocated areas were read, through nbdkit: what the stand-in fetched from
    # the flat file is what mover counted.
    assert thin["bytes_read"] == total(align(allocated, MiB, 128 * MiB))
    assert folder_bytes(lab, vm, THIN) <= thin["bytes_read"]
    # CBT's "*" calls the eager-zeroed disk allocated whole; NBD block status says which
    # blocks read as zeros, and those are not read.
    eager = disk_result(full, EAGER)
    assert eager["changed_bytes"] == 16 * MiB
    assert eager["bytes_read"] == total(align(eager_written, MiB, 16 * MiB))
    assert eager["zero_skipped_bytes"] == 16 * MiB - eager["bytes_read"] > 0
    backups = [full]
    for round_ in range(3):
        scattered_writes(lab, vm, THIN, 128 * MiB, 3 + round_, rng)
        scattered_writes(lab, vm, EAGER, 16 * MiB, 1, rng)
        incr = nbd_backup(lab, vm, repo)
        disk = disk_result(incr, THIN)
        assert (disk["mode"], disk["transport"]) == ("incremental", "nbd")
        assert disk["bytes_read"] - disk["canary_bytes"] < 16 * MiB
        backups.append(incr)
    for result in backups:
        frozen = snapshot_digests(lab, vm, result["snapshot"])
        for key in (THIN, EAGER):
            assert restore_sha256(repo, result["backup_id"], key,
                                  tmp_path / "out.img") == frozen[key]
    assert nbdkit_processes(moref) == []
    assert lab.snapshots(vm) == []


def test_a_missing_plugin_names_what_to_install(
        nbd_lab: Lab, unique_name: Callable[[str], str], tmp_path: Path) -> None:
    lab, vm = nbd_lab, unique_name("nbd")
    lab.create_vm(vm, [{"capacity": 8 * MiB}])
    args = nbd_backup_args(lab, vm, tmp_path / "repo", "--transport", "nbd")
    args[args.index("--nbdkit-plugin") + 1] = "vddk"       # not in Debian's nbdkit
    run = mover(*args, lab=lab)
    assert run.code == 8, run.stderr
    assert "nbdkit has no plugin 'vddk'" in run.result["error"]["message"]
    assert "VDDK" in run.result["error"]["message"]
    assert lab.snapshots(vm) == []


def test_auto_reads_flat_disks_over_folder(
        nbd_lab: Lab, unique_name: Callable[[str], str], tmp_path: Path) -> None:
    lab, vm = nbd_lab, unique_name("nbd")
    lab.create_vm(vm, [{"capacity": 8 * MiB}])
    lab.write(vm, THIN, 0, b"x" * MiB)
    run = mover(*nbd_backup_args(lab, vm, tmp_path / "repo"), lab=lab)
    assert run.code == 0, run.stderr
    disk = disk_result(run.result, THIN)
    assert (disk["transport"], disk["transport_reason"]) == (
        "folder", "a flat disk the datastore transport reads")


def test_a_vm_with_a_user_snapshot_is_read_through_nbd_under_auto(
        nbd_lab: Lab, unique_name: Callable[[str], str], tmp_path: Path) -> None:
    """The backup snapshot's disk is a delta on the user's: /folder cannot read it, so
    auto takes NBD; the stand-in applies the chain's layers. Then an incremental."""
    lab, vm, repo, rng = nbd_lab, unique_name("snapped"), tmp_path / "repo", random.Random(4)
    lab.create_vm(vm, [{"capacity": 32 * MiB, "type": "thin"}], cbt=True)
    scattered_writes(lab, vm, THIN, 32 * MiB, 4, rng)
    si = SmartConnect(host=lab.host, port=lab.port, user=lab.user, pwd=lab.password,
                      disableSslCertValidation=True)
    ref = si.content.searchIndex.FindByInventoryPath(f"DC0/vm/{vm}")
    task = ref.CreateSnapshot_Task(name="before-upgrade", description="a user's",
                                   memory=False, quiesce=False)
    while task.info.state not in ("success", "error"):
        time.sleep(0.05)
    scattered_writes(lab, vm, THIN, 32 * MiB, 3, rng)       # into the user's delta

    for _ in range(2):
        run = mover(*nbd_backup_args(lab, vm, repo), lab=lab)
        assert run.code == 0, run.stderr
        disk = disk_result(run.result, THIN)
        assert disk["transport"] == "nbd"
        assert "delta of an earlier snapshot" in disk["transport_reason"]
        frozen = snapshot_digests(lab, vm, run.result["snapshot"])
        assert restore_sha256(repo, run.result["backup_id"], THIN,
                              tmp_path / "out.img") == frozen[THIN]
        scattered_writes(lab, vm, THIN, 32 * MiB, 2, rng)
    assert disk["mode"] == "incremental"
    assert [s["name"] for s in lab.snapshots(vm)] == ["before-upgrade"]   # the user's stays
