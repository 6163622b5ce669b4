"""What a failed or killed backup leaves behind: no snapshot, no backup a later run trusts."""

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

from mover_lab import Lab

from .runner import backup, backup_args, committed, env, mover, mover_snapshots, restore_sha256

MiB = 1 << 20


@pytest.fixture
def vm(lab: Lab, unique_name: Callable[[str], str]) -> str:
    name = unique_name("vm")
    lab.create_vm(name, [{"capacity": 64 * MiB, "type": "thin"}])
    lab.write(name, 2000, 0, random.Random(1).randbytes(24 * MiB))
    return name



def test_sigkill_at_random_points_never_leaves_a_trusted_partial_backup(
        lab: Lab, vm: str, tmp_path: Path) -> None:
    repo, rng = tmp_path / "repo", random.Random(11)
    # 6 reads of 4 MiB, one at a time, 200 ms each: the copy takes over a second
    lab.inject("folder", "delay", rate=1.0, delay_ms=200)
    interrupted = 0
    for attempt in range(4):
        before = committed(repo)
        proc = subprocess.Popen([sys.executable, "-m", "mover.cli",
                                 *map(str, backup_args(lab, vm, repo, "--full", "--fetchers",
                                                       "1"))],
                                env=env(lab), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.2, 1.8))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        after = committed(repo)
        # either the kill came after the commit (a whole backup) or nothing was committed
        assert after == before or (after[:-1] == before and len(after) == len(before) + 1), \
            f"attempt {attempt}: {before} -> {after}"
        interrupted += after == before
    assert interrupted >= 2  # the seeded kill times land mid-run most of the time
    lab.clear_faults()
    result = backup(lab, vm, repo)
    # the next run removes the snapshots the killed runs left, and succeeds
    assert mover_snapshots(lab, vm) == []
    assert all(name.startswith("mover-") for name in result["orphans_removed"])
    assert mover("verify", "--repo", repo, "--read-data").code == 0
    live = lab.live_sha256(vm, 2000)
    assert restore_sha256(repo, result["backup_id"], 2000, tmp_path / "o.img") == live


def test_sigterm_removes_the_snapshot_and_commits_nothing(lab: Lab, vm: str,
                                                          tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    lab.inject("folder", "delay", rate=1.0, delay_ms=200)
    proc = subprocess.Popen([sys.executable, "-m", "mover.cli",
                             *map(str, backup_args(lab, vm, repo))],
                            env=env(lab), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 30
    for line in proc.stdout:  # type: ignore[union-attr]
        if json.loads(line)["event"] == "disk_started" or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert json.loads(out.strip().splitlines()[-1])["error"]["kind"] == "Interrupted"
    assert mover_snapshots(lab, vm) == []
    assert committed(repo) == []


@pytest.mark.parametrize(
    ("args", "password", "exit_code", "says"),
    [
        pytest.param(["--vm", "no-such-vm"], None, 5, "no VM 'no-such-vm'", id="unknown-vm"),
        pytest.param([], "Wr0ng-s3cret!", 4, "rejected user", id="wrong-password"),
    ],
)
def test_bad_input_gets_one_line_cause_and_status(lab: Lab, vm: str, tmp_path: Path,
                                                   args: list[str], password: str | None,
                                                   exit_code: int, says: str) -> None:
    argv = backup_args(lab, vm, tmp_path / "repo")
    if args:
        argv[argv.index("--vm") + 1] = args[1]
    environ = env(lab) | ({"MOVER_PASSWORD": password} if password else {})
    proc = subprocess.run([sys.executable, "-m", "mover.cli", *map(str, argv)], env=environ,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == exit_code
    assert says in proc.stderr
    assert "Traceback" not in proc.stderr
    if password:
        assert password not in proc.stdout + proc.stderr


def test_password_never_on_the_command_line_or_in_output(lab: Lab, vm: str,
                                                         tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(lab.password + "\n")
    run = mover("backup", "--server", lab.url, "--user", lab.user, "--password-file", secret,
                "--vm", vm, "--repo", tmp_path / "repo", "-v", "-v")
    assert run.code == 0, run.stderr
    assert f"password={lab.password}" not in run.stderr
    assert mover("backup", "--server", lab.url, "--user", lab.user, "--vm", vm,
                 "--repo", tmp_path / "repo").code == 2  # no password source at all
