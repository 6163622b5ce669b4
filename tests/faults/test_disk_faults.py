"""Disks /folder cannot serve as raw bytes, and an allocation query ("*") that faults: each
is refused with its reason or read another way, never backed up as the wrong bytes."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e.runner import backup, backup_args, mover, mover_snapshots, restore_sha256

from mover_lab import Lab

MiB = 1 << 20
KEY = 2000
Matrix = Callable[[str, str], None]


@pytest.mark.parametrize(
    ("extent", "says"),
    [
        # every extent type is refused in tests/unit/test_vmdk.py; these prove the wiring
        pytest.param("VMFSPASSTHROUGHRDM", "physical-mode raw device mapping",
                     id="physical-rdm"),
        pytest.param("vsan", "vsan:// object", id="vsan"),
    ],
)
def test_a_disk_whose_extent_folder_cannot_serve_is_refused(
        lab: Lab, unique_name: Callable[[str], str], tmp_path: Path, extent: str, says: str,
        matrix: Matrix) -> None:
    name = unique_name("ext")
    lab.create_vm(name, [{"capacity": 16 * MiB, "type": "thin", "extent": extent}], cbt=True)
    lab.write(name, KEY, 0, b"x" * MiB)
    lab.reset_counters()
    run = mover(*backup_args(lab, name, tmp_path / "repo"), lab=lab)
    assert run.code == 7, run.stderr
    message = run.result["error"]["message"]
    assert f"disk {KEY}" in message and says in message
    flat = lab.vm(name)["disks"][0]["flatFile"]
    assert flat not in lab.counters()["folder"]       # not one byte read as the disk
    assert list((tmp_path / "repo").glob("backups/*/*")) == []
    assert mover_snapshots(lab, name) == []       # its snapshot was removed
    matrix(f"{extent} extent in the descriptor", "exit 7 naming the disk and the extent type")


def test_an_allocation_query_that_faults_reads_the_whole_disk(
        lab: Lab, unique_name: Callable[[str], str], tmp_path: Path, matrix: Matrix) -> None:
    lab.configure(snapshotDigests=True)
    name = unique_name("star")
    lab.create_vm(name, [{"capacity": 32 * MiB, "type": "thin"}], cbt=True)
    lab.write(name, KEY, 4 * MiB, random.Random(8).randbytes(6 * MiB))
    lab.inject("soap", "fileFault", count=1, match="QueryChangedDiskAreas")
    lab.reset_counters()
    result = backup(lab, name, tmp_path / "repo")
    [disk] = result["disks"]
    assert disk["mode"] == "full"
    assert "refused the allocation query" in disk["reason"]
    assert "every byte is read" in disk["reason"]
    flat = lab.vm(name)["disks"][0]["flatFile"]
    assert lab.counters()["folder"][flat]["bytes"] == 32 * MiB
    assert disk["zero_blocks"] == 26 and disk["new_chunks"] == 6       # zeros not stored
    frozen = lab.snapshot_history(name)[-1]["disks"][0]["sha256"]
    assert restore_sha256(tmp_path / "repo", result["backup_id"], KEY,
                          tmp_path / "o.img") == frozen
    matrix('"*" query faults on a full', "reads the whole disk, reason in the result; "
           "identical")
