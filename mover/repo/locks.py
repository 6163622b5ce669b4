"""Locks of a repository: ``Locks`` is the seam, with flock(2) on local files and an
in-process implementation for tests on the memory store.

Lock names come from ``mover.repo.layout``. A lock is *shared* (many holders) or
*exclusive* (one); ``acquire`` waits, or with ``wait=False`` returns None at once when a
conflicting holder exists. Contract: a holder that dies (its process ends) releases its
locks (a leased lock: after its lease); ``release`` is idempotent; ``check`` raises
RepositoryError when the lock may no longer be held, and every writer calls it before it
writes anything that names chunks (a flock or an in-process lock cannot be lost, so for
them it is a no-op). Leased lock objects on an object store are ``mover.repo.leases``.

``FileLocks``: the kernel drops a flock when its holder closes the file or dies, so a
crashed writer never leaves a lock held. flock locks are per open file, so two threads of
one process exclude each other as two processes do. (NFS clients map flock to byte-range
locks on Linux.)
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from pathlib import Path
from typing import Protocol

from mover.repo.ioerrors import io_error


class Lock(Protocol):
    def release(self) -> None: ...

    def check(self, *, look: bool = True) -> None:
        """RepositoryError if this lock may have been lost (a lease that ran out).
        ``look=False``: judged from what the holder knows (its lease and its clock), without
        asking the store whether its lock object is still there: a check cheap enough to
        make before every single delete of gc."""
        ...


class Locks(Protocol):
    def acquire(self, name: str, *, shared: bool = False, wait: bool = True) -> Lock | None:
        ...

    def names(self) -> list[str]:
        """Names of locks that may exist (held or left behind), for clean-up."""
        ...

    def forget(self, name: str) -> None:
        """Remove what a lock that nobody holds leaves behind (a lock file)."""
        ...


class FileLock:
    def __init__(self, fd: int, path: Path, remove: bool) -> None:
        self._fd = fd
        self._path = path
        self._remove = remove

    def release(self) -> None:
        """Unlink the lock file first (exclusive locks only), then drop the lock: unlinking
        while still holding it means nobody else can be holding that file."""
        if self._fd < 0:
            return
        try:
            if self._remove:
                self._path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = -1

    def check(self, *, look: bool = True) -> None:
        """A flock is held until released or the process ends."""


class FileLocks:
    """``<dir>/<name>.lock`` files. Exclusive locks remove their file when released."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.lock"

    def acquire(self, name: str, *, shared: bool = False, wait: bool = True) -> FileLock | None:
        path = self._path(name)
        while True:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                if not (shared and exc.errno == errno.EROFS):
                    raise io_error(f"cannot open lock file {path}", exc) from exc
                # A read-only repository: nobody can write or collect it, so a reader
                # needs no lock. Still share one with a remount's writers where it exists.
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    return FileLock(-1, path, remove=False)
                except OSError as exc2:
                    raise io_error(f"cannot open lock file {path}", exc2) from exc2
            mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
            try:
                fcntl.flock(fd, mode)
            except BlockingIOError:
                os.close(fd)
                return None
            except OSError as exc:
                os.close(fd)
                raise io_error(f"cannot lock {path}", exc) from exc
            # A holder unlinks its lock file before releasing it: if we locked a file that
            # is no longer the one at ``path``, somebody else may lock the new one.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                return FileLock(fd, path, remove=not shared)
            os.close(fd)

    def names(self) -> list[str]:
        try:
            return sorted(e.name[:-5] for e in os.scandir(self.directory)
                          if e.name.endswith(".lock"))
        except FileNotFoundError:
            return []

    def forget(self, name: str) -> None:
        lock = self.acquire(name, wait=False)
        if lock is not None:
            lock._remove = True
            lock.release()


class _MemoryLock:
    def __init__(self, owner: MemoryLocks, name: str, shared: bool) -> None:
        self._owner, self._name, self._shared = owner, name, shared
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._owner._release(self._name, self._shared)

    def check(self, *, look: bool = True) -> None:
        """Held until released."""


class MemoryLocks:
    """Locks between threads of one process (tests on the memory store)."""

    def __init__(self) -> None:
        self._state: dict[str, int] = {}    # > 0: shared holders; -1: exclusive
        self._changed = threading.Condition()

    def acquire(self, name: str, *, shared: bool = False,
                wait: bool = True) -> _MemoryLock | None:
        with self._changed:
            while True:
                state = self._state.get(name, 0)
                if (shared and state >= 0) or state == 0:
                    self._state[name] = state + 1 if shared else -1
                    return _MemoryLock(self, name, shared)
                if not wait:
                    return None
                self._changed.wait()

    def _release(self, name: str, shared: bool) -> None:
        with self._changed:
            state = self._state.get(name, 0)
            state = state - 1 if shared else 0
            if state:
                self._state[name] = state
            else:
                self._state.pop(name, None)
            self._changed.notify_all()

    def names(self) -> list[str]:
        with self._changed:
            return sorted(self._state)

    def forget(self, name: str) -> None:
        """Nothing is left behind in memory."""
