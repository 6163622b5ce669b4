"""What real hosts do to a backup snapshot: quiescing that fails, a VM busy with another
tool's task, a removal that leaves consolidation needed, and VMs vSphere cannot snapshot
(templates, multi-writer disks). Each is retried, waited for, repaired or refused with its
reason, never a wrong backup."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from e2e.runner import (
    backup,
    backup_args,
    committed,
    mover,
    mover_snapshots,
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
    return make_vm(16 * MiB, 3 * MiB, seed=5)


def identical(lab: Lab, vm: str, repo: Path, result: dict, tmp: Path) -> bool:
    frozen = snapshot_digests(lab, vm, result["snapshot"])
    return restore_sha256(repo, result["backup_id"], KEY, tmp / "o.img") == frozen[KEY]


def test_a_quiesce_fault_is_retried(lab: Lab, vm: str, tmp_path: Path, matrix: Matrix) -> None:
    lab.inject("soap", "quiesceFault", count=2, match="CreateSnapshot_Task")
    result = backup(lab, vm, tmp_path / "repo", "--quiesce")
    assert [f["fired"] for f in lab.faults()] == [2]
    assert result["snapshot"]["quiesced"] is True and result["warnings"] == []
    assert identical(lab, vm, tmp_path / "repo", result, tmp_path)
    matrix("quiesce fault twice", "third attempt quiesces; committed, restore identical")


def test_quiesce_failing_three_times_fails_or_falls_back(lab: Lab, vm: str, tmp_path: Path,
                                                         matrix: Matrix) -> None:
    lab.inject("soap", "quiesceFault", count=3, match="CreateSnapshot_Task")
    run = mover(*backup_args(lab, vm, tmp_path / "a", "--quiesce"), lab=lab)
    assert run.code == 6, run.stderr
    error = run.result["error"]
    assert error["kind"] == "QuiesceFailed" and "--quiesce-fallback" in error["message"]
    assert lab.snapshots(vm) == [] and committed(tmp_path / "a") == []

    lab.inject("soap", "quiesceFault", count=3, match="CreateSnapshot_Task")
    result = backup(lab, vm, tmp_path / "b", "--quiesce", "--quiesce-fallback")
    assert result["snapshot"]["quiesced"] is False
    [warning] = result["warnings"]
    assert "crash-consistent" in warning
    assert identical(lab, vm, tmp_path / "b", result, tmp_path)
    matrix("quiesce fault 3 times", "exit 6 naming --quiesce-fallback; with it a "
           "crash-consistent backup with a warning, restore identical")


def test_a_busy_vm_is_waited_for_within_busy_wait(lab: Lab, vm: str, tmp_path: Path,
                                                  matrix: Matrix) -> None:
    lab.inject("soap", "taskInProgress", count=4, match="CreateSnapshot_Task")
    run = mover(*backup_args(lab, vm, tmp_path / "a", "--busy-wait", "1"), lab=lab)
    assert run.code == 6, run.stderr
    assert "stayed busy with another task" in run.result["error"]["message"]
    assert "--busy-wait" in run.result["error"]["message"]
    assert lab.snapshots(vm) == []
    lab.clear_faults()
    # 4 refusals: 0.5 + 1 + 2 + 4 s of waiting, more than the old fixed attempts allowed
    lab.inject("soap", "taskInProgress", count=6, match="CreateSnapshot_Task")
    result = backup(lab, vm, tmp_path / "b", "--busy-wait", "60")
    assert [f["fired"] for f in lab.faults()] == [6]
    assert identical(lab, vm, tmp_path / "b", result, tmp_path)
    matrix("VM busy with another task (TaskInProgress x6)", "waited within --busy-wait; "
           "too short a wait exits 6 naming it")


def test_consolidation_needed_after_removal_is_consolidated(lab: Lab, vm: str, tmp_path: Path,
                                                            matrix: Matrix) -> None:
    lab.inject("soap", "consolidationNeeded", count=1, match="RemoveSnapshot_Task")
    repo = tmp_path / "repo"
    result = backup(lab, vm, repo)
    assert result["snapshot"]["consolidated"] is True and result["warnings"] == []
    [disk] = lab.vm(vm)["disks"]
    assert len(disk["chain"]) == 1                   # back on its base disk, no delta left
    assert identical(lab, vm, repo, result, tmp_path)
    lab.write(vm, KEY, 8 * MiB, b"\x11" * MiB)
    again = backup(lab, vm, repo)                   # the next one reads a flat base again
    assert [d["mode"] for d in again["disks"]] == ["incremental"]
    assert identical(lab, vm, repo, again, tmp_path)

    lab.inject("soap", "consolidationNeeded", count=1, match="RemoveSnapshot_Task")
    kept = backup(lab, vm, repo, "--no-consolidate")
    [warning] = kept["warnings"]
    assert "needs disk consolidation" in warning
    assert len(lab.vm(vm)["disks"][0]["chain"]) == 2
    assert mover_snapshots(lab, vm) == []
    matrix("consolidation needed after snapshot removal", "ConsolidateVMDisks_Task; chain "
           "back to the base, next incremental fine; --no-consolidate only warns")


@pytest.mark.parametrize(
    ("spec", "disk", "says"),
    [
        pytest.param({"template": True}, {}, "is a template", id="template"),
        pytest.param({}, {"multiWriter": True}, "multi-writer", id="multi-writer-disk"),
    ],
)
def test_what_vsphere_cannot_snapshot_is_refused_first(
        lab: Lab, unique_name: Callable[[str], str], tmp_path: Path, spec: dict[str, object],
        disk: dict[str, object], says: str, matrix: Matrix) -> None:
    name = unique_name("nosnap")
    lab.create_vm(name, [{"capacity": 4 * MiB, **disk}], cbt=True, **spec)
    lab.reset_counters()
    run = mover(*backup_args(lab, name, tmp_path / "repo"), lab=lab)
    assert run.code == 7, run.stderr
    assert says in run.result["error"]["message"]
    assert "CreateSnapshot_Task" not in lab.counters()["soap"]     # refused before any
    assert lab.snapshots(name) == []
    matrix(f"{says} VM/disk", "exit 7 with the reason, before any snapshot")
