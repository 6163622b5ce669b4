"""The repository's file system fails under a backup: full (ENOSPC) or read-only (EROFS).

Real small file systems, made by the test: a tmpfs of a few MiB (needs root, as in CI)."""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e.runner import backup, backup_args, committed, mover, mover_snapshots

from mover_lab import Lab

MiB = 1 << 20

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def vm(lab: Lab, unique_name: Callable[[str], str]) -> str:
    name = unique_name("vm")
    lab.create_vm(name, [{"capacity": 64 * MiB, "type": "thin"}])
    lab.write(name, 2000, 0, random.Random(4).randbytes(2 * MiB))
    return name



def test_a_full_file_system_ends_the_job_cleanly(lab: Lab, vm: str, small_fs: Path,
                                                 matrix: Callable[[str, str], None]) -> None:
    repo = small_fs / "repo"
    first = backup(lab, vm, repo)
    lab.write(vm, 2000, 8 * MiB, random.Random(8).randbytes(12 * MiB))  # more than fits
    run = mover(*backup_args(lab, vm, repo), lab=lab)
    assert run.code == 9, run.stderr
    message = run.result["error"]["message"]
    assert "no space left" in message.lower() and "free space" in message
    assert mover_snapshots(lab, vm) == []
    assert committed(repo) == [first["backup_id"]]
    assert mover("verify", "--repo", repo, "--read-data").code == 0
    matrix("ENOSPC on the repository (6 MiB tmpfs)", "exit 9 naming the fix; repo verifies")


def test_a_read_only_file_system_ends_the_job_cleanly(lab: Lab, vm: str, small_fs: Path,
                                                      matrix: Callable[[str, str], None]) -> None:
    repo = small_fs / "repo"
    first = backup(lab, vm, repo)
    lab.write(vm, 2000, 8 * MiB, b"new" * MiB)
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    run = mover(*backup_args(lab, vm, repo), lab=lab)
    assert run.code == 9, run.stderr
    assert "read-only" in run.result["error"]["message"]
    assert mover_snapshots(lab, vm) == []
    assert committed(repo) == [first["backup_id"]]
    assert mover("verify", "--repo", repo, "--read-data").code == 0
    assert json.loads(run.stdout.strip().splitlines()[-1])["status"] == "failed"
    matrix("EROFS on the repository", "exit 9 naming the fix; repo verifies")


def test_a_restore_into_a_full_file_system_fails_cleanly(lab: Lab, vm: str, tmp_path: Path,
                                                         small_fs: Path,
                                                         matrix: Callable[[str, str], None]
                                                         ) -> None:
    repo = tmp_path / "repo"
    lab.write(vm, 2000, 8 * MiB, random.Random(9).randbytes(12 * MiB))  # more than fits
    result = backup(lab, vm, repo)
    out = small_fs / "disk.img"
    run = mover("restore", "--repo", repo, "--backup", result["backup_id"], "--disk", "2000",
                "--output", out, "--json")
    assert run.code == 9, run.stderr
    assert "cannot write the restored disk" in run.result["error"]["message"]
    assert "Traceback" not in run.stderr
    assert not out.exists()                              # no partial image left behind
    matrix("ENOSPC while restoring", "exit 9 naming the output; partial image removed")
