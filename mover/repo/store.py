"""The storage seam: every object a repository keeps goes through one ``Store``.

A store holds named, immutable-by-default objects: ``put`` (create if absent, or replace),
``get`` (a whole object or a byte range), ``stat``, ``list`` by prefix, ``delete``. Names are
relative, ``/``-separated, made by ``mover.repo.layout`` and nowhere else: no other module
of mover builds a path or a key.

Implementations: ``LocalStore`` (a directory), ``MemoryStore`` (tests), ``FaultyStore`` (a
wrapper that injects failures, for tests), ``S3Store`` (a bucket: ``mover.repo.s3store``).
One contract suite
(``tests/unit/test_store.py``) runs over every implementation, S3 against Ceph RGW.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

# A name is one or more components of letters, digits and ``._-``, joined by ``/``; no
# component starts with a dot (no ``..``, no hidden files), none is empty.
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")


@dataclass(frozen=True, slots=True)
class Stat:
    size: int           # bytes
    mtime: float        # seconds since the epoch when the object was last written


class Store(Protocol):
    """Named objects. Every method is thread-safe, and safe for several processes (and, for
    a shared object store, several machines) using one store at once.

    Guarantees every implementation gives:

    * **Atomic.** A reader sees no object or a whole one, never a prefix, also after a
      crash of the writer at any moment.
    * **Durable on return.** When ``put`` returns, the object survives a crash or power
      loss of the writer's machine (the local store fsyncs the file and its directory; an
      object store acknowledges only stored objects). There is no separate sync.
    * **Create if absent.** ``put(name, data)`` without ``replace`` creates the object only
      if no object of that name exists, atomically with respect to every other writer: of
      two writers racing on one name exactly one creates it and the other gets False.
      ``replace=True`` replaces an existing object atomically (last writer wins).
    * **Read after write.** A ``get``, ``stat`` or ``list`` that starts after a ``put`` or
      ``delete`` returned (in any process) sees its effect.

    * **Durable deletes.** When ``delete`` or ``delete_many`` returns, the removal survives
      a power loss too.

    Errors: ``get`` of a missing object raises ``ObjectMissing`` naming it; ``stat`` returns
    None for one; ``delete`` of a missing object is not an error. Every other failure is a
    ``RepositoryError`` whose message names the object and, where one is known, the fix
    (a full file system, a read-only mount, a permission); ``transient`` failures are not
    distinguished yet because local I/O errors are permanent.
    """

    def put(self, name: str, data: bytes | bytearray | memoryview, *,
            replace: bool = False) -> bool:
        """Store ``data`` as ``name``; False (and nothing written) when it exists and not
        ``replace``."""
        ...

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """The object's bytes from ``offset``, ``length`` of them (None: to the end). A range
        past the end is cut short at the end (the caller checks lengths it relies on)."""
        ...

    def stat(self, name: str) -> Stat | None: ...

    def list(self, prefix: str) -> Iterator[str]:
        """Names of the objects whose names start with ``prefix``, sorted. ``prefix`` is a
        whole number of name components followed by ``/`` ("packs/"), or empty (all)."""
        ...

    def delete(self, name: str) -> None:
        """Remove an object, durably: when this returns, the removal survives a power loss
        (gc relies on its deletes keeping their order)."""
        ...

    def delete_many(self, names: Iterable[str]) -> None:
        """``delete`` of every name, durable when it returns; in no particular order among
        themselves (a local store fsyncs each directory once; S3 has batch deletes)."""
        ...

    def describe(self) -> str:
        """Where this store keeps its objects, for messages (a path, a URL)."""
        ...


def check_name(name: str) -> str:
    """``name`` if it is a valid object name, else ValueError (a bug in the caller: names
    come from ``mover.repo.layout``)."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"invalid object name {name!r}")
    return name


def check_prefix(prefix: str) -> str:
    if prefix and not (prefix.endswith("/") and _NAME.fullmatch(prefix[:-1])):
        raise ValueError(f"invalid object name prefix {prefix!r}")
    return prefix
