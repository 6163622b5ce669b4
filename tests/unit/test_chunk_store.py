"""One contract suite for every ChunkStore, plus races on the local store."""

from __future__ import annotations

import hashlib
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mover.errors import IntegrityError
from mover.repo import ChunkStore, LocalChunkStore, MemoryChunkStore


def local(tmp_path: Path) -> ChunkStore:
    (tmp_path / "tmp").mkdir()
    return LocalChunkStore(tmp_path / "chunks", tmp_path / "tmp")


def memory(tmp_path: Path) -> ChunkStore:
    return MemoryChunkStore()


@pytest.fixture(params=[local, memory], ids=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ChunkStore:
    factory: Callable[[Path], ChunkStore] = request.param
    return factory(tmp_path)


def d(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def test_put_get_has_list_delete(store: ChunkStore) -> None:
    assert not store.has(d("a"))
    assert store.put(d("a"), b"blob-a") is True
    assert store.put(d("b"), b"blob-b") is True
    assert store.has(d("a"))
    assert store.get(d("a")) == b"blob-a"
    assert sorted(store.list()) == sorted([d("a"), d("b")])
    store.delete(d("a"))
    store.delete(d("a"))  # idempotent
    assert not store.has(d("a"))
    assert list(store.list()) == [d("b")]


def test_second_put_is_dedup_and_keeps_first(store: ChunkStore) -> None:
    assert store.put(d("a"), b"first") is True
    assert store.put(d("a"), b"second") is False
    assert store.get(d("a")) == b"first"


def test_missing_chunk_names_digest(store: ChunkStore) -> None:
    with pytest.raises(IntegrityError, match=d("x").hex()):
        store.get(d("x"))


def test_local_layout_and_no_temporaries(tmp_path: Path) -> None:
    store = LocalChunkStore(tmp_path / "chunks", tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    digest = d("a")
    store.put(digest, b"x" * 100)
    name = digest.hex()
    path = tmp_path / "chunks" / name[:2] / name[2:4] / name
    assert path.read_bytes() == b"x" * 100
    inode = path.stat().st_ino
    assert store.put(digest, b"y" * 100) is False
    assert path.stat().st_ino == inode and path.read_bytes() == b"x" * 100
    assert list((tmp_path / "tmp").iterdir()) == []
    (path.parent / "not-a-digest").write_bytes(b"")
    assert list(store.list()) == [digest]


def test_concurrent_puts_threads(tmp_path: Path) -> None:
    store = local(tmp_path)
    digest = d("same")
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: store.put(digest, b"z" * 4096), range(64)))
    assert results.count(True) == 1 and results.count(False) == 63
    assert store.get(digest) == b"z" * 4096
    assert list((tmp_path / "tmp").iterdir()) == []


def _put_many(root: str, barrier: Any, results: Any) -> None:
    store = LocalChunkStore(Path(root) / "chunks", Path(root) / "tmp")
    barrier.wait()
    results.put([store.put(d(str(i)), str(i).encode() * 1000) for i in range(50)])


def test_concurrent_puts_processes(tmp_path: Path) -> None:
    local(tmp_path)
    ctx = multiprocessing.get_context("fork")
    workers = 4
    barrier, queue = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_put_many, args=(str(tmp_path), barrier, queue))
             for _ in range(workers)]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    # every digest was created by exactly one process; the others saw a dedup hit
    for i in range(50):
        assert sum(r[i] for r in results) == 1
    store = LocalChunkStore(tmp_path / "chunks", tmp_path / "tmp")
    assert len(list(store.list())) == 50
    assert store.get(d("7")) == b"7" * 1000
    assert list((tmp_path / "tmp").iterdir()) == []
