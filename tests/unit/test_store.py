"""One contract suite for every Store (mover.repo.store), plus races on the local store.

``s3-rgw`` runs the suite against the lab's Ceph RADOS Gateway (``scripts/objectstore``,
started once per session), each test under a fresh key prefix.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mover.errors import ObjectMissing
from mover.repo import LocalStore, MemoryStore, Store
from mover.repo.faulty import FaultyStore, InjectedFault

STORES: dict[str, Callable[[Path], Store]] = {
    "local": lambda p: LocalStore(p / "store"),
    "memory": lambda p: MemoryStore(),
    "faulty-passthrough": lambda p: FaultyStore(MemoryStore()),
}
S3_STORES = ["s3-rgw"]   # need the objectstore fixture: made in ``store`` below


@pytest.fixture(params=[*STORES, *S3_STORES], ids=[*STORES, *S3_STORES])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "s3-rgw":
        store: Store = request.getfixturevalue("make_s3_store")()
        return store
    return STORES[request.param](tmp_path)


def test_put_get_stat_list_delete(store: Store) -> None:
    assert store.put("packs/ab/one", b"1234567890") is True
    assert store.get("packs/ab/one") == b"1234567890"
    stat = store.stat("packs/ab/one")
    assert stat is not None and stat.size == 10 and stat.mtime > 0
    assert store.stat("packs/ab/two") is None
    store.put("packs/cd/two", b"x")
    store.put("index/i1", b"y")
    assert list(store.list("packs/")) == ["packs/ab/one", "packs/cd/two"]
    assert list(store.list("")) == ["index/i1", "packs/ab/one", "packs/cd/two"]
    assert list(store.list("backups/")) == []
    store.delete("packs/ab/one")
    store.delete("packs/ab/one")  # already gone: not an error
    assert list(store.list("packs/")) == ["packs/cd/two"]
    with pytest.raises(ObjectMissing, match="packs/ab/one"):
        store.get("packs/ab/one")


def test_delete_many(store: Store) -> None:
    for name in ("backups/vm/b1/a", "backups/vm/b1/journal-1/0", "backups/vm/b1/journal-1/1",
                 "backups/vm/b2/a"):
        store.put(name, b"x")
    store.delete_many([*store.list("backups/vm/b1/"), "backups/vm/b1/gone"])
    assert list(store.list("")) == ["backups/vm/b2/a"]
    store.delete_many([])


def test_local_put_into_a_directory_another_process_just_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process's delete removes the (empty) directory between our mkdir and our
    link: the put makes it again instead of failing."""
    import os

    from mover.repo import localstore
    store = LocalStore(tmp_path)
    real, raced = os.link, []

    def link(src: str, dst: str) -> None:
        if not raced:
            raced.append(dst)
            os.rmdir(os.path.dirname(dst))              # the other process's delete
        real(src, dst)

    monkeypatch.setattr(localstore.os, "link", link)
    assert store.put("backups/vm/b1/b", b"2") is True
    assert raced and store.get("backups/vm/b1/b") == b"2"


@pytest.mark.parametrize(("offset", "length", "want"), [
    (0, None, b"0123456789"), (3, 4, b"3456"), (8, 10, b"89"), (10, 5, b""), (0, 0, b""),
], ids=["whole", "middle", "past-the-end", "at-the-end", "empty"])
def test_ranged_get(store: Store, offset: int, length: int | None, want: bytes) -> None:
    store.put("o", b"0123456789")
    assert store.get("o", offset, length) == want


def test_create_if_absent_and_replace(store: Store) -> None:
    assert store.put("config.json", b"first") is True
    assert store.put("config.json", b"second") is False
    assert store.get("config.json") == b"first"
    assert store.put("config.json", b"third", replace=True) is True
    assert store.get("config.json") == b"third"


def test_bytearray_and_memoryview_data(store: Store) -> None:
    store.put("a", bytearray(b"abc"))
    store.put("b", memoryview(b"xyz123")[1:4])
    assert (store.get("a"), store.get("b")) == (b"abc", b"yz1")


@pytest.mark.parametrize("name", ["../x", "/abs", "a//b", ".hidden", "a/.b", "", "a/"],
                         ids=["dotdot", "absolute", "empty-part", "hidden", "hidden-part",
                              "empty", "trailing-slash"])
