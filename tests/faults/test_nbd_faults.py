"""Faults of the NBD transport, injected with nbdkit's own filters in front of the
stand-in (``--nbdkit-filter``), and mover ended mid-copy: every fault either completes
with a restore identical to the snapshot image or fails with its documented error, and no
nbdkit is ever left running (its process is looked for)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e.nbdlab import nbd_backup_args, nbdkit_processes
from e2e.runner import Run, env, mover, mover_snapshots, restore_sha256, snapshot_digests

from mover_lab import Lab

MiB = 1 << 20
KEY = 2000
Matrix = Callable[[str, str], None]


@pytest.fixture
def vm(nbd_lab: Lab, unique_name: Callable[[str], str]) -> str:
    name = unique_name("nbd")
    nbd_lab.create_vm(name, [{"capacity": 32 * MiB, "type": "thin"}])
    nbd_lab.write(name, KEY, 0, random.Random(5).randbytes(12 * MiB))
    return name


def run_nbd(lab: Lab, vm: str, repo: Path, *extra: str) -> Run:
    return mover(*nbd_backup_args(lab, vm, repo, "--transport", "nbd", "--fetchers", "4",
                                  *extra), lab=lab)


def test_nbd_read_errors_are_retried(nbd_lab: Lab, vm: str, tmp_path: Path,
                                     matrix: Matrix) -> None:
    """EIO on every read while the trigger file exists; it goes at the first retry."""
    repo, trigger = tmp_path / "repo", tmp_path / "failing"
    trigger.touch()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mover.cli", *map(str, nbd_backup_args(
            nbd_lab, vm, repo, "--transport", "nbd", "-v", "--nbdkit-filter", "error",
            "--nbdkit-option", "error-pread=EIO", "--nbdkit-option", "error-pread-rate=1",
            "--nbdkit-option", f"error-pread-file={trigger}"))],
        env=env(nbd_lab), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "retrying" in line:
            assert "the server answered EIO" in line
            trigger.unlink()
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    disk = result["disks"][0]
    assert disk["retries"] > 0 and disk["transport"] == "nbd"
    frozen = snapshot_digests(nbd_lab, vm, result["snapshot"])
    assert restore_sha256(repo, result["backup_id"], KEY, tmp_path / "o") == frozen[KEY]
    assert nbdkit_processes(nbd_lab.vm(vm)["moref"]) == []
    matrix("nbdkit error filter: EIO on every read until the first retry",
           f"completed, {disk['retries']} retries, restore identical")


@pytest.mark.parametrize(("filters", "says"), [
    (["--nbdkit-filter", "error", "--nbdkit-option", "error-pread=EIO",
      "--nbdkit-option", "error-pread-rate=1"], "the server answered EIO"),
    (["--nbdkit-filter", "delay", "--nbdkit-option", "delay-read=2000ms",
      "--read-timeout", "0.3"], "read timeout"),
], ids=["every-read-EIO", "reads-slower-than-the-timeout"])
def test_nbd_faults_that_do_not_pass_fail_the_backup(
        nbd_lab: Lab, vm: str, tmp_path: Path, matrix: Matrix, filters: list[str],
        says: str) -> None:
    run = run_nbd(nbd_lab, vm, tmp_path / "repo", "--read-attempts", "2", *filters)
    assert run.code == 8, run.stderr
    assert run.result["error"]["kind"] == "TransportError"
    assert says in run.result["error"]["message"] and "after 2 attempts" in \
        run.result["error"]["message"]
    assert nbdkit_processes(nbd_lab.vm(vm)["moref"]) == []
    assert mover_snapshots(nbd_lab, vm) == []
    matrix(f"nbdkit {filters[1]} filter: {' '.join(filters[2:])}",
           f"exit 8 TransportError ({says}); snapshot removed, no nbdkit left")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_nbdkit_does_not_outlive_mover(nbd_lab: Lab, vm: str, tmp_path: Path,
                                       matrix: Matrix, sig: signal.Signals) -> None:
    moref = nbd_lab.vm(vm)["moref"]
    nbd_lab.configure(folderConnectionBps=1 * MiB)    # the copy takes a few seconds
    proc = subprocess.Popen(
        [sys.executable, "-m", "mover.cli",
         *map(str, nbd_backup_args(nbd_lab, vm, tmp_path / "repo", "--transport", "nbd"))],
        env=env(nbd_lab), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line)["event"] == "progress":
            break
    assert len(nbdkit_processes(moref)) == 1
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    deadline = time.monotonic() + 10
    while nbdkit_processes(moref) and time.monotonic() < deadline:
        time.sleep(0.05)    # SIGKILL: the kernel tells nbdkit (--exit-with-parent)
    assert nbdkit_processes(moref) == []
    if sig == signal.SIGTERM:
        assert proc.returncode == 130, err
        assert mover_snapshots(nbd_lab, vm) == []
    else:
        assert proc.returncode == -signal.SIGKILL
    matrix(f"mover gets {sig.name} while reading through nbdkit",
           "nbdkit gone" + (", exit 130, snapshot removed" if sig == signal.SIGTERM else
                            " (--exit-with-parent); the snapshot is the next run's orphan"))
