"""Snapshots that are not this run's alone: another mover run's (another repository, another
host), one removed by somebody else mid-copy, and disks /folder would read as noise
(encrypted). Each refuses or fails without committing a wrong backup, and leaves the other
run's snapshot alone."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e.runner import (
    backup,
    backup_args,
    committed,
    env,
    mover,
    mover_snapshots,
    restore_sha256,
    snapshot_digests,
)
from pyVim.task import WaitForTask

from faults.conftest import MakeVm
from mover.ownership import Owner
from mover.vsphere.snapshots import TAG
from mover_lab import Lab

MiB = 1 << 20
KEY = 2000
Matrix = Callable[[str, str], None]


@pytest.fixture
def vm(make_vm: MakeVm) -> str:
    return make_vm(64 * MiB, 24 * MiB, seed=3)


def start_backup(lab: Lab, vm: str, repo: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mover.cli",
                             *map(str, backup_args(lab, vm, repo, *extra))], env=env(lab),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(proc: subprocess.Popen[str], event: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line).get("event") == event:
            return
    raise AssertionError(f"the backup ended before {event!r}: {proc.stderr.read()}")  # type: ignore[union-attr]


def finished(proc: subprocess.Popen[str]) -> tuple[int, dict[str, Any], str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, json.loads(out.strip().splitlines()[-1]), err


def vim_vm(lab: Lab, name: str) -> Any:
    """The VM as another vSphere client (another tool, an admin) sees it."""
    return lab.connect().content.searchIndex.FindByInventoryPath(f"DC0/vm/{name}")


def test_two_runs_on_one_vm_with_different_repositories(lab: Lab, vm: str, tmp_path: Path,
                                                        matrix: Matrix) -> None:
    first_repo, second_repo = tmp_path / "dc-repo", tmp_path / "dr-repo"
    # 6 reads of 600 ms: the first run reads for 3.6 s, longer than the second one needs
    lab.inject("folder", "delay", rate=1.0, delay_ms=600, match="-flat.vmdk")
    first = start_backup(lab, vm, first_repo, "--fetchers", "1")
    wait_for(first, "disk_started")             # its snapshot exists and is being read
    [taken] = lab.snapshots(vm)
    second = mover(*backup_args(lab, vm, second_repo), lab=lab)
    # the second run refuses, naming the other run's snapshot, repository and host
    assert second.code == 7, second.stderr
    error = second.result["error"]
    first_id = json.loads((first_repo / "config.json").read_text())["id"]
    assert error["kind"] == "UnsupportedVMError"
    assert taken["name"] in error["message"] and first_id in error["message"]
    assert "another mover backup of this VM may be running" in error["message"]
    assert [s["moref"] for s in lab.snapshots(vm)] == [taken["moref"]]   # untouched
    assert committed(second_repo) == []
    # the first run was never disturbed: committed, identical to its snapshot
    code, result, err = finished(first)
    assert code == 0, err
    assert result["orphans_removed"] == [] and result["warnings"] == []
    frozen = snapshot_digests(lab, vm, result["snapshot"])
    assert restore_sha256(first_repo, result["backup_id"], KEY, tmp_path / "o.img") == frozen[KEY]
    assert mover_snapshots(lab, vm) == []
    matrix("two runs on one VM with different repositories",
           "second exits 7 naming the live snapshot, its repository and host; first "
           "commits, restore identical")


def test_a_dead_run_of_another_repository_on_this_host_is_an_orphan(
        lab: Lab, vm: str, tmp_path: Path, matrix: Matrix) -> None:
    lab.inject("folder", "delay", rate=1.0, delay_ms=300, match="-flat.vmdk")
    killed = start_backup(lab, vm, tmp_path / "a", "--fetchers", "1")
    wait_for(killed, "disk_started")
    killed.kill()
    killed.communicate()
    [left] = lab.snapshots(vm)
    lab.clear_faults()
    result = backup(lab, vm, tmp_path / "b")      # another repository, same host
    assert result["orphans_removed"] == [left["name"]]
    assert mover_snapshots(lab, vm) == []
    matrix("SIGKILLed run of another repository on this host",
           "its process is gone: removed as an orphan; next run commits")


def foreign_snapshot(lab: Lab, vm: str, name: str, tag: str) -> str:
    task = vim_vm(lab, vm).CreateSnapshot_Task(
        name=name, description=f"mover backup x. {TAG} Safe to delete. {tag}", memory=False,
        quiesce=False)
    WaitForTask(task)
    return str(task.info.result._moId)


@pytest.mark.parametrize(
    ("name", "tag", "says"),
    [
        pytest.param("mover-20261201T000000Z-0a0b0c",
                     Owner("9" * 32, "20261201T000000Z-0a0b0c", "dr-site", "b", 7,
                           "2026-12-01T00:00:00Z").tag(), "dr-site", id="other-host"),
        pytest.param("mover-20261201T000000Z-0d0e0f", "", "without owner tags",
                     id="older-mover-without-tag"),
    ],
)
def test_a_young_foreign_snapshot_refuses_and_orphan_age_removes_it(
        lab: Lab, vm: str, tmp_path: Path, name: str, tag: str, says: str) -> None:
    moref = foreign_snapshot(lab, vm, name, tag)
    refused = mover(*backup_args(lab, vm, tmp_path / "repo"), lab=lab)
    assert refused.code == 7, refused.stderr
    assert name in refused.result["error"]["message"] and says in refused.stderr
    assert "--orphan-age (24 h)" in refused.stderr
    assert [s["moref"] for s in lab.snapshots(vm)] == [moref]
    result = backup(lab, vm, tmp_path / "repo", "--orphan-age", "0")
    assert result["orphans_removed"] == [name]
    assert mover_snapshots(lab, vm) == []


def remove_by_name(vm: Any, name: str) -> None:
    """Another client removes a snapshot (consolidate=True), as an admin or a tool would."""
    nodes = list(vm.snapshot.rootSnapshotList)
    while nodes:
        node = nodes.pop()
        if node.name == name:
            WaitForTask(node.snapshot.RemoveSnapshot_Task(removeChildren=False,
                                                          consolidate=True))
            return
        nodes.extend(node.childSnapshotList or [])
    raise AssertionError(f"no snapshot {name!r}")


def test_snapshot_removed_mid_copy_is_never_committed(lab: Lab, vm: str, tmp_path: Path,
                                                      matrix: Matrix) -> None:
    repo, admin = tmp_path / "repo", vim_vm(lab, vm)     # another client, logged in already
    lab.inject("folder", "delay", rate=1.0, delay_ms=400, match="-flat.vmdk")
    proc = start_backup(lab, vm, repo, "--fetchers", "1")   # 6 reads of 4 MiB, in order
    wait_for(proc, "progress")                 # the first 4 MiB are read
    [snap] = lab.snapshots(vm)
    lab.write(vm, KEY, 20 * MiB, b"after the snapshot" * 1000)   # the guest writes on
    remove_by_name(admin, snap["name"])        # consolidation: into the base being read
    code, result, err = finished(proc)
    frozen = snapshot_digests(lab, vm, snap["name"])[KEY]
    # the hazard is real: the base file mover was reading is no longer the snapshot's image
    assert lab.live_sha256(vm, KEY) != frozen
    assert code == 6, err
    assert result["error"]["kind"] == "SnapshotVanished"
    assert snap["name"] in result["error"]["message"]
    assert "nothing was committed" in result["error"]["message"]
    assert list(repo.glob("backups/*/*")) == []     # nothing committed, nothing to resume
    lab.clear_faults()
    after = backup(lab, vm, repo)              # a fresh backup, not a resume of the torn one
    assert after["resumed_from"] is None
    frozen_after = snapshot_digests(lab, vm, after["snapshot"])[KEY]
    assert restore_sha256(repo, after["backup_id"], KEY, tmp_path / "o.img") == frozen_after
    matrix("snapshot removed mid-copy (consolidated into the base being read)",
           "exit 6 SnapshotVanished, nothing committed, pending discarded; next run identical")


def test_encrypted_disk(lab: Lab, unique_name: Callable[[str], str], tmp_path: Path,
                        matrix: Matrix) -> None:
    name = unique_name("crypt")
    lab.create_vm(name, [{"capacity": 16 * MiB, "type": "thin"},
                         {"capacity": 16 * MiB, "type": "thin", "encrypted": True}], cbt=True)
    run = mover(*backup_args(lab, name, tmp_path / "repo"), lab=lab)
    assert run.code == 7, run.stderr
    message = run.result["error"]["message"]
    assert "disk 2001" in message and "encrypted" in message and "ciphertext" in message
    assert lab.snapshot_history(name) == []          # refused before any snapshot
    assert committed(tmp_path / "repo") == []
    matrix("encrypted disk (backing.keyId)", "exit 7 naming the disk, before any snapshot")
