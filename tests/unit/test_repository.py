"""The local repository: layout, config, commit protocol, listing, verify and clean_stale."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import zstandard

from mover import chunk
from mover.errors import IntegrityError, NotFoundError, RepositoryError
from mover.index import FixedIndex
from mover.repo import BackupRecord, DiskRecord, Repository

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
    comp = repo.compressor()
    for n, data in enumerate(blocks):
        if data is None:
            continue
        digest = chunk.digest(data)
        repo.chunks.put(digest, chunk.encode(data, comp))
        index.set(n, digest)
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
def repo(tmp_path: Path) -> Repository:
    return Repository.open(tmp_path / "repo", block_size=BS)


def test_layout_and_config(repo: Repository) -> None:
    names = sorted(p.name for p in repo.path.iterdir())
    assert names == ["backups", "chunks", "config.json", "locks", "tmp"]
    config = json.loads((repo.path / "config.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{32}", config.pop("id"))
    assert config == {"format": "mover-repository", "version": 1, "block_size": BS,
                      "hash": "sha256", "compression": "zstd", "level": 3}
    again = Repository.open(repo.path)
    assert again.config == repo.config
    with pytest.raises(RepositoryError, match="block size 4096, not 8192"):
        Repository.open(repo.path, block_size=8192)


def test_a_repository_from_before_ids_gets_one_once(repo: Repository) -> None:
    path = repo.path / "config.json"
    old = json.loads(path.read_text())
    del old["id"]
    path.write_text(json.dumps(old))
    first = Repository.open(repo.path).config.id
    assert re.fullmatch(r"[0-9a-f]{32}", first) and first != repo.config.id
    assert json.loads(path.read_text()) == {**old, "id": first}   # nothing else changed
    assert Repository.open(repo.path).config.id == first            # stable from now on


def test_open_refuses_missing_and_foreign(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="no mover repository"):
        Repository.open(tmp_path / "absent", create=False)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "photo.jpg").write_bytes(b"")
    with pytest.raises(RepositoryError, match="not empty"):
        Repository.open(tmp_path / "foreign")
    assert Repository.open(tmp_path / "new").config.block_size == 1048576


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is damaged"),
        ('{"format": "other", "version": 1}', "does not describe a mover-repository"),
        ('{"format": "mover-repository", "version": 2}', "has format version 2"),
        ('{"format": "mover-repository", "version": 1}', "lacks the key 'block_size'"),
        ('{"format": "mover-repository", "version": 1, "block_size": "1M", "hash": "sha256",'
         ' "compression": "zstd", "level": 3}', "block_size must be a int"),
        ('{"format": "mover-repository", "version": 1, "block_size": 1000, "hash": "sha256",'
         ' "compression": "zstd", "level": 3}', "not a power of two"),
    ],
    ids=["not-json", "other-format", "newer-version", "missing-key", "wrong-type", "bad-block"],
)
def test_config_damage(repo: Repository, content: str, message: str) -> None:
    (repo.path / "config.json").write_text(content)
    with pytest.raises(RepositoryError, match=message) as info:
        Repository.open(repo.path)
    assert str(repo.path / "config.json") in str(info.value)


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
    assert not any((repo.path / "locks").glob("backup-*"))


def test_commit_requires_every_index(repo: Repository) -> None:
    with (
        repo.begin(VM, "b1") as pending,
        pytest.raises(RepositoryError, match=r"no index written for disks \[2000\]"),
    ):
        pending.commit(record("b1", [disk()]))
    assert not (repo.path / "backups" / VM / "b1").exists()


def test_abort_removes_everything(repo: Repository) -> None:
    with pytest.raises(RuntimeError), repo.begin(VM, "b1") as pending:
        pending.write_index(2000, FixedIndex(BS, BS))
        raise RuntimeError("copy failed")
    assert list((repo.path / "backups" / VM).iterdir()) == []
    assert list((repo.path / "tmp").iterdir()) == []
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


def test_names_are_checked(repo: Repository) -> None:
    for bad in ["../x", "", ".hidden", "a/b"]:
        with pytest.raises(RepositoryError, match="not a valid name"):
            repo.begin(VM, bad)


def test_new_backup_ids_sort_and_differ() -> None:
    ids = [Repository.new_backup_id() for _ in range(200)]
    assert len(set(ids)) == 200
    assert all(len(i) == 23 and i[8] == "T" and i[15:17] == "Z-" for i in ids)


def test_read_index_damage_names_file(repo: Repository) -> None:
    rec, _ = backup(repo, "b1")
    path = repo.index_path(rec, 2000)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=str(path)):
        repo.read_index(rec, 2000)
    path.unlink()
    with pytest.raises(IntegrityError, match="missing"):
        repo.read_index(rec, 2000)


def test_verify_finds_missing_and_corrupt_chunks(repo: Repository) -> None:
    _, index = backup(repo, "b1")
    assert repo.verify() == [] and repo.verify(read_data=True) == []
    first, second = index.get(0), index.get(2)
    assert first is not None and second is not None
    repo.chunks.delete(first)
    path = repo.path / "chunks" / second.hex()[:2] / second.hex()[2:4] / second.hex()
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    problems = repo.verify()
    assert len(problems) == 1 and first.hex() in problems[0] and "missing" in problems[0]
    problems = repo.verify(read_data=True)
    assert len(problems) == 2
    assert any(second.hex() in p and "b1" in p for p in problems)


def test_verify_reports_damaged_record(repo: Repository) -> None:
    backup(repo, "b1")
    (repo.path / "backups" / VM / "b1" / "backup.json").write_text("{")
    problems = repo.verify()
    assert len(problems) == 1 and "backup.json is damaged" in problems[0]
    with pytest.raises(IntegrityError):
        repo.list_backups()


def test_read_block_round_trip(repo: Repository) -> None:
    _, index = backup(repo, "b1")
    digest = index.get(0)
    assert digest is not None
    assert repo.read_block(digest, zstandard.ZstdDecompressor()) == b"a" * BS


def test_clean_stale(repo: Repository) -> None:
    old = time.time() - 7200
    backup(repo, "done")
    # a crashed writer: pending directory and temporary, both old, no lock held
    crashed = repo.path / "backups" / VM / "crashed"
    crashed.mkdir()
    (crashed / "disk-2000.idx").write_bytes(b"partial")
    temp = repo.path / "tmp" / ".chunk-x.tmp"
    temp.write_bytes(b"partial")
    fresh_temp = repo.path / "tmp" / ".chunk-y.tmp"
    fresh_temp.write_bytes(b"in flight")
    # a running writer whose files are just as old
    running = repo.begin(VM, "running")
    running.write_index(2000, FixedIndex(BS, BS))
    for path in [crashed / "disk-2000.idx", crashed, temp, running.directory,
                 running.directory / "disk-2000.idx"]:
        os.utime(path, (old, old))
    removed = repo.clean_stale()
    assert sorted(removed) == sorted([crashed, temp])
    assert not crashed.exists() and not temp.exists() and fresh_temp.exists()
    assert running.directory.exists()
    running.commit(record("running", [disk(capacity=BS)]))
    assert [r.id for r in repo.list_backups()] == ["done", "running"]
    assert repo.clean_stale() == []