def test_bad_names_are_refused(store: Store, name: str) -> None:
    with pytest.raises(ValueError, match="invalid object name"):
        store.put(name, b"x")


def test_concurrent_creates_one_winner(store: Store) -> None:
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: store.put("same", str(i).encode() * 100),
                                range(64)))
    assert results.count(True) == 1
    winner = results.index(True)
    assert store.get("same") == str(winner).encode() * 100


def test_local_store_files_and_no_temporaries(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "r")
    store.put("packs/ab/x", b"data")
    assert (tmp_path / "r" / "packs" / "ab" / "x").read_bytes() == b"data"
    assert list((tmp_path / "r" / "tmp").iterdir()) == []
    (tmp_path / "r" / "locks").mkdir()
    (tmp_path / "r" / "locks" / "repository.lock").write_bytes(b"")
    assert list(store.list("")) == ["packs/ab/x"]          # lock files are not objects
    store.delete("packs/ab/x")
    assert not (tmp_path / "r" / "packs").exists()        # empty directories go too


def _create_many(root: str, barrier: Any, results: Any) -> None:
    store = LocalStore(Path(root))
    barrier.wait()
    results.put([store.put(f"index/{i:03d}", str(i).encode() * 1000) for i in range(50)])


def test_concurrent_creates_across_processes(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    workers = 4
    barrier, queue = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_create_many, args=(str(tmp_path), barrier, queue))
             for _ in range(workers)]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    for i in range(50):  # every object was created by exactly one process
        assert sum(r[i] for r in results) == 1
    store = LocalStore(tmp_path)
    assert len(list(store.list("index/"))) == 50
    assert store.get("index/007") == b"7" * 1000
    assert list((tmp_path / "tmp").iterdir()) == []


def test_faulty_store_error_torn_and_crash() -> None:
    inner = MemoryStore()
    faulty = FaultyStore(inner)
    faulty.fail("put", match="packs/", kind="error")
    with pytest.raises(InjectedFault, match="injected error"):
        faulty.put("packs/1", b"abcd")
    assert inner.stat("packs/1") is None
    faulty.fail("put", match="packs/", kind="torn")
    with pytest.raises(InjectedFault, match="torn"):
        faulty.put("packs/2", b"abcd")
    assert inner.get("packs/2") == b"ab"                   # what a lying store leaves
    faulty.put("packs/3", b"ok")                           # rules are used up
    faulty.fail("get", kind="crash")
    with pytest.raises(InjectedFault):
        faulty.get("packs/3")
    with pytest.raises(InjectedFault, match="gone"):
        faulty.list("")
    assert inner.get("packs/3") == b"ok"


def _resident_pages(path: Path) -> int:
    """Pages of ``path`` in the page cache (mincore of a private mapping)."""
    import ctypes
    import mmap

    size = path.stat().st_size
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    with path.open("rb") as f:
        mapped = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
    try:
        anchor = ctypes.c_char.from_buffer(mapped)
        vec = (ctypes.c_ubyte * pages)()
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mincore(ctypes.c_void_p(ctypes.addressof(anchor)), ctypes.c_size_t(size),
                        vec) != 0:
            raise OSError(ctypes.get_errno(), "mincore")
        del anchor
        return sum(v & 1 for v in vec)
    finally:
        mapped.close()


def test_local_store_leaves_large_objects_out_of_the_page_cache(tmp_path: Path) -> None:
    """A pack-sized object is dropped from the page cache once durable (what a backup
    writes is not read back soon, and new page-cache pages are dear on a VM)."""
    import os

    from mover.repo.localstore import UNCACHED_FROM

    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    mount = max((m for m in mounts if str(tmp_path).startswith(m[1])), key=lambda m: len(m[1]))
    if mount[2] == "tmpfs":
        pytest.skip("tmpfs keeps every page: they are its storage")
    store = LocalStore(tmp_path / "r")
    data = os.urandom(2 * UNCACHED_FROM)
    store.put("packs/ab/big", data)
    path = store.path("packs/ab/big")
    assert _resident_pages(path) == 0
    assert store.get("packs/ab/big") == data                 # still readable, from disk
