"""Full and incremental backups end to end: real pyvmomi SOAP and real HTTP against the lab.

Every restore is compared (SHA-256) with the image the lab froze for the backup's snapshot;
bytes read are compared with the lab's /folder counters.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from mover.extents import Extent, align, total
from mover.repo import ChunkCodec, LocalStore, PackedChunks
from mover_lab import Lab

from .runner import backup, mover, mover_snapshots, restore_sha256, snapshot_digests

MiB = 1 << 20
THIN, EAGER = 2000, 2001


def scattered_writes(lab: Lab, vm: str, key: int, capacity: int, count: int,
                     rng: random.Random) -> list[Extent]:
    """Guest writes of 64 KiB to 1 MiB at random offsets; half random bytes, half text."""
    written = []
    for _ in range(count):
        length = rng.randrange(64 * 1024, MiB + 1)
        offset = rng.randrange(0, capacity - length)
        if rng.random() < 0.5:
            data = rng.randbytes(length)
        else:
            data = (f"log line {rng.random()} " * (length // 20 + 1)).encode()[:length]
        lab.write(vm, key, offset, data)
        written.append(Extent(offset, length))
    return written


def folder_bytes(lab: Lab, vm: str, key: int) -> int:
    flat = next(d["flatFile"] for d in lab.vm(vm)["disks"] if d["key"] == key)
    return int(lab.counters()["folder"].get(flat, {}).get("bytes", 0))


def disk_result(result: dict, key: int) -> dict:
    return next(d for d in result["disks"] if d["key"] == key)


@pytest.fixture
def two_disk_vm(lab: Lab, unique_name: Callable[[str], str]) -> str:
    lab.configure(snapshotDigests=True)
    name = unique_name("vm")
    lab.create_vm(name, [{"capacity": 256 * MiB, "type": "thin"},
                         {"capacity": 32 * MiB, "type": "eagerZeroedThick"}])
    return name


def test_full_then_three_incrementals_restore_bit_exact(lab: Lab, two_disk_vm: str,
                                                        tmp_path: Path) -> None:
    vm, repo, rng = two_disk_vm, tmp_path / "repo", random.Random(7)
    lab.configure(maxAreasPerReply=3)  # a single QueryChangedDiskAreas call would miss areas
    thin_allocated = scattered_writes(lab, vm, THIN, 256 * MiB, 12, rng)
    scattered_writes(lab, vm, EAGER, 32 * MiB, 4, rng)

    lab.reset_counters()
    full = backup(lab, vm, repo)
    # The full of a thin disk reads only its allocated areas, rounded out to blocks.
    assert disk_result(full, THIN)["mode"] == "full"
    assert folder_bytes(lab, vm, THIN) == total(align(thin_allocated, MiB, 256 * MiB))
    # An eager-zeroed disk reports the whole disk as allocated.
    assert folder_bytes(lab, vm, EAGER) == 32 * MiB
    backups = [full]

    for round_ in range(3):
        changed = {THIN: scattered_writes(lab, vm, THIN, 256 * MiB, 5 + round_, rng),
                   EAGER: scattered_writes(lab, vm, EAGER, 32 * MiB, 2, rng)}
        lab.reset_counters()
        incr = backup(lab, vm, repo)
        assert incr["parent"] == backups[-1]["backup_id"]
        for key, capacity in ((THIN, 256 * MiB), (EAGER, 32 * MiB)):
            disk = disk_result(incr, key)
            assert disk["mode"] == "incremental", disk["reason"]
            assert "changes since" in disk["reason"]
            whole_blocks = total(align(changed[key], MiB, capacity))
            read = folder_bytes(lab, vm, key)
            assert disk["bytes_read"] == read                  # changes and canary blocks
            unchanged = capacity // MiB - whole_blocks // MiB
            assert disk["canary_blocks"] == min(32, unchanged) and not disk["cbt_suspect"]
            # sub-block fetch: the changed 64 KiB pieces, never more than whole blocks
            fetched = read - disk["canary_bytes"]
            assert total(align(changed[key], 64 * 1024, capacity)) <= fetched <= whole_blocks
        backups.append(incr)

    # Every point restores to exactly the bytes its snapshot held.
    for result in backups:
        frozen = snapshot_digests(lab, vm, result["snapshot"])
        for key in (THIN, EAGER):
            got = restore_sha256(repo, result["backup_id"], key, tmp_path / "out.img")
            assert got == frozen[key], f"backup {result['backup_id']} disk {key}"
    assert mover_snapshots(lab, vm) == []


def test_zero_blocks_are_not_stored_and_restore_as_holes(lab: Lab, two_disk_vm: str,
                                                         tmp_path: Path) -> None:
    vm, repo = two_disk_vm, tmp_path / "repo"
    lab.write(vm, THIN, 0, b"\0" * (4 * MiB))          # allocated, but zeros
    lab.write(vm, THIN, 8 * MiB, b"x" * MiB)
    result = backup(lab, vm, repo)
    thin = disk_result(result, THIN)
    assert thin["zero_blocks"] == 4 and thin["new_chunks"] == 1
    # one chunk for the thin disk's "x" block; the eager disk is all zeros
    assert len(PackedChunks(LocalStore(repo), ChunkCodec(3))) == 1
    out = tmp_path / "thin.img"
    assert mover("restore", "--repo", repo, "--backup", result["backup_id"], "--disk",
                 str(THIN), "--output", out).code == 0
    assert out.stat().st_size == 256 * MiB
    assert out.stat().st_blocks * 512 <= 2 * MiB  # sparse: only the data block is allocated
    with out.open("rb") as f:
        f.seek(8 * MiB)
        assert f.read(MiB) == b"x" * MiB


def test_identical_data_in_two_vms_is_stored_once(lab: Lab, unique_name: Callable[[str], str],
                                                  tmp_path: Path) -> None:
    repo, data = tmp_path / "repo", random.Random(3).randbytes(6 * MiB)
    vms = [unique_name("twin"), unique_name("twin")]
    for vm in vms:
        lab.create_vm(vm, [{"capacity": 64 * MiB, "type": "thin"}])
        lab.write(vm, THIN, 16 * MiB, data)
    first, second = (backup(lab, vm, repo) for vm in vms)
    assert disk_result(first, THIN)["new_chunks"] == 6
    assert disk_result(second, THIN)["new_chunks"] == 0
    assert disk_result(second, THIN)["dedup_chunks"] == 6
    assert disk_result(second, THIN)["bytes_stored"] == 0


def test_a_vm_with_cbt_already_on_needs_no_stun_cycle(lab: Lab,
                                                      unique_name: Callable[[str], str],
                                                      tmp_path: Path) -> None:
    vm = unique_name("vm")
    lab.create_vm(vm, [{"capacity": 16 * MiB, "type": "thin"}], cbt=True)
    result = backup(lab, vm, tmp_path / "repo")
    assert "cbt_enable_seconds" not in result["snapshot"]
    history = lab.snapshot_history(vm)
    assert [s["name"] for s in history] == [result["snapshot"]["name"]]


def test_backups_of_several_vms_write_one_repository_at_once(
        lab: Lab, unique_name: Callable[[str], str], tmp_path: Path) -> None:
    import subprocess
    import sys

    from .runner import backup_args, env

    repo, shared = tmp_path / "repo", random.Random(9).randbytes(4 * MiB)
    vms = [unique_name("par") for _ in range(3)]
    for i, vm in enumerate(vms):
        lab.create_vm(vm, [{"capacity": 64 * MiB, "type": "thin"}])
        lab.write(vm, THIN, 0, shared)                       # the same in every VM
        lab.write(vm, THIN, 32 * MiB, random.Random(i).randbytes(4 * MiB))
    procs = [subprocess.Popen([sys.executable, "-m", "mover.cli",
                               *map(str, backup_args(lab, vm, repo))], env=env(lab),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for vm in vms]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert {r["vm"] for r in results} == set(vms)
    # 4 own blocks per VM; the 4 shared blocks once per writer at most: writers running at
    # the same moment cannot see each other's unwritten packs (gc removes duplicates)
    new = sum(disk_result(r, THIN)["new_chunks"] for r in results)
    assert 4 + 3 * 4 <= new <= 3 * 4 + 3 * 4
    for vm, result in zip(vms, results, strict=True):
        got = restore_sha256(repo, result["backup_id"], THIN, tmp_path / "o.img")
        assert got == lab.live_sha256(vm, THIN)
    assert mover("verify", "--repo", repo, "--read-data").code == 0
    # a later backup of any of them sees every chunk: nothing new is stored
    again = backup(lab, vms[0], repo, "--full")
    assert disk_result(again, THIN)["new_chunks"] == 0


@pytest.mark.parametrize("block_mib", [8, 2], ids=["blocks-larger-than-a-read", "2-MiB-blocks"])
def test_a_new_repository_with_another_block_size(lab: Lab, unique_name: Callable[[str], str],
                                                  tmp_path: Path, block_mib: int) -> None:
    vm, repo = unique_name("bs"), tmp_path / "repo"
    lab.create_vm(vm, [{"capacity": 64 * MiB + 1536, "type": "thin"}])  # a short last block
    lab.write(vm, THIN, 3 * MiB, random.Random(2).randbytes(20 * MiB))
    lab.write(vm, THIN, 64 * MiB, b"tail" * 384)
    result = backup(lab, vm, repo, "--block-size", str(block_mib))
    assert json.loads((repo / "config.json").read_text())["block_size"] == block_mib * MiB
    got = restore_sha256(repo, result["backup_id"], THIN, tmp_path / "o.img")
    assert got == lab.live_sha256(vm, THIN)


def test_a_second_run_for_one_vm_refuses_and_leaves_the_first_alone(
        lab: Lab, unique_name: Callable[[str], str], tmp_path: Path) -> None:
    import subprocess
    import sys

    from .runner import backup_args, env

    vm, repo = unique_name("twice"), tmp_path / "repo"
    lab.create_vm(vm, [{"capacity": 64 * MiB, "type": "thin"}], cbt=True)
    lab.write(vm, THIN, 0, random.Random(4).randbytes(24 * MiB))
    lab.inject("folder", "delay", rate=1.0, delay_ms=100)   # both copy at the same time
    procs = [subprocess.Popen([sys.executable, "-m", "mover.cli",
                               *map(str, backup_args(lab, vm, repo, "--fetchers", "1"))],
                              env=env(lab), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    runs = [(p.wait(timeout=120), json.loads(p.communicate()[0].strip().splitlines()[-1]))
            for p in procs]
    # the second snapshot stacks on the first: its disks are deltas /folder cannot read
    assert sorted(code for code, _ in runs) == [0, 7]
    [done] = [result for code, result in runs if code == 0]
    [refused] = [result for code, result in runs if code == 7]
    assert "another mover backup of this VM may be running" in refused["error"]["message"]
    assert done["orphans_removed"] == []                      # neither took the other's
    assert mover_snapshots(lab, vm) == []
    got = restore_sha256(repo, done["backup_id"], THIN, tmp_path / "o.img")
    assert got == lab.live_sha256(vm, THIN)
