"""A read-only repository: a ``Store`` wrapper and a ``Locks`` that refuse every write.

S3 repositories are opened this way until leased locks on the object store exist (issue 9):
without them a backup, ``gc`` or ``forget`` on one machine cannot be made safe against the
others. Reading needs no lock there, because nothing that could delete a pack (gc) can run
through mover: ``acquire(shared=True)`` hands out a lock that holds nothing, and an
exclusive one (a backup's own lock, gc's) is refused with ``reason``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from mover.errors import RepositoryError
from mover.repo import layout
from mover.repo.store import Stat, Store


class ReadOnlyStore:
    def __init__(self, inner: Store, reason: str) -> None:
        self.inner = inner
        self.reason = reason

    def describe(self) -> str:
        return self.inner.describe()

    def put(self, name: str, data: bytes | bytearray | memoryview, *,
            replace: bool = False) -> bool:
        raise RepositoryError(f"cannot write {name}: {self.reason}")

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self.inner.get(name, offset, length)

    def stat(self, name: str) -> Stat | None:
        return self.inner.stat(name)

    def list(self, prefix: str) -> Iterator[str]:
        return self.inner.list(prefix)

    def delete(self, name: str) -> None:
        raise RepositoryError(f"cannot delete {name}: {self.reason}")

    def delete_many(self, names: Iterable[str]) -> None:
        raise RepositoryError(f"cannot delete objects: {self.reason}")


class _NoLock:
    def release(self) -> None:
        pass


class ReadOnlyLocks:
    def __init__(self, reason: str) -> None:
        self.reason = reason

    def acquire(self, name: str, *, shared: bool = False, wait: bool = True) -> _NoLock | None:
        if shared and name == layout.LOCK_REPOSITORY:
            return _NoLock()
        raise RepositoryError(self.reason)

    def names(self) -> list[str]:
        return []

    def forget(self, name: str) -> None:
        pass
