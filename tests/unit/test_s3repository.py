"""A repository in an S3 bucket (the lab's RGW): the format through the S3 store, and
``Repository.open("s3://...")``, which opens read-only until leased locks exist."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mover.errors import RepositoryError
from mover.repo import MemoryLocks, Repository
from mover.repo.gc import collect
from mover.repo.s3store import S3Store
from mover_lab import ObjectStore

from .test_repository import BS, VM, backup

READ_ONLY = "opens read-only"


@pytest.fixture
def written(make_s3_store: Callable[..., S3Store]) -> tuple[str, Repository, Any]:
    """A repository with two committed backups, written through the S3 store (one
    process, in-process locks: how a writer with S3 locks will write it)."""
    store = make_s3_store()
    repo = Repository.on(store, MemoryLocks(), block_size=BS)
    first, index = backup(repo, "20261125T021500Z-aaaaaa")
    backup(repo, "20261126T021500Z-bbbbbb", created="2026-11-26T02:15:00Z")
    return f"s3://{store.location.bucket}/{store.location.prefix}", repo, (first, index)


def test_open_s3_url_reads_backups(s3_env: ObjectStore,
                                   written: tuple[str, Repository, Any]) -> None:
    url, writer, (first, index) = written
    repo = Repository.open(url, create=False)
    assert repo.location == url
    assert [r.id for r in repo.list_backups(VM)] == [r.id for r in writer.list_backups(VM)]
    with repo.reading():
        got = repo.read_index(repo.get_backup(first.id), 2000)
        assert got.to_bytes() == index.to_bytes()
        assert [repo.read_block(got.get(n)) for n in (0, 2)] == \
            [writer.read_block(index.get(n)) for n in (0, 2)]
    assert repo.verify(read_data=True) == []


def test_s3_repository_refuses_writes(s3_env: ObjectStore,
                                      written: tuple[str, Repository, Any]) -> None:
    url, writer, (first, _) = written
    before = sorted(writer.store.list(""))
    repo = Repository.open(url, create=False)
    with pytest.raises(RepositoryError, match=READ_ONLY):
        repo.begin(VM, "20261127T021500Z-cccccc")
    with pytest.raises(RepositoryError, match=READ_ONLY):
        repo.remove_backup(first)
    with pytest.raises(RepositoryError, match=READ_ONLY):
        collect(repo, dry_run=False)
    with pytest.raises(RepositoryError, match=f"{url} is an S3 repository.*{READ_ONLY}"):
        Repository.open(url, create=True)     # what a backup asks for
    assert sorted(writer.store.list("")) == before


def test_open_s3_url_of_nothing(s3_env: ObjectStore) -> None:
    with pytest.raises(RepositoryError, match="no mover repository at s3://mover-tests/"):
        Repository.open("s3://mover-tests/nothing-here", create=False)
    with pytest.raises(RepositoryError, match="bucket 'mover-no-bucket' does not exist"):
        Repository.open("s3://mover-no-bucket/x", create=False)
    with pytest.raises(RepositoryError, match="not a valid bucket name"):
        Repository.open("s3://No_Bucket/x", create=False)
