"""A ``Store`` in memory, for tests of everything above the storage seam.

Same contract as the local store (atomic, create if absent, read after write), trivially:
objects live in a dict under a lock. "Durable" means for the life of the object.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from mover import clock
from mover.errors import ObjectMissing
from mover.repo.store import Stat, check_name, check_prefix


class MemoryStore:
    def __init__(self) -> None:
        self._objects: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"memory store {id(self):#x}"

    def put(self, name: str, data: bytes | bytearray | memoryview, *,
            replace: bool = False) -> bool:
        check_name(name)
        value = bytes(data)
        with self._lock:
            if not replace and name in self._objects:
                return False
            self._objects[name] = (value, clock.now().timestamp())
            return True

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        check_name(name)
        with self._lock:
            found = self._objects.get(name)
        if found is None:
            raise ObjectMissing(f"object {name} does not exist ({self.describe()})")
        data = found[0]
        end = len(data) if length is None else offset + length
        return data[offset:end]

    def stat(self, name: str) -> Stat | None:
        check_name(name)
        with self._lock:
            found = self._objects.get(name)
        return None if found is None else Stat(len(found[0]), found[1])

    def list(self, prefix: str) -> Iterator[str]:
        check_prefix(prefix)
        with self._lock:
            names = sorted(n for n in self._objects if n.startswith(prefix))
        return iter(names)

    def delete(self, name: str) -> None:
        check_name(name)
        with self._lock:
            self._objects.pop(name, None)

    def delete_many(self, names: Iterable[str]) -> None:
        for name in names:
            self.delete(name)

    def set_mtime(self, name: str, mtime: float) -> None:
        """Tests: pretend ``name`` was written at ``mtime``."""
        with self._lock:
            data, _ = self._objects[name]
            self._objects[name] = (data, mtime)
