"""Where a disk's bytes come from: the file its descriptor names (not a guessed name), and a
full that reads every byte without asking CBT (``--read-all``)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from mover_lab import Lab

from .runner import backup, restore_sha256, snapshot_digests

MiB = 1 << 20
KEY = 2000


def test_the_flat_file_is_the_one_the_descriptor_names_and_its_read_is_retried(
        lab: Lab, unique_name: Callable[[str], str], tmp_path: Path) -> None:
    lab.configure(snapshotDigests=True)
    name = unique_name("renamed")
    lab.create_vm(name, [{"capacity": 32 * MiB, "type": "thin",
                          "flatName": "data-moved-by-an-admin.vmdk"}], cbt=True)
    lab.write(name, KEY, 0, random.Random(6).randbytes(8 * MiB))
    lab.reset_counters()
    lab.inject("folder", "status503", count=2, match=f"{name}/{name}.vmdk")
    result = backup(lab, name, tmp_path / "repo")
    folder = lab.counters()["folder"]
    assert folder[f"{name}/data-moved-by-an-admin.vmdk"]["bytes"] == 8 * MiB
    assert folder[f"{name}/{name}.vmdk"]["requests"] == 3   # the descriptor, after two 503s
    assert f"{name}/{name}-flat.vmdk" not in folder                # never guessed
    frozen = snapshot_digests(lab, name, result["snapshot"])[KEY]
    assert restore_sha256(tmp_path / "repo", result["backup_id"], KEY,
                          tmp_path / "o.img") == frozen


def test_read_all_reads_every_byte_without_asking_cbt(
        lab: Lab, unique_name: Callable[[str], str], tmp_path: Path) -> None:
    lab.configure(snapshotDigests=True)
    name = unique_name("all")
    lab.create_vm(name, [{"capacity": 32 * MiB, "type": "thin"}], cbt=True)
    lab.write(name, KEY, 0, random.Random(7).randbytes(4 * MiB))
    repo = tmp_path / "repo"
    backup(lab, name, repo)
    lab.write(name, KEY, 16 * MiB, b"z" * MiB)
    lab.reset_counters()
    result = backup(lab, name, repo, "--read-all")
    [disk] = result["disks"]
    assert disk["mode"] == "full" and "--read-all" in disk["reason"]
    assert "QueryChangedDiskAreas" not in lab.counters()["soap"]
    flat = lab.vm(name)["disks"][0]["flatFile"]
    assert lab.counters()["folder"][flat]["bytes"] == 32 * MiB      # every byte
    assert disk["bytes_read"] == 32 * MiB
    assert disk["zero_blocks"] == 27 and disk["new_chunks"] == 1    # zeros never stored
    assert disk["dedup_chunks"] == 4                                # the rest was known
    frozen = snapshot_digests(lab, name, result["snapshot"])[KEY]
    assert restore_sha256(repo, result["backup_id"], KEY, tmp_path / "o.img") == frozen
