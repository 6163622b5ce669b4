"""Restore targets against the lab's backups: standard output is the snapshot's image byte
for byte, and a differential restore from backup 1 to backup 3 writes exactly the blocks
whose index entries differ and yields backup 3's image."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from mover.repo import Repository
from mover_lab import Lab

from .runner import backup, mover, snapshot_digests

MiB = 1 << 20
KEY = 2000


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_stdout_and_differential_restores_of_lab_backups(
        lab: Lab, unique_name: Callable[[str], str], tmp_path: Path) -> None:
    lab.configure(snapshotDigests=True)
    name = unique_name("vm")
    capacity = 40 * MiB
    lab.create_vm(name, [{"capacity": capacity, "type": "thin"}])
    rng = random.Random(3)
    repo = tmp_path / "repo"
    results = []
    for _ in range(3):
        for _ in range(4):
            lab.write(name, KEY, rng.randrange(0, capacity - 200_000), rng.randbytes(200_000))
        results.append(backup(lab, name, repo))
    images = [snapshot_digests(lab, name, r["snapshot"])[KEY] for r in results]
    b1, b3 = results[0]["backup_id"], results[2]["backup_id"]

    stdout = subprocess.run([sys.executable, "-m", "mover.cli", "restore", "--repo", str(repo),
                             "--backup", b3, "--disk", str(KEY), "--output", "-"],
                            capture_output=True, timeout=300, check=True)
    assert hashlib.sha256(stdout.stdout).hexdigest() == images[2]

    out = tmp_path / "disk.img"
    assert mover("restore", "--repo", repo, "--backup", b1, "--disk", str(KEY),
                 "--output", out).code == 0
    assert sha256(out) == images[0]
    r = Repository.open(repo, create=False)
    i1, i3 = (r.read_index(r.get_backup(b), KEY) for b in (b1, b3))
    differing = [b for b in range(len(i1)) if i1.get(b) != i3.get(b)]
    assert 0 < len(differing) < len(i1) // 2
    run = mover("restore", "--repo", repo, "--backup", b3, "--disk", str(KEY), "--output", out,
                "--base", b1, "--verify-base", "--json")
    assert run.code == 0, run.stderr
    assert run.result["blocks_written"] == len(differing)
    assert run.result["bytes_written"] == len(differing) * i1.block_size
    assert run.result["verified_blocks"] == 16
    assert sha256(out) == images[2]
