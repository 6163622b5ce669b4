"""Sub-block fetch end to end: an incremental reads only the changed 64 KiB pieces of a
block (the lab's /folder counters prove it), completes each block from the parent's chunk
(or zeros), and restores exactly the image the lab froze; a parent chunk that is missing or
damaged falls back to reading the block whole."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from mover import chunk
from mover.repo import LocalStore, Repository, layout
from mover.repo.packfile import Entry, decode_index, encode_index
from mover_lab import Lab

from .runner import backup, restore_sha256, snapshot_digests

MiB, KiB = 1 << 20, 1 << 10
KEY = 2000


def folder(lab: Lab, vm: str) -> dict[str, int]:
    flat = lab.vm(vm)["disks"][0]["flatFile"]
    return {k: int(v) for k, v in lab.counters()["folder"].get(flat, {}).items()}


@pytest.fixture
def seeded(lab: Lab, unique_name: Callable[[str], str], tmp_path: Path) -> tuple[str, Path]:
    """A VM with 16 MiB of data (blocks 0-15; blocks 16-31 never written) and its full."""
    lab.configure(snapshotDigests=True)
    vm, repo = unique_name("sub"), tmp_path / "repo"
    lab.create_vm(vm, [{"capacity": 32 * MiB, "type": "thin"}], cbt=True)
    lab.write(vm, KEY, 0, random.Random(2).randbytes(16 * MiB))
    backup(lab, vm, repo)
    return vm, repo


def test_only_the_changed_pieces_are_fetched(lab: Lab, seeded: tuple[str, Path],
                                             tmp_path: Path) -> None:
    vm, repo = seeded
    lab.write(vm, KEY, 2 * MiB + 100 * KiB, b"a" * 10)          # one 64 KiB piece
    lab.write(vm, KEY, 5 * MiB - 8 * KiB, b"b" * 16 * KiB)      # across blocks 4 and 5
    lab.write(vm, KEY, 9 * MiB, b"c" * 128 * KiB)               # two pieces at a block start
    lab.write(vm, KEY, 9 * MiB + 512 * KiB, b"d" * 4 * KiB)     # and one more in block 9
    lab.write(vm, KEY, 20 * MiB + 300 * KiB, b"e" * 4 * KiB)    # a zero block in the parent
    lab.write(vm, KEY, 12 * MiB, b"f" * MiB)                    # a whole block
    lab.reset_counters()
    result = backup(lab, vm, repo, "--no-canary")
    [disk] = result["disks"]
    assert disk["mode"] == "incremental"
    # 64 KiB + 2 x 64 KiB (one GET) + 128 KiB and 64 KiB (two GETs) + 64 KiB + 1 MiB whole
    assert folder(lab, vm) == {"requests": 6, "bytes": 7 * 64 * KiB + MiB}
    assert disk["bytes_read"] == 7 * 64 * KiB + MiB
    assert disk["merged_blocks"] == 5 and disk["refetched_blocks"] == 0
    frozen = snapshot_digests(lab, vm, result["snapshot"])
    assert restore_sha256(repo, result["backup_id"], KEY, tmp_path / "o.img") == frozen[KEY]


def lose_chunk(repo: Path, digest: bytes, damage: str) -> None:
    """``missing``: no pack index names the chunk any more; ``damaged``: a byte of it is
    flipped inside its pack."""
    store = LocalStore(repo)
    if damage == "damaged":
        where = Repository.open(repo, create=False).chunks.locate(digest)
        assert where is not None and where[0] is not None
        path = repo / layout.pack(where[0])
        data = bytearray(path.read_bytes())
        data[where[1] + where[2] - 1] ^= 0xFF
        path.write_bytes(bytes(data))
        return
    for name in list(store.list(layout.INDEX)):
        packs, rows = decode_index(store.get(name))
        if any(row[0] == digest for row in rows):
            kept = [(pack_id, [Entry(d, o, n) for d, p, o, n in rows
                               if p == number and d != digest])
                    for number, pack_id in enumerate(packs)]
            index_id, data = encode_index(kept)
            store.put(layout.index(index_id), data)
            store.delete(name)


@pytest.mark.parametrize("damage", ["missing", "damaged"])
def test_a_missing_or_damaged_parent_chunk_means_a_whole_block_read(
        lab: Lab, seeded: tuple[str, Path], tmp_path: Path, damage: str) -> None:
    vm, repo = seeded
    digest = chunk.digest(lab.read_live(vm, KEY, 6 * MiB, MiB))
    lose_chunk(repo, digest, damage)
    lab.write(vm, KEY, 6 * MiB + 64 * KiB, b"x" * 100)
    lab.write(vm, KEY, 7 * MiB + 64 * KiB, b"y" * 100)          # parent chunk intact
    lab.reset_counters()
    result = backup(lab, vm, repo, "--no-canary")
    [disk] = result["disks"]
    assert disk["refetched_blocks"] == 1 and disk["merged_blocks"] == 1
    assert folder(lab, vm)["bytes"] == disk["bytes_read"] == 2 * 64 * KiB + MiB
    frozen = snapshot_digests(lab, vm, result["snapshot"])
    assert restore_sha256(repo, result["backup_id"], KEY, tmp_path / "o.img") == frozen[KEY]
