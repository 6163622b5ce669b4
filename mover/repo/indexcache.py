"""A local cache of pack index objects in front of a remote ``Store`` (an S3 bucket).

Every process that opens a repository loads every pack index (``PackedChunks.refresh``):
on S3 one GET each, 20-50 ms apiece, so a repository with thousands of packs would spend
its start fetching the same immutable objects again. ``IndexCache`` wraps the store with
the same protocol and keeps a copy of each index object it reads in a directory
(``$XDG_CACHE_HOME/mover/<repository id>/index/``, one file per object).

Never trusted blindly:

* *Which* indexes exist always comes from the bucket: ``list`` goes to the store, and a
  cached file whose name the listing lacks (gc removed it) is deleted from the cache.
  A missing one is fetched and cached.
* *What* an index holds is checked: its name is the SHA-256 of its bytes
  (``layout.index``), so a cached file is used only if it hashes to its name; one that
  does not (a torn write, a disk fault) is fetched again and replaced.

Everything else passes through untouched. Files are written to a temporary name and
renamed, so a concurrent process (two workers on one machine) never reads half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from mover.repo import layout
from mover.repo.store import Stat, Store

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/mover`` (``~/.cache/mover`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mover"


class IndexCache:
    """A ``Store`` (see the protocol) that answers whole-object ``get`` of index objects
    from ``directory`` when it can. ``hits`` and ``misses`` count those gets."""

    def __init__(self, inner: Store, directory: Path) -> None:
        self.inner = inner
        self.directory = directory
        self.hits = 0
        self.misses = 0

    def describe(self) -> str:
        return self.inner.describe()

    def _file(self, name: str) -> Path | None:
        index_id = layout.index_id_of(name)
        return None if index_id is None else self.directory / index_id.hex()

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._file(name)
        if path is None or offset or length is not None:
            return self.inner.get(name, offset, length)
        try:
            data = path.read_bytes()
        except OSError:
            data = None
        if data is not None and hashlib.sha256(data).hexdigest() == path.name:
            self.hits += 1
            return data
        self.misses += 1
        data = self.inner.get(name)
        if hashlib.sha256(data).hexdigest() == path.name:   # a damaged one is not cached
            self._keep(path, data)
        return data

    def _keep(self, path: Path, data: bytes) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(temp, path)
        except OSError as exc:          # a cache that cannot be written is only slower
            log.warning("cannot cache %s in %s: %s", path.name, self.directory, exc)
            with contextlib.suppress(OSError, UnboundLocalError):
                os.unlink(temp)

    def list(self, prefix: str) -> Iterator[str]:
        names = list(self.inner.list(prefix))
        if prefix in ("", layout.INDEX):
            self._prune({p.name for n in names if (p := self._file(n)) is not None})
        return iter(names)

    def _prune(self, present: set[str]) -> None:
        """Drop cached indexes the bucket no longer has (not temporaries: another process
        on this machine may be writing one)."""
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return
        for entry in entries:
            if entry.name not in present and not entry.name.startswith(".tmp-"):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)

    def put(self, name: str, data: bytes | bytearray | memoryview, *,
            replace: bool = False) -> bool:
        return self.inner.put(name, data, replace=replace)

    def stat(self, name: str) -> Stat | None:
        return self.inner.stat(name)

    def delete(self, name: str) -> None:
        self.inner.delete(name)
        self._forget(name)

    def delete_many(self, names: Iterable[str]) -> None:
        names = list(names)
        self.inner.delete_many(names)
        for name in names:
            self._forget(name)

    def _forget(self, name: str) -> None:
        path = self._file(name)
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()
