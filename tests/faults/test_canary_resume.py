"""The CBT canary and resume: canary reads are never journaled, and a disk the canary
turned into a full stays a full (and suspect) when an interrupted run is resumed."""

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
from e2e import runner
from e2e.runner import (
    backup,
    backup_args,
    env,
    mover,
    proved_clean,
    restore_sha256,
    snapshot_digests,
)

from mover_lab import Lab

MiB = 1 << 20
KEY = 2000
Matrix = Callable[[str, str], None]

pytestmark = pytest.mark.timeout(300)


def journaled_blocks(repo: Path) -> set[int]:
    return {block for _, _, block in runner.journaled_blocks(repo)}


def journaled(repo: Path) -> int:
    return len(journaled_blocks(repo))


def checkpoint_mode(repo: Path) -> str | None:
    for path in repo.glob("backups/*/*/checkpoint.json"):
        return str(json.loads(path.read_text())["disks"][0]["mode"])
    return None


def wait(proc: subprocess.Popen[str], ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if ready():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("the backup did not get there")


def test_canary_reads_are_not_journaled_and_a_resume_stays_a_suspect_full(
        lab: Lab, unique_name: Callable[[str], str], tmp_path: Path, matrix: Matrix) -> None:
    lab.configure(snapshotDigests=True)
    vm, repo = unique_name("lossy"), tmp_path / "repo"
    lab.create_vm(vm, [{"capacity": 48 * MiB, "type": "thin"}], cbt=True)
    lab.write(vm, KEY, 0, random.Random(3).randbytes(40 * MiB))
    backup(lab, vm, repo)
    lab.write(vm, KEY, 3 * MiB, b"tracked" * 100)
    lab.write(vm, KEY, 33 * MiB, b"lost by CBT" * 100, untracked=True)
    args = backup_args(lab, vm, repo, "--canary-blocks", "48", "--fetchers", "4",
                       "--checkpoint-every", "1")

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "mover.cli", *map(str, args)],
                                env=env(lab), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    lab.inject("folder", "delay", rate=1.0, delay_ms=200)    # 47 canary reads: about 9 s
    first = start()
    wait(first, lambda: checkpoint_mode(repo) == "incremental")
    time.sleep(1.0)                                          # some canary blocks are read
    # only the incremental's own block (copied beside the canary), never a canary block
    assert checkpoint_mode(repo) == "incremental" and journaled_blocks(repo) <= {3}
    first.send_signal(signal.SIGKILL)
    first.wait()

    second = start()                                         # resumes; the canary fires
    wait(second, lambda: checkpoint_mode(repo) == "full" and journaled(repo) >= 4)
    # the full's journal started empty: the incremental's blocks were forgotten
    second.send_signal(signal.SIGKILL)
    second.wait()
    stored = journaled(repo)
    lab.clear_faults()

    run = mover(*args, lab=lab)                              # resumes the full
    assert run.code == 11, run.stderr
    result = run.result
    [disk] = result["disks"]
    assert result["resumed_from"] == result["backup_id"]
    assert disk["mode"] == "full" and disk["cbt_suspect"] is True
    assert disk["resumed_blocks"] == stored and disk["canary_blocks"] == 0
    assert "KB 2090639" in disk["reason"]
    frozen = snapshot_digests(lab, vm, result["snapshot"])
    assert restore_sha256(repo, result["backup_id"], KEY, tmp_path / "o.img") == frozen[KEY]
    proved_clean(lab, vm, repo)
    matrix("lossy CBT; SIGKILL during the canary, then during the full it started",
           f"exit 11; no canary block journaled; resume kept the full ({stored} blocks "
           "stored before); restore identical")
