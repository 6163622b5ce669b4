"""The local cache of pack indexes (``mover.repo.indexcache``): used when it hashes to its
name and the bucket still lists it; a missing, extra or damaged cached index is noticed."""

from __future__ import annotations

import os
from pathlib import Path

from mover.repo import ChunkCodec, MemoryStore, PackedChunks, layout
from mover.repo.indexcache import IndexCache


def filled(blocks: int = 6) -> tuple[MemoryStore, dict[bytes, bytes]]:
    """A store with one pack (and pack index) per block."""
    store, codec = MemoryStore(), ChunkCodec(3)
    chunks = PackedChunks(store, codec)
    data = {}
    for _ in range(blocks):
        block = os.urandom(4096)
        digest = chunks.digest(block)
        chunks.put(digest, block)
        chunks.sync()
        data[digest] = block
    return store, data


def load(store: IndexCache) -> PackedChunks:
    return PackedChunks(store, ChunkCodec(3))


def test_a_second_start_reads_indexes_from_the_cache(tmp_path: Path) -> None:
    store, data = filled()
    cold = IndexCache(store, tmp_path / "index")
    assert len(load(cold)) == 6 and (cold.hits, cold.misses) == (0, 6)
    warm = IndexCache(store, tmp_path / "index")
    table = load(warm)
    assert (warm.hits, warm.misses) == (6, 0)
    assert all(table.read_block(d) == b for d, b in data.items())


def test_an_index_gone_from_the_bucket_leaves_the_cache(tmp_path: Path) -> None:
    store, _ = filled()
    load(IndexCache(store, tmp_path / "index"))
    gone = next(iter(store.list(layout.INDEX)))
    store.delete(gone)                                     # gc on another machine
    cache = IndexCache(store, tmp_path / "index")
    assert len(load(cache)) == 5
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == sorted(
        n[len(layout.INDEX):] for n in store.list(layout.INDEX))


def test_an_extra_cached_index_is_never_loaded(tmp_path: Path) -> None:
    store, _ = filled(3)
    other, _ = filled(2)                                   # another repository's index
    load(IndexCache(other, tmp_path / "index"))
    cache = IndexCache(store, tmp_path / "index")
    assert len(load(cache)) == 3 and cache.hits == 0
    assert len(list((tmp_path / "index").iterdir())) == 3


def test_a_damaged_cached_index_is_fetched_again(tmp_path: Path) -> None:
    store, data = filled(2)
    load(IndexCache(store, tmp_path / "index"))
    victim = sorted((tmp_path / "index").iterdir())[0]
    damaged = bytearray(victim.read_bytes())
    damaged[40] ^= 1
    victim.write_bytes(damaged)
    cache = IndexCache(store, tmp_path / "index")
    table = load(cache)
    assert (cache.hits, cache.misses) == (1, 1)
    assert all(table.read_block(d) == b for d, b in data.items())
    assert IndexCache(store, tmp_path / "index").get(
        layout.INDEX + victim.name) == store.get(layout.INDEX + victim.name)


def test_a_cache_that_cannot_be_written_is_only_slower(tmp_path: Path) -> None:
    store, _ = filled(2)
    (tmp_path / "file").write_bytes(b"")
    cache = IndexCache(store, tmp_path / "file" / "index")   # not a directory
    assert len(load(cache)) == 2 and cache.misses == 2
