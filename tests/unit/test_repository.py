"""The repository: layout, config, commit protocol, listing, verify and clean_stale.

Most tests run on the memory store (``mem``); those about files run on a directory."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from mover.errors import IntegrityError, NotFoundError, RepositoryError
from mover.index import FixedIndex
from mover.repo import (
    BackupRecord,
    DiskRecord,
    MemoryLocks,
    MemoryStore,
    Repository,
    layout,
)

BS = 4096
VM = "5003a1b2-0000-4000-8000-000000000001"


def disk(key: int = 2000, capacity: int = 3 * BS + 100) -> DiskRecord:
    return DiskRecord(
        key=key, label="Hard disk 1", uuid="6000C29a", capacity=capacity, file="[ds] vm/vm.vmdk",
        change_id="52 1a/4", mode="full", reason="no previous backup", block_size=BS,
        changed_bytes=capacity, bytes_read=capacity, bytes_stored=0, blocks=4, zero_blocks=1,
        new_chunks=3, dedup_chunks=0, seconds=0.5,
    )


def record(backup_id: str, disks: list[DiskRecord], created: str = "2026-11-25T02:15:00Z",
           vm: str = VM) -> BackupRecord:
    return BackupRecord(
        id=backup_id, vm_name="web01", vm_instance_uuid=vm, vm_moref="vm-42", created=created,
        finished=created, parent=None, snapshot={"name": "mover-1", "moref": "snapshot-7"},
        disks=disks,
    )


def store_disk(repo: Repository, blocks: list[bytes | None], capacity: int) -> FixedIndex:
    """Store blocks as the pipeline would and return the filled index."""
    index = FixedIndex(capacity, BS)
    for n, data in enumerate(blocks):
        if data is None:
            continue
        digest = repo.chunks.digest(data)
        repo.chunks.put(digest, data)
        index.set(n, digest)
    repo.chunks.sync()
    return index


def backup(repo: Repository, backup_id: str, created: str = "2026-11-25T02:15:00Z",
           vm: str = VM) -> tuple[BackupRecord, FixedIndex]:
    blocks: list[bytes | None] = [b"a" * BS, None, os.urandom(BS), b"c" * 100]
    index = store_disk(repo, blocks, 3 * BS + 100)
    rec = record(backup_id, [disk()], created, vm)
    with repo.begin(vm, backup_id) as pending:
        pending.write_index(2000, index)
        pending.commit(rec)
    return rec, index


@pytest.fixture
def repo() -> Repository:
    return Repository.on(MemoryStore(), MemoryLocks(), block_size=BS)


@pytest.fixture
def local(tmp_path: Path) -> Repository:
    return Repository.open(tmp_path / "repo", block_size=BS)


def test_layout_and_config(local: Repository) -> None:
    root = Path(local.location)
    backup(local, "b1")
    names = sorted(p.name for p in root.iterdir())
    assert names == ["backups", "config.json", "index", "locks", "packs", "tmp"]
    config = json.loads((root / "config.json").read_text())
    assert config == {"format": "mover-repository", "version": 2, "block_size": BS,
                      "hash": "sha256", "compression": "zstd", "level": 3,
                      "id": local.config.id}
    assert len(local.config.id) == 32
    again = Repository.open(root)
    assert again.config == local.config
    with pytest.raises(RepositoryError, match="block size 4096, not 8192"):
        Repository.open(root, block_size=8192)
    assert list((root / "tmp").iterdir()) == []


def test_open_refuses_missing_and_foreign(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="no mover repository"):
        Repository.open(tmp_path / "absent", create=False)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "photo.jpg").write_bytes(b"")
    with pytest.raises(RepositoryError, match="not empty"):
        Repository.open(tmp_path / "foreign")
    assert Repository.open(tmp_path / "new").config.block_size == 1048576


CONFIG_KEYS = '"hash": "sha256", "compression": "zstd", "level": 3, "id": "x"'


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is damaged"),
        ('{"format": "other", "version": 2}', "does not describe a mover-repository"),
        ('{"format": "mover-repository", "version": 3}', "has format version 3"),
        ('{"format": "mover-repository", "version": 1, "block_size": 4096}',
         "format version 1 .one file per chunk.*new repository"),
        ('{"format": "mover-repository", "version": 2}', "lacks the key 'block_size'"),
        ('{"format": "mover-repository", "version": 2, "block_size": "1M", ' + CONFIG_KEYS
         + "}", "block_size must be a int"),
        ('{"format": "mover-repository", "version": 2, "block_size": 1000, ' + CONFIG_KEYS
         + "}", "not a power of two"),
    ],
    ids=["not-json", "other-format", "newer-version", "version-1", "missing-key",
         "wrong-type", "bad-block"],
)
def test_config_damage(repo: Repository, content: str, message: str) -> None:
    repo.store.put(layout.CONFIG, content.encode(), replace=True)
    with pytest.raises(RepositoryError, match=message) as info:
        Repository.on(repo.store, repo.locks)
    assert "config.json" in str(info.value)


def test_commit_is_atomic(repo: Repository) -> None:
    index = store_disk(repo, [b"x" * BS], BS)
    pending = repo.begin(VM, "20261125T021500Z-aaaaaa")
    pending.write_index(2000, index)
    assert repo.list_backups() == []
    assert repo.latest(VM) is None
    with pytest.raises(NotFoundError, match="mover list"):
        repo.get_backup("20261125T021500Z-aaaaaa")
    rec = record("20261125T021500Z-aaaaaa", [disk(capacity=BS)])
    pending.commit(rec)
    assert [r.id for r in repo.list_backups()] == ["20261125T021500Z-aaaaaa"]
    got = repo.get_backup("20261125T021500Z-aaaaaa")
    assert got.to_json() == rec.to_json()
    assert repo.read_index(got, 2000) == index
    assert repo.locks.names() == []


def test_commit_requires_every_index(repo: Repository) -> None:
    with (
        repo.begin(VM, "b1") as pending,
        pytest.raises(RepositoryError, match=r"no index written for disks \[2000\]"),
    ):
        pending.commit(record("b1", [disk()]))
    assert list(repo.store.list(layout.BACKUPS)) == []


def test_abort_removes_everything(repo: Repository) -> None:
    with pytest.raises(RuntimeError), repo.begin(VM, "b1") as pending:
        pending.write_index(2000, FixedIndex(BS, BS))
        raise RuntimeError("copy failed")
    assert list(repo.store.list(layout.BACKUPS)) == []
    backup(repo, "b2")
    with pytest.raises(RepositoryError, match="already in use"):
        repo.begin(VM, "b2")
    running = repo.begin(VM, "b3")
    with pytest.raises(RepositoryError, match="already in use"):
        repo.begin(VM, "b3")  # fails at once instead of waiting for the running writer
    running.abort()


def test_list_latest_and_filter(repo: Repository) -> None:
    backup(repo, "b2", created="2026-11-25T03:00:00Z")
    backup(repo, "b1", created="2026-11-25T02:00:00Z")
    backup(repo, "c1", created="2026-11-25T04:00:00Z", vm="other-vm")
    assert [r.id for r in repo.list_backups()] == ["b1", "b2", "c1"]
    assert [r.id for r in repo.list_backups(VM)] == ["b1", "b2"]
    latest = repo.latest(VM)
    assert latest is not None and latest.id == "b2"


def test_backups_begun_in_one_second_are_ordered_by_the_microsecond(repo: Repository) -> None:
    """Two runs of a small VM can begin in one second; the later must be ``latest`` (an
    incremental builds on it; a canary's corrected full would be passed over otherwise),
    whatever the random part of the ids. A record of an older mover (the second alone)
    sorts by its time too, not by its string ("00Z" > "00.5Z" as text)."""
    backup(repo, "20261125T021500Z-ffffff", created="2026-11-25T02:15:00.100000Z")
    backup(repo, "20261125T021500Z-000000", created="2026-11-25T02:15:00.900000Z")
    backup(repo, "20261125T021500Z-eeeeee", created="2026-11-25T02:15:00Z")
    assert [r.id for r in repo.list_backups(VM)] == [
        "20261125T021500Z-eeeeee", "20261125T021500Z-ffffff", "20261125T021500Z-000000"]
    latest = repo.latest(VM)
    assert latest is not None and latest.id == "20261125T021500Z-000000"


def test_a_record_with_an_unreadable_time_is_refused_by_name(repo: Repository) -> None:
    with pytest.raises(RepositoryError, match="created 'yesterday' is not an ISO 8601 time"):
        BackupRecord.from_json({**record("b1", [disk()]).to_json(), "created": "yesterday"},
                               "backup b1")


def test_names_are_checked(repo: Repository) -> None:
    for bad in ["../x", "", ".hidden", "a/b"]:
        with pytest.raises(RepositoryError, match="not a valid name"):
            repo.begin(VM, bad)


def test_new_backup_ids_sort_and_differ() -> None:
    ids = [Repository.new_backup_id() for _ in range(200)]
    assert len(set(ids)) == 200
    assert all(len(i) == 23 and i[8] == "T" and i[15:17] == "Z-" for i in ids)


def test_read_index_damage_names_the_object(repo: Repository) -> None:
    rec, _ = backup(repo, "b1")
    name = layout.disk_index(VM, "b1", 2000)
    data = bytearray(repo.store.get(name))
    data[-1] ^= 0xFF
    repo.store.put(name, bytes(data), replace=True)
    with pytest.raises(IntegrityError, match=name):
        repo.read_index(rec, 2000)
    repo.store.delete(name)
    with pytest.raises(IntegrityError, match="missing"):
        repo.read_index(rec, 2000)


def flip_chunk(repo: Repository, digest: bytes) -> None:
    """Flip the last byte of one chunk inside its pack."""
    pack_id, offset, length = repo.chunks.locate(digest)  # type: ignore[misc]
    name = layout.pack(pack_id)
    data = bytearray(repo.store.get(name))
    data[offset + length - 1] ^= 1
    repo.store.put(name, bytes(data), replace=True)


def test_verify_names_damaged_chunks_with_backup_disk_and_offset(repo: Repository) -> None:
    _, index = backup(repo, "b1")
    assert repo.verify() == [] and repo.verify(read_data=True) == []
    first = index.get(2)
    assert first is not None
    flip_chunk(repo, first)
    assert repo.verify() == []                                # found only by reading data
    from mover.repo.verify import verify
    (problem,) = verify(repo, read_data=True)
    assert problem.digest == first.hex()
    assert problem.needed_by == [{"backup": "b1", "vm": "web01", "disk": 2000,
                                  "offsets": [2 * BS]}]
    assert f"backup b1 disk 2000 at offset {2 * BS}" in problem.message
    assert verify(repo, read_data=True, subset=(1, 2)) + verify(
        repo, read_data=True, subset=(2, 2)) == [problem]    # the subsets split the reading


def test_verify_finds_a_missing_pack(repo: Repository) -> None:
    backup(repo, "b1")
    for name in list(repo.store.list(layout.PACKS)):
        repo.store.delete(name)
    problems = repo.verify()
    assert len(problems) == 3 and all("is missing" in p and "backup b1" in p for p in problems)


def test_verify_reports_damaged_record(repo: Repository) -> None:
    backup(repo, "b1")
    repo.store.put(layout.record(VM, "b1"), b"{", replace=True)
    problems = repo.verify()
    assert len(problems) == 1 and "backup.json is damaged" in problems[0]
    with pytest.raises(IntegrityError):
        repo.list_backups()


def test_read_block_round_trip(repo: Repository) -> None:
    _, index = backup(repo, "b1")
    digest = index.get(0)
    assert digest is not None
    assert repo.read_block(digest) == b"a" * BS


def test_remove_backup_leaves_the_others(repo: Repository) -> None:
    first, _ = backup(repo, "b1")
    backup(repo, "b2")
    repo.remove_backup(first)
    assert [r.id for r in repo.list_backups()] == ["b2"]
    assert all("/b1/" not in n for n in repo.store.list(layout.BACKUPS))
    assert repo.verify(read_data=True) == []


def test_clean_stale(local: Repository) -> None:
    root = Path(local.location)
    old = time.time() - 7200
    backup(local, "done")
    # a crashed writer: pending objects and a temporary, both old, no lock held
    crashed = root / "backups" / VM / "crashed"
    crashed.mkdir()
    (crashed / "disk-2000.idx").write_bytes(b"partial")
    temp = root / "tmp" / ".x.tmp"
    temp.write_bytes(b"partial")
    fresh_temp = root / "tmp" / ".y.tmp"
    fresh_temp.write_bytes(b"in flight")
    # a running writer whose files are just as old
    running = local.begin(VM, "running")
    running.write_index(2000, FixedIndex(BS, BS))
    directory = root / "backups" / VM / "running"
    for path in [crashed / "disk-2000.idx", temp, directory / "disk-2000.idx"]:
        os.utime(path, (old, old))
    removed = local.clean_stale()
    assert sorted(removed) == sorted([f"backups/{VM}/crashed/", "tmp/.x.tmp"])
    assert not crashed.exists() and not temp.exists() and fresh_temp.exists()
    assert directory.exists()
    running.commit(record("running", [disk(capacity=BS)]))
    assert [r.id for r in local.list_backups()] == ["done", "running"]
    assert local.clean_stale() == []
