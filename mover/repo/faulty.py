"""A ``Store`` wrapper that fails on purpose, for tests of what lies above the seam.

Rules name a method, a substring of the object name, how many matching calls to let through
first (``after``) and how many times to fire. Kinds:

* ``error``: the call raises RepositoryError (as a full disk or a lost connection would);
* ``torn``: a ``put`` stores only the first half of the data and then raises, as a store
  that broke its atomicity promise would (a power loss on a file system that lies);
* ``crash``: from this call on every call raises: the process "died" here, and what was
  stored before is all that a later run finds (the inner store is untouched by the crash).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from mover.errors import RepositoryError
from mover.repo.store import Stat, Store


class InjectedFault(RepositoryError):
    """A failure injected by FaultyStore."""


@dataclass(slots=True)
class Rule:
    method: str
    match: str
    kind: str
    count: int
    after: int = 0
    fired: int = 0
    seen: int = 0


class FaultyStore:
    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.rules: list[Rule] = []
        self.crashed = False
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def fail(self, method: str, match: str = "", kind: str = "error", count: int = 1,
             after: int = 0) -> Rule:
        rule = Rule(method, match, kind, count, after)
        with self._lock:
            self.rules.append(rule)
        return rule

    def describe(self) -> str:
        return f"faulty {self.inner.describe()}"

    def _check(self, method: str, name: str) -> str | None:
        with self._lock:
            self.calls[method] = self.calls.get(method, 0) + 1
            if self.crashed:
                raise InjectedFault(f"{method} {name}: the store is gone (injected crash)")
            for rule in self.rules:
                if rule.method == method and rule.match in name and rule.fired < rule.count:
                    rule.seen += 1
                    if rule.seen <= rule.after:
                        continue
                    rule.fired += 1
                    if rule.kind == "crash":
                        self.crashed = True
                        raise InjectedFault(f"{method} {name}: injected crash")
                    if rule.kind == "error":
                        raise InjectedFault(f"{method} {name}: injected error")
                    return rule.kind
        return None

    def put(self, name: str, data: bytes | bytearray | memoryview, *,
            replace: bool = False) -> bool:
        if self._check("put", name) == "torn":
            self.inner.put(name, bytes(data)[: len(data) // 2], replace=replace)
            raise InjectedFault(f"put {name}: injected torn write")
        return self.inner.put(name, data, replace=replace)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        self._check("get", name)
        return self.inner.get(name, offset, length)

    def stat(self, name: str) -> Stat | None:
        self._check("stat", name)
        return self.inner.stat(name)

    def list(self, prefix: str) -> Iterator[str]:
        self._check("list", prefix)
        return self.inner.list(prefix)

    def delete(self, name: str) -> None:
        self._check("delete", name)
        self.inner.delete(name)

    def delete_many(self, names: Iterable[str]) -> None:
        for name in names:  # one by one: a crash rule can stop it half way
            self.delete(name)
