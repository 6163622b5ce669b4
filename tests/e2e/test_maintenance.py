"""Keeping a repository: forget, gc, verify and repair through the CLI, against the lab."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mover.repo import Repository, layout
from mover_lab import Lab

from .runner import backup, backup_args, env, mover, restore_sha256, snapshot_digests

MiB = 1 << 20
KEY = 2000


def chunks_in(repo: Path) -> set[bytes]:
    """Digests of every chunk in the repository's indexed packs."""
    return Repository.open(repo, create=False).chunks._table.digests()


def needed_by_backups(repo: Path) -> set[bytes]:
    r = Repository.open(repo, create=False)
    return {d for rec in r.list_backups() for disk in rec.disks
            for d in r.read_index(rec, disk.key).digests()}


def ten_backups(lab: Lab, vm: str, repo: Path) -> dict[str, str]:
    """Ten backups of one 64 MiB disk; each run rewrites 4 of its 16 data blocks (some with
    data an earlier run had, so chunks are shared across backups). backup id -> image
    SHA-256 the lab froze."""
    lab.configure(snapshotDigests=True)
    lab.create_vm(vm, [{"capacity": 64 * MiB, "type": "thin"}])
    rng, pool = random.Random(8), [random.Random(i).randbytes(MiB) for i in range(12)]
    frozen = {}
    for _ in range(10):
        for block in rng.sample(range(16), 4):
            lab.write(vm, KEY, block * MiB, rng.choice(pool))
        result = backup(lab, vm, repo, "--checkpoint-every", "1")   # many small packs
        frozen[result["backup_id"]] = snapshot_digests(lab, vm, result["snapshot"])[KEY]
    return frozen


