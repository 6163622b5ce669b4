"""A repository in an S3 bucket (the lab's RGW): ``Repository.open("s3://...")`` with leased
lock objects in the bucket, written, collected and verified through the S3 store; leases
judged by RGW's clock through two gateways."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mover.errors import RepositoryError
from mover.repo import Repository, layout
from mover.repo.gc import collect
from mover.repo.indexcache import IndexCache
from mover.repo.leases import LeasedLocks, LeaseTimes
from mover.repo.s3store import REQUESTS, S3Store
from mover_lab import ObjectStore

from .test_repository import BS, VM, backup

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Index caches under the test's directory, not this machine's ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def url_of(store: S3Store) -> str:
    return f"s3://{store.location.bucket}/{store.location.prefix}"


def test_backup_forget_gc_verify_on_an_s3_url(
        s3_env: ObjectStore, make_s3_store: Callable[..., S3Store]) -> None:
    url = url_of(make_s3_store())
    repo = Repository.open(url, block_size=BS)
    assert isinstance(repo.locks, LeasedLocks) and repo.location == url
    first, _ = backup(repo, "20261125T021500Z-aaaaaa")
    second, index = backup(repo, "20261126T021500Z-bbbbbb", created="2026-11-26T02:15:00Z")
    other = Repository.open(url, create=False)          # another process, as it were
    assert [r.id for r in other.list_backups(VM)] == [first.id, second.id]
    other.remove_backup(first)
    report = collect(other, repack_threshold=0.0)
    assert report.packs_deleted >= 1 and report.live_chunks == 3
    with repo.reading():
        got = repo.read_index(repo.get_backup(second.id), 2000)
        assert got.to_bytes() == index.to_bytes()
        assert repo.read_block(got.get(0)) == b"a" * BS      # its pack survived gc
    assert other.verify(read_data=True) == []
    assert list(repo.store.list(layout.LOCKS)) == []     # every lock object released


def test_a_second_open_loads_pack_indexes_from_the_local_cache(
        s3_env: ObjectStore, make_s3_store: Callable[..., S3Store], cache_home: Path) -> None:
    url = url_of(make_s3_store())
    writer = Repository.open(url, block_size=BS)
    backup(writer, "20261125T021500Z-aaaaaa")
    backup(writer, "20261126T021500Z-bbbbbb")
    indexes = len(list(writer.store.list(layout.INDEX)))
    gets = REQUESTS["GetObject"]
    first = Repository.open(url)
    assert REQUESTS["GetObject"] - gets == 2 + indexes       # config.json twice, indexes
    gets = REQUESTS["GetObject"]
    second = Repository.open(url)
    assert REQUESTS["GetObject"] - gets == 2                 # the indexes from the cache
    assert isinstance(first.store, IndexCache) and isinstance(second.store, IndexCache)
    assert (first.store.hits, first.store.misses) == (0, indexes)
    assert (second.store.hits, second.store.misses) == (indexes, 0)
    assert second.store.directory == cache_home / "mover" / writer.config.id / "index"
    assert second.verify(read_data=True) == []


def test_a_new_bucket_is_created_by_a_backup_only(s3_env: ObjectStore) -> None:
    bucket = f"mover-new-{os.getpid()}-{int(time.time())}"
    with pytest.raises(RepositoryError, match=f"bucket '{bucket}' does not exist"):
        Repository.open(f"s3://{bucket}/r", create=False)
    repo = Repository.open(f"s3://{bucket}/r", block_size=BS)
    assert Repository.open(f"s3://{bucket}/r", create=False).config.id == repo.config.id


def test_open_s3_url_of_nothing(s3_env: ObjectStore) -> None:
    with pytest.raises(RepositoryError, match="no mover repository at s3://mover-tests/"):
        Repository.open("s3://mover-tests/nothing-here", create=False)
    with pytest.raises(RepositoryError, match="bucket 'mover-no-bucket' does not exist"):
        Repository.open("s3://mover-no-bucket/x", create=False)
    with pytest.raises(RepositoryError, match="not a valid bucket name"):
        Repository.open("s3://No_Bucket/x", create=False)


def test_leases_on_rgw_through_two_gateways(objectstore: ObjectStore, s3_bucket: str,
                                            aws_sdk_env: Callable[[dict[str, str]], None],
                                            make_s3_store: Callable[..., Any]) -> None:
    """Holder A writes through gateway 0, B through gateway 1; staleness is judged by the
    stamps RGW puts on the objects (one-second resolution)."""
    times = LeaseTimes(lease=2.0, refresh=0.5, margin=1.0, headroom=0.5)    # stale after 3
    prefix = make_s3_store().location.prefix
    stores = []
    for gateway in (0, 1):
        aws_sdk_env(objectstore.environment(gateway=gateway))
        from mover.repo.s3store import client_from_environment
        stores.append(S3Store(s3_bucket, prefix, client_from_environment()))
    a = LeasedLocks(stores[0], times, holder="a", refresh_thread=False)
    b = LeasedLocks(stores[1], times, holder="b")
    held = a.acquire("repository", shared=True)
    assert held is not None
    assert b.acquire("repository", wait=False) is None
    shared = b.acquire("repository", shared=True, wait=False)
    assert shared is not None
    time.sleep(2.0)                 # B's thread renews; A does not (killed or paused)
    shared.check()
    assert b.acquire("repository", wait=False) is None        # A within lease + margin
    time.sleep(2.5)
    with pytest.raises(RepositoryError, match="no longer held"):
        held.check()
    shared.release()
    taken = b.acquire("repository", wait=False)               # A is stale now
    assert taken is not None
    assert [n for n in stores[0].list(layout.LOCKS)] == [taken.object_name]
    taken.release()
