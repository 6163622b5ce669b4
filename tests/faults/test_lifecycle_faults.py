"""Faults of the VM's life around a backup: snapshot creation failing, CBT reset, a disk
grown, the VM deleted mid-run. Each either completes with a restore identical to the
snapshot image, or fails with its documented error; the repository always verifies and no
mover snapshot is left."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e.runner import (
    backup,
    backup_args,
    committed,
    env,
    mover,
    proved_clean,
    restore_sha256,
    snapshot_digests,
)

from faults.conftest import MakeVm
from mover_lab import Lab

MiB = 1 << 20
KEY = 2000
Matrix = Callable[[str, str], None]


@pytest.fixture
def vm(make_vm: MakeVm) -> str:
    return make_vm(64 * MiB, 24 * MiB, seed=1, cbt=False)




def test_snapshot_creation_fails(lab: Lab, vm: str, tmp_path: Path, matrix: Matrix) -> None:
    repo = tmp_path / "repo"
    first = backup(lab, vm, repo)
    lab.inject("soap", "snapshotCreateFail", count=1, match="CreateSnapshot_Task")
    run = mover(*backup_args(lab, vm, repo), lab=lab)
    assert run.code == 6, run.stderr
    assert run.result["error"]["kind"] == "VSphereError"
    assert "creating snapshot" in run.result["error"]["message"]
    assert committed(repo) == [first["backup_id"]]
    proved_clean(lab, vm, repo)
    after = backup(lab, vm, repo)  # the next run is unaffected
    assert after["disks"][0]["mode"] == "incremental"
    matrix("snapshot creation fails", "exit 6 VSphereError naming the snapshot; next run OK")


@pytest.mark.parametrize("change", ["cbt-reset", "capacity-grown"])
def test_cbt_reset_or_capacity_change_gives_a_full_that_says_why(
        lab: Lab, vm: str, tmp_path: Path, change: str, matrix: Matrix) -> None:
    repo = tmp_path / "repo"
    backup(lab, vm, repo)
    lab.write(vm, KEY, 40 * MiB, b"b" * MiB)
    if change == "cbt-reset":
        lab.reset_cbt(vm, KEY)
        why = "reset"
    else:
        lab.resize(vm, KEY, 128 * MiB)
        why = "capacity changed"
    result = backup(lab, vm, repo)
    disk = result["disks"][0]
    assert disk["mode"] == "full" and why in disk["reason"]
    frozen = snapshot_digests(lab, vm, result["snapshot"])
    assert restore_sha256(repo, result["backup_id"], KEY, tmp_path / "o.img") == frozen[KEY]
    proved_clean(lab, vm, repo)
    matrix(f"{change} between backups", f"completed as a full ({why}); restore identical")


def test_vm_deleted_mid_run(lab: Lab, vm: str, tmp_path: Path, matrix: Matrix) -> None:
    repo = tmp_path / "repo"
    lab.inject("folder", "delay", rate=1.0, delay_ms=200)
    proc = subprocess.Popen([sys.executable, "-m", "mover.cli",
                             *map(str, backup_args(lab, vm, repo, "--fetchers", "1"))],
                            env=env(lab), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line)["event"] == "disk_started":
            break
    lab.delete_vm(vm)
    out, err = proc.communicate(timeout=120)
    result = json.loads(out.strip().splitlines()[-1])
    assert proc.returncode == 6, err
    assert result["error"]["kind"] == "ObjectGone"
    assert f"VM {vm!r} disappeared during the backup" in result["error"]["message"]
    assert "Traceback" not in err
    assert committed(repo) == []
    assert list(repo.glob("backups/*/*")) == []          # nothing left to resume either
    assert mover("verify", "--repo", repo, "--read-data").code == 0
    matrix("VM deleted mid-run", "exit 6 ObjectGone naming the VM; nothing kept")


@pytest.mark.parametrize("method", ["CreateSnapshot_Task", "RemoveSnapshot_Task"])
def test_a_busy_vm_is_retried(lab: Lab, vm: str, tmp_path: Path, method: str,
                              matrix: Matrix) -> None:
    repo = tmp_path / "repo"
    lab.inject("soap", "taskInProgress", count=2, match=method)
    result = backup(lab, vm, repo)
    assert [f["fired"] for f in lab.faults()] == [2]
    assert result["snapshot"]["removed"] is True
    frozen = snapshot_digests(lab, vm, result["snapshot"])
    assert restore_sha256(repo, result["backup_id"], KEY, tmp_path / "o.img") == frozen[KEY]
    proved_clean(lab, vm, repo)
    matrix(f"TaskInProgress twice on {method}", "retried with backoff; completed; identical")
