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
from e2e.runner import (
    backup,
    backup_args,
    committed,
    env,
    journaled_blocks,
    mover_snapshots,
    proved_clean,
    restore_sha256,
    snapshot_digests,
)

from mover.pipeline.copy import PipelineSettings
from mover.repo import ChunkCodec, LocalStore, PackedChunks
from mover_lab import Lab

MiB = 1 << 20
KEY = 2000
Matrix = Callable[[str, str], None]


def seed(lab: Lab, name: str, data: int) -> str:
    lab.configure(snapshotDigests=True)
    lab.create_vm(name, [{"capacity": 512 * MiB, "type": "thin"}])
    rng = random.Random(5)
    for offset in range(0, data, 32 * MiB):
        lab.write(name, KEY, 8 * MiB + offset, rng.randbytes(min(32 * MiB, data - offset)))
    return name


def start_backup(lab: Lab, vm: str, repo: Path) -> subprocess.Popen[str]:
    """A backup that makes its progress durable (and journals it) after every 4 MiB."""
    args = backup_args(lab, vm, repo, "--fetchers", "1", "--checkpoint-every", "4")
    return subprocess.Popen([sys.executable, "-m", "mover.cli", *map(str, args)],
                            env=env(lab), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def journaled(repo: Path) -> int:
    """Blocks the pending backups' journals name."""
    return len(journaled_blocks(repo))


def chunks(repo: Path) -> int:
    """Chunks in the repository's indexed packs."""
    return len(PackedChunks(LocalStore(repo), ChunkCodec(3)))


def wait_for_progress(proc: subprocess.Popen[str], repo: Path, blocks: int) -> None:
    """Until the pending backup's journal names at least ``blocks`` blocks."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if journaled(repo) >= blocks:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the backup made no progress")



def interrupt(lab: Lab, vm: str, repo: Path, sig: signal.Signals,
              after_blocks: int) -> subprocess.CompletedProcess[str]:
    """A backup slowed to 300 ms a read (3 s for 40 MiB: slack for a loaded machine), stopped
    by ``sig`` once it journaled ``after_blocks`` blocks; the slowdown is lifted again."""
    lab.inject("folder", "delay", rate=1.0, delay_ms=300)
    proc = start_backup(lab, vm, repo)
    wait_for_progress(proc, repo, after_blocks)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    lab.clear_faults()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_sigkill_at_ten_random_points_then_resume_reads_only_the_rest(
        lab: Lab, unique_name: Callable[[str], str], tmp_path: Path, matrix: Matrix) -> None:
    data = 240 * MiB                                    # 60 reads of 4 MiB, 100 ms each
    vm, repo, rng = seed(lab, unique_name("seed"), data), tmp_path / "repo", random.Random(17)
    lab.inject("folder", "delay", rate=1.0, delay_ms=100)
    for kill in range(10):
        proc = start_backup(lab, vm, repo)
        assert proc.stdout is not None
        for line in proc.stdout:  # a random point of the copy, not of the start-up
            if json.loads(line)["event"] == "disk_started":
                break
        time.sleep(rng.uniform(0.0, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert committed(repo) == [], f"kill {kill}: the seed finished before the kill"
    stored, noted = chunks(repo), journaled(repo)
    assert 0 < noted <= stored < data // MiB
    lab.clear_faults()
    lab.reset_counters()
    result = backup(lab, vm, repo)
    disk = result["disks"][0]
    # stored but not yet journaled: at most the reads in flight and one sync interval
    window = PipelineSettings().workers * PipelineSettings().max_read + 4 * MiB
    assert disk["bytes_read"] == data - noted * MiB      # planned blocks not journaled
    assert disk["bytes_read"] <= data - stored * MiB + window
    frozen = snapshot_digests(lab, vm, result["snapshot"])
    assert restore_sha256(repo, result["backup_id"], KEY, tmp_path / "o.img") == frozen[KEY]
    proved_clean(lab, vm, repo)
    matrix("SIGKILL at 10 random points of a seed, then resume",
           f"completed; resume read {disk['bytes_read'] // MiB} MiB of {data // MiB} "
           f"({stored} blocks stored before); restore identical")


def test_sigterm_then_resume_from_a_new_snapshot_rereads_what_changed(
        lab: Lab, unique_name: Callable[[str], str], tmp_path: Path, matrix: Matrix) -> None:
    data = 40 * MiB
    vm, repo = seed(lab, unique_name("seed"), data), tmp_path / "repo"
    stopped = interrupt(lab, vm, repo, signal.SIGTERM, 8)
    assert stopped.returncode == 130, stopped.stderr
    assert json.loads(stopped.stdout.strip().splitlines()[-1])["error"]["kind"] == "Interrupted"
    assert mover_snapshots(lab, vm) == []               # SIGTERM: the snapshot was removed
    stored = journaled(repo)
    assert stored >= 8
    # the guest writes into blocks already stored and into new ones
    lab.write(vm, KEY, 8 * MiB, b"changed" * 1000)      # block 8: stored before the stop
    lab.write(vm, KEY, 200 * MiB, b"new" * 1000)        # block 200: newly allocated
    lab.reset_counters()

    result = backup(lab, vm, repo)
    disk = result["disks"][0]
    assert result["resumed_from"] == result["backup_id"]
    assert disk["mode"] == "full" and "resumed" in disk["reason"]
    assert disk["resumed_blocks"] == stored - 1          # block 8 changed: not trusted
    # the blocks not stored yet, plus the two changed blocks
    assert disk["bytes_read"] == data - stored * MiB + 2 * MiB
    frozen = snapshot_digests(lab, vm, result["snapshot"])
    assert restore_sha256(repo, result["backup_id"], KEY, tmp_path / "o.img") == frozen[KEY]
    assert frozen[KEY] == lab.live_sha256(vm, KEY)
    proved_clean(lab, vm, repo)
    matrix("SIGTERM mid-run, guest writes, then resume",
           f"exit 130, snapshot removed; resume read the {data // MiB - stored} MiB left plus "
           "2 changed blocks; restore identical")


def test_sigkill_then_resume_reuses_the_snapshot(lab: Lab, unique_name: Callable[[str], str],
                                                tmp_path: Path) -> None:
    data = 40 * MiB
    vm, repo = seed(lab, unique_name("seed"), data), tmp_path / "repo"
    interrupt(lab, vm, repo, signal.SIGKILL, 8)
    stored = journaled(repo)
    [killed] = lab.snapshots(vm)                        # SIGKILL: the snapshot stays
    result = backup(lab, vm, repo)
    disk = result["disks"][0]
    assert result["resumed_from"] == result["backup_id"]
    assert result["snapshot"]["moref"] == killed["moref"] and result["orphans_removed"] == []
    assert disk["resumed_blocks"] == stored
    assert disk["bytes_read"] == data - stored * MiB
    frozen = snapshot_digests(lab, vm, result["snapshot"])
    assert restore_sha256(repo, result["backup_id"], KEY, tmp_path / "o.img") == frozen[KEY]
    proved_clean(lab, vm, repo)


def test_a_changed_disk_is_not_resumed(lab: Lab, unique_name: Callable[[str], str],
                                       tmp_path: Path) -> None:
    data = 40 * MiB
    vm, repo = seed(lab, unique_name("seed"), data), tmp_path / "repo"
    interrupt(lab, vm, repo, signal.SIGTERM, 4)
    lab.reset_cbt(vm, KEY)                              # a new CBT epoch
    result = backup(lab, vm, repo)
    assert result["disks"][0]["resumed_blocks"] == 0
    assert result["disks"][0]["bytes_read"] == data
    assert len(list(repo.glob("backups/*/*"))) == 1     # the interrupted one is gone


pytestmark = pytest.mark.timeout(300)


def test_two_interruptions_in_a_row_still_restore_exactly(
        lab: Lab, unique_name: Callable[[str], str], tmp_path: Path, matrix: Matrix) -> None:
    """Run 2 plans to re-read a block that changed after run 1 stored it, and is stopped
    before it does: run 3 must not trust run 1's copy of that block."""
    data = 40 * MiB
    vm, repo = seed(lab, unique_name("seed"), data), tmp_path / "repo"
    interrupt(lab, vm, repo, signal.SIGTERM, 8)
    lab.write(vm, KEY, 8 * MiB, b"changed" * 1000)      # block 8: stored by run 1
    lab.inject("folder", "delay", rate=1.0, delay_ms=300)
    proc = start_backup(lab, vm, repo)                   # run 2: stopped before any read
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line)["event"] == "disk_started":
            break
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    lab.clear_faults()
    result = backup(lab, vm, repo)                       # run 3
    frozen = snapshot_digests(lab, vm, result["snapshot"])
    assert frozen[KEY] == lab.live_sha256(vm, KEY)
    assert restore_sha256(repo, result["backup_id"], KEY, tmp_path / "o.img") == frozen[KEY]
    proved_clean(lab, vm, repo)
    matrix("SIGTERM twice, guest writes between", "third run restores identical")
