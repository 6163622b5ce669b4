"""A host that throttles and refuses: a per-connection rate, 503 beyond its concurrent
transfers, 500 while another reader holds the disk. mover waits within a time budget that
grows with the disk (not a count of attempts) and says which refusal it met."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from e2e.runner import backup, backup_args, committed, mover, restore_sha256, snapshot_digests

from faults.conftest import MakeVm
from mover_lab import Lab

MiB = 1 << 20
KEY = 2000
Matrix = Callable[[str, str], None]


@pytest.fixture
def vm(make_vm: MakeVm) -> str:
    return make_vm(32 * MiB, 16 * MiB, seed=4)


def identical(lab: Lab, vm: str, repo: Path, result: dict, tmp: Path) -> bool:
    frozen = snapshot_digests(lab, vm, result["snapshot"])
    return restore_sha256(repo, result["backup_id"], KEY, tmp / "o.img") == frozen[KEY]


def test_a_throttled_host_that_answers_503_under_load(lab: Lab, vm: str, tmp_path: Path,
                                                     matrix: Matrix) -> None:
    # 2 transfers at once at 16 MiB/s each; mover asks with 8 fetchers; with one attempt
    # per read, only the time budget can carry the 503s
    lab.configure(folderMaxRequests=2, folderConnectionBps=16 * MiB)
    result = backup(lab, vm, tmp_path / "repo", "--fetchers", "8", "--read-attempts", "1")
    [disk] = result["disks"]
    assert disk["host_waits"].get("busy", 0) > 0 and "locked" not in disk["host_waits"]
    assert identical(lab, vm, tmp_path / "repo", result, tmp_path)
    matrix("throttled host: 2 transfers at 16 MiB/s, 503 beyond", "waited out (host_waits "
           "busy), committed, restore identical")


def test_a_disk_locked_by_another_reader(lab: Lab, vm: str, tmp_path: Path,
                                         matrix: Matrix) -> None:
    lab.lock_disk(vm, KEY, 6)                # another tool reads the disk for 6 s
    result = backup(lab, vm, tmp_path / "a", "--read-attempts", "2")
    [disk] = result["disks"]
    assert disk["host_waits"].get("locked", 0) > 0
    assert identical(lab, vm, tmp_path / "a", result, tmp_path)

    lab.lock_disk(vm, KEY, 60)
    run = mover(*backup_args(lab, vm, tmp_path / "b", "--host-wait", "2"), lab=lab)
    assert run.code == 8, run.stderr
    error = run.result["error"]
    assert "locked by another reader" in error["message"] and "--host-wait" in error["message"]
    assert error["fields"]["fault"] == "locked" and error["fields"]["disk"] == KEY
    assert committed(tmp_path / "b") == []
    lab.lock_disk(vm, KEY, 0)
    matrix("disk locked by another reader (500) for 6 s", "waited out (host_waits locked), "
           "restore identical; past --host-wait exits 8 saying locked")


@pytest.mark.parametrize("status", [503, 500])
def test_a_host_that_never_recovers_ends_the_backup(lab: Lab, vm: str, tmp_path: Path,
                                                    status: int) -> None:
    # a 503 is a busy host: waited for --host-wait (3 s + 10 s per GiB); a plain 500 (no
    # lock) is a server error: --read-attempts attempts; both end with status 8
    lab.inject("folder", f"status{status}", rate=1.0, match="-flat.vmdk")
    run = mover(*backup_args(lab, vm, tmp_path / "r", "--read-attempts", "2",
                             "--host-wait", "3"), lab=lab)
    assert run.code == 8, run.stderr
    fields = run.result["error"]["fields"]
    assert fields.get("fault") == ("busy" if status == 503 else None)
