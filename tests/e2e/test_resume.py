"""Interrupted seeds resume: from the kept snapshot after SIGKILL, from a new snapshot plus
a change query after SIGTERM. Restores must match the image the final snapshot froze."""

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

from mover.repo.journal import read_journal
from mover_lab import Lab

from .runner import backup, backup_args, env, mover_snapshots, restore_sha256, snapshot_digests

MiB = 1 << 20
KEY = 2000
DATA = 40 * MiB  # 10 reads of 4 MiB


@pytest.fixture
def seed_vm(lab: Lab, unique_name: Callable[[str], str]) -> str:
    lab.configure(snapshotDigests=True)
    name = unique_name("seed")
    lab.create_vm(name, [{"capacity": 256 * MiB, "type": "thin"}])
    lab.write(name, KEY, 8 * MiB, random.Random(5).randbytes(DATA))
    return name


def start_backup(lab: Lab, vm: str, repo: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mover.cli",
                             *map(str, backup_args(lab, vm, repo, "--fetchers", "1"))],
                            env=env(lab), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for_progress(proc: subprocess.Popen[str], repo: Path, blocks: int) -> None:
    """Until the pending backup's journal names at least ``blocks`` blocks."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if journaled(repo) >= blocks:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the backup made no progress")


def journaled(repo: Path) -> int:
    return sum(len(dict(read_journal(p))) for p in repo.glob("backups/*/*/disk-*.journal"))


def test_sigkill_then_resume_reuses_the_snapshot_and_reads_only_the_rest(
        lab: Lab, seed_vm: str, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    lab.inject("folder", "delay", rate=1.0, delay_ms=150)
    proc = start_backup(lab, seed_vm, repo)
    wait_for_progress(proc, repo, 12)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stored = journaled(repo)
    [killed] = lab.snapshots(seed_vm)                   # SIGKILL: the snapshot stays
    lab.clear_faults()
    lab.reset_counters()

    result = backup(lab, seed_vm, repo)
    disk = result["disks"][0]
    assert result["resumed_from"] == result["backup_id"]
    assert result["snapshot"]["moref"] == killed["moref"] and result["orphans_removed"] == []
    assert disk["resumed_blocks"] == stored
    # exactly the planned blocks the killed run had not journaled
    assert disk["bytes_read"] == DATA - stored * MiB
    assert mover_snapshots(lab, seed_vm) == []
    frozen = snapshot_digests(lab, seed_vm, result["snapshot"])
    assert restore_sha256(repo, result["backup_id"], KEY, tmp_path / "o.img") == frozen[KEY]


def test_sigterm_then_resume_from_a_new_snapshot_rereads_what_changed(
        lab: Lab, seed_vm: str, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    lab.inject("folder", "delay", rate=1.0, delay_ms=150)
    proc = start_backup(lab, seed_vm, repo)
    wait_for_progress(proc, repo, 12)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert json.loads(out.strip().splitlines()[-1])["error"]["kind"] == "Interrupted"
    assert mover_snapshots(lab, seed_vm) == []          # SIGTERM: the snapshot was removed
    stored = journaled(repo)
    assert stored >= 12
    # the guest writes into blocks already stored and into new ones
    lab.write(seed_vm, KEY, 8 * MiB, b"changed" * 1000)  # block 8: stored before the stop
    lab.write(seed_vm, KEY, 200 * MiB, b"new" * 1000)    # block 200: newly allocated
    lab.clear_faults()
    lab.reset_counters()

    result = backup(lab, seed_vm, repo)
    disk = result["disks"][0]
    assert result["resumed_from"] == result["backup_id"]
    assert disk["mode"] == "full" and "resumed" in disk["reason"]
    assert disk["resumed_blocks"] == stored
    # the blocks not stored yet, plus the two changed blocks
    assert disk["bytes_read"] == DATA - stored * MiB + MiB + MiB
    frozen = snapshot_digests(lab, seed_vm, result["snapshot"])
    assert restore_sha256(repo, result["backup_id"], KEY, tmp_path / "o.img") == frozen[KEY]
    assert frozen[KEY] == lab.live_sha256(seed_vm, KEY)


def test_a_changed_disk_is_not_resumed(lab: Lab, seed_vm: str, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    lab.inject("folder", "delay", rate=1.0, delay_ms=150)
    proc = start_backup(lab, seed_vm, repo)
    wait_for_progress(proc, repo, 4)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    lab.clear_faults()
    lab.reset_cbt(seed_vm, KEY)                          # a new CBT epoch
    result = backup(lab, seed_vm, repo)
    assert result["disks"][0]["resumed_blocks"] == 0
    assert result["disks"][0]["bytes_read"] == DATA
    assert len(list(repo.glob("backups/*/*"))) == 1      # the interrupted one is gone