def test_ten_backups_forget_gc_then_every_kept_backup_restores(
        lab: Lab, unique_name: Callable[[str], str], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    frozen = ten_backups(lab, unique_name("keep"), repo)
    before = chunks_in(repo)
    dry = mover("forget", "--repo", repo, "--keep-last", "3", "--keep-hourly", "1",
                "--dry-run", "--json")
    assert dry.code == 0 and len(dry.result["forgotten"]) == 7
    assert sorted(frozen) == sorted(b["id"] for b in json.loads(
        mover("list", "--repo", repo, "--json").stdout)["backups"])     # nothing removed
    run = mover("forget", "--repo", repo, "--keep-last", "3", "--keep-hourly", "1", "--json")
    kept = [k["id"] for k in run.result["kept"]]
    assert run.code == 0 and kept == sorted(frozen)[-3:][::-1]       # newest first
    assert run.result["kept"][0]["reasons"][0] == "last"
    needed = needed_by_backups(repo)
    assert needed < before                                   # some chunks became garbage
    gc = mover("gc", "--repo", repo, "--repack-threshold", "0", "--json")
    assert gc.code == 0, gc.stderr
    assert chunks_in(repo) == needed                         # exactly the garbage is gone
    assert gc.result["chunks_removed"] == len(before) - len(needed)
    assert gc.result["bytes_freed"] > 0
    for backup_id in kept:
        assert restore_sha256(repo, backup_id, KEY, tmp_path / "o.img") == frozen[backup_id]
    assert mover("verify", "--repo", repo, "--read-data").code == 0
    packs = len(list((repo / "packs").rglob("*")))
    assert mover("gc", "--repo", repo, "--json").result["packs_deleted"] == 0
    assert len(list((repo / "packs").rglob("*"))) == packs


def test_gc_waits_for_a_backup_that_deduplicated_against_forgotten_data(
        lab: Lab, unique_name: Callable[[str], str], tmp_path: Path) -> None:
    """Block 0 holds X in backup 1, Y in backup 2; the guest writes X back, so backup 3
    deduplicates against backup 1's chunk. Backup 1 is forgotten and gc starts while backup
    3 is copying (slowed down): gc must wait, and keep X."""
    vm, repo = unique_name("race"), tmp_path / "repo"
    lab.configure(snapshotDigests=True)
    lab.create_vm(vm, [{"capacity": 64 * MiB, "type": "thin"}])
    x, y = random.Random(1).randbytes(MiB), random.Random(2).randbytes(MiB)
    lab.write(vm, KEY, 0, x)
    lab.write(vm, KEY, 8 * MiB, random.Random(3).randbytes(40 * MiB))
    lab.write(vm, KEY, MiB, b"only in backup 1" * 65536)
    backup(lab, vm, repo)
    lab.write(vm, KEY, 0, y)
    lab.write(vm, KEY, MiB, b"later" * 209716)                # backup 1's block 1: garbage
    backup(lab, vm, repo)
    lab.write(vm, KEY, 0, x)
    for block in range(8, 48):                   # 10 reads of 4 MiB at 500 ms: 5 s to copy
        lab.write(vm, KEY, block * MiB, random.Random(block + 10).randbytes(MiB))
    lab.inject("folder", "delay", rate=1.0, delay_ms=500)
    third = subprocess.Popen([sys.executable, "-m", "mover.cli",
                              *map(str, backup_args(lab, vm, repo, "--fetchers", "1"))],
                             env=env(lab), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    assert third.stdout is not None
    for line in third.stdout:
        if json.loads(line)["event"] == "disk_started":
            break
    assert mover("forget", "--repo", repo, "--keep-last", "1").code == 0
    gc = subprocess.Popen([sys.executable, "-m", "mover.cli", "gc", "--repo", str(repo),
                           "--repack-threshold", "0", "--json"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    assert gc.poll() is None and third.poll() is None         # gc waits for the backup
    out, err = third.communicate(timeout=120)
    lab.clear_faults()
    assert third.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    gc_out, gc_err = gc.communicate(timeout=60)
    assert gc.returncode == 0 and "waiting for the backups" in gc_err
    assert json.loads(gc_out)["chunks_removed"] == 1          # backup 1's block 1, not X
    frozen = snapshot_digests(lab, vm, result["snapshot"])[KEY]
    assert restore_sha256(repo, result["backup_id"], KEY, tmp_path / "o.img") == frozen
    assert mover("verify", "--repo", repo, "--read-data").code == 0


def test_gc_killed_at_random_points_leaves_a_repository_that_verifies_and_restores(
        lab: Lab, unique_name: Callable[[str], str], tmp_path: Path) -> None:
    master = tmp_path / "master"
    frozen = ten_backups(lab, unique_name("kill"), master)
    assert mover("forget", "--repo", master, "--keep-last", "2").code == 0
    kept = sorted(frozen)[-2:]
    rng = random.Random(11)
    for attempt in range(4):
        repo = tmp_path / f"repo{attempt}"
        shutil.copytree(master, repo)
        gc = subprocess.Popen([sys.executable, "-m", "mover.cli", "gc", "--repo", str(repo),
                               "--repack-threshold", "0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.2))
        gc.send_signal(signal.SIGKILL)
        gc.wait()
        assert mover("verify", "--repo", repo, "--read-data").code == 0, attempt
        for backup_id in kept:
            got = restore_sha256(repo, backup_id, KEY, tmp_path / "o.img")
            assert got == frozen[backup_id], (attempt, backup_id)
        assert mover("gc", "--repo", repo, "--repack-threshold", "0").code == 0  # finishes
        assert chunks_in(repo) == needed_by_backups(repo)


def test_a_flipped_byte_in_a_pack_is_named_and_its_disk_does_not_restore(
        lab: Lab, unique_name: Callable[[str], str], tmp_path: Path) -> None:
    vm, repo = unique_name("rot"), tmp_path / "repo"
    lab.create_vm(vm, [{"capacity": 64 * MiB, "type": "thin"}])
    lab.write(vm, KEY, 5 * MiB, random.Random(4).randbytes(3 * MiB))
    result = backup(lab, vm, repo)
    r = Repository.open(repo, create=False)
    index = r.read_index(r.get_backup(result["backup_id"]), KEY)
    digest = index.get(6)
    assert digest is not None
    where = r.chunks.locate(digest)
    assert where is not None and where[0] is not None
    pack = repo / layout.pack(where[0])
    data = bytearray(pack.read_bytes())
    data[where[1] + where[2] // 2] ^= 0x40
    pack.write_bytes(bytes(data))
    assert mover("verify", "--repo", repo).code == 0          # the structure is intact
    run = mover("verify", "--repo", repo, "--read-data", "--json")
    assert run.code == 10
    (problem,) = run.result["problems"]
    assert problem["digest"] == digest.hex()
    assert problem["needed_by"] == [{"backup": result["backup_id"], "vm": vm, "disk": KEY,
                                     "offsets": [6 * MiB]}]
    out = tmp_path / "out.img"
    restore = mover("restore", "--repo", repo, "--backup", result["backup_id"], "--disk",
                    str(KEY), "--output", out)
    assert restore.code == 10 and digest.hex() in restore.stderr
    assert not out.exists()


@pytest.mark.parametrize("loss", ["deleted", "damaged"])
def test_repair_index_rebuilds_indexes_from_the_packs(
        lab: Lab, unique_name: Callable[[str], str], tmp_path: Path, loss: str) -> None:
    vm, repo = unique_name("idx"), tmp_path / "repo"
    lab.configure(snapshotDigests=True)
    lab.create_vm(vm, [{"capacity": 64 * MiB, "type": "thin"}])
    lab.write(vm, KEY, 0, random.Random(5).randbytes(32 * MiB))
    result = backup(lab, vm, repo, "--checkpoint-every", "1")      # a pack a sync or so
    lost = sorted((repo / "index").iterdir())[:2]
    assert len(lost) == 2
    for name in lost:
        if loss == "deleted":
            name.unlink()
        else:
            name.write_bytes(b"rot")
    assert mover("verify", "--repo", repo).code == 10
    run = mover("repair", "index", "--repo", repo, "--json")
    assert run.code == 0 and sum("indexed pack" in d for d in run.result["done"]) == 2
    assert mover("verify", "--repo", repo, "--read-data").code == 0
    frozen = snapshot_digests(lab, vm, result["snapshot"])[KEY]
    assert restore_sha256(repo, result["backup_id"], KEY, tmp_path / "o.img") == frozen
