"""Chunk stores: where encoded blocks live, addressed by the SHA-256 of their content.

:class:`ChunkStore` is the seam between the pipeline and a storage backend; the local
filesystem is the first backend, an object store the next (same contract, new file).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import itertools
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from mover.errors import IntegrityError
from mover.repo.ioerrors import io_error

_HEX64 = re.compile(r"[0-9a-f]{64}")


class ChunkStore(Protocol):
    """Content-addressed blobs. Every method is thread-safe and safe for several processes.

    ``put`` is atomic and idempotent: a reader never sees a partial chunk, an existing chunk
    is never rewritten (it returns False, a dedup hit). A chunk is *durable* once a ``sync``
    that started after its ``put`` (or after ``has`` saw it) has returned: a backup calls
    ``sync`` before it journals, indexes or commits anything that names its chunks
    (``docs/repository.md``, commit protocol). The store does not check that ``digest``
    matches ``blob``: ``chunk.decode`` does, on every read. I/O failures raise RepositoryError
    naming the path; ``get`` of a missing chunk raises IntegrityError naming the digest (an
    index refers to it, so it is damage).
    """

    def has(self, digest: bytes) -> bool: ...

    def put(self, digest: bytes, blob: bytes) -> bool: ...

    def sync(self) -> None:
        """Make every chunk stored or seen so far durable (data and directory entries)."""
        ...

    def get(self, digest: bytes) -> bytes: ...

    def delete(self, digest: bytes) -> None:
        """Remove a chunk; a chunk that is already gone is not an error."""
        ...

    def list(self) -> Iterator[bytes]:
        """Every stored digest, in no particular order."""
        ...


class LocalChunkStore:
    """Chunks as files ``<root>/<2 hex>/<2 hex>/<64 hex>`` with temporaries in ``tmp_dir``.

    ``tmp_dir`` must be on the same filesystem as ``root`` (the repository's ``tmp/``), so a
    crashed writer leaves its debris in one place that ``clean_stale`` sweeps.

    ``put`` does not fsync: one ``sync`` (``syncfs(2)`` of the repository's file system)
    makes a whole batch durable with one journal commit, where an fsync of each chunk file,
    of its directory and of each new directory's parent cost several per chunk.
    """

    def __init__(self, root: Path, tmp_dir: Path) -> None:
        self.root = root
        self.tmp_dir = tmp_dir
        self._dirs: set[str] = set()      # chunk directories known to exist
        self._names = itertools.count()   # unique temporary names within this process
        # O_TMPFILE in the chunk's own directory: the inode is allocated near its directory
        # (spread over the file system's groups) instead of all in tmp/'s group, where the
        # allocator's search (and its lock, shared by every worker) cost ~10% of a full's
        # CPU; and there is no temporary name to create and unlink.
        self._tmpfile = hasattr(os, "O_TMPFILE")
        self._proc = -1

    def path(self, digest: bytes) -> Path:
        name = digest.hex()
        if len(digest) != 32:
            raise ValueError(f"digest {name} is not 32 bytes")
        return self.root / name[:2] / name[2:4] / name

    def has(self, digest: bytes) -> bool:
        name = digest.hex()
        return os.path.exists(f"{self.root}/{name[:2]}/{name[2:4]}/{name}")

    def put(self, digest: bytes, blob: bytes) -> bool:
        path = self.path(digest)
        parent = str(path.parent)
        try:
            if parent not in self._dirs:
                _make_dirs(path.parent)
                self._dirs.add(parent)
            if self._tmpfile:
                fd = os.open(parent, os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, 0o644)
            else:
                fd = -1
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise io_error(f"cannot write chunk {path}", exc) from exc
            self._tmpfile = False  # this file system has no O_TMPFILE: named temporaries
            fd = -1
        if fd < 0:
            return self._put_named(path, blob)
        try:
            try:
                _write_all(fd, blob)
            except OSError as exc:
                raise io_error(f"cannot write chunk {path}", exc) from exc
            try:
                # An O_TMPFILE file has no name until linked; linkat() fails if the name
                # exists, so of two writers racing on one digest exactly one wins and the
                # other reports a dedup hit. A crash leaves nothing behind.
                os.link(str(fd), path, src_dir_fd=self._proc_fds(), follow_symlinks=True)
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.EPERM, errno.EOPNOTSUPP,
                                     errno.EXDEV):
                    raise io_error(f"cannot store chunk {path}", exc) from exc
                self._tmpfile = False  # no /proc or no link(): named temporaries from now on
                return self._put_named(path, blob)
        finally:
            os.close(fd)
        return True

    def _proc_fds(self) -> int:
        """A descriptor of ``/proc/self/fd``, opened once: ``linkat(2)`` of ``N`` in it with
        ``AT_SYMLINK_FOLLOW`` names the O_TMPFILE file open as descriptor N (os.link without
        a directory descriptor would call link(2), which links the /proc symlink itself)."""
        if self._proc < 0:
            self._proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return self._proc

    def _put_named(self, path: Path, blob: bytes) -> bool:
        """``put`` through a named temporary in ``tmp_dir``: write, link, unlink."""
        # Unique per process (pid) and per call (counter); O_EXCL still refuses a name left
        # by a crashed process that had the same pid.
        temp = f"{self.tmp_dir}/.chunk-{os.getpid()}-{next(self._names)}.tmp"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                _write_all(fd, blob)
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise io_error(f"cannot write chunk {path}", exc) from exc
        try:
            # link() fails if the name exists, so of two writers racing on one digest exactly
            # one wins and the other reports a dedup hit; rename() would silently overwrite.
            os.link(temp, path)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS):
                raise io_error(f"cannot store chunk {path}", exc) from exc
            # Filesystems without hard links: rename. A racing writer may then replace the
            # file with identical bytes, which is harmless; both count it as new.
            try:
                os.replace(temp, path)
            except OSError as exc2:
                raise io_error(f"cannot store chunk {path}", exc2) from exc2
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temp)
        return True

    def sync(self) -> None:
        try:
            sync_filesystem(self.root)
        except OSError as exc:
            raise io_error(f"cannot sync the chunk store {self.root}", exc) from exc

    def get(self, digest: bytes) -> bytes:
        path = self.path(digest)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise IntegrityError(f"chunk {digest.hex()} is missing ({path})") from exc
        except OSError as exc:
            raise io_error(f"cannot read chunk {path}", exc) from exc

    def delete(self, digest: bytes) -> None:
        path = self.path(digest)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise io_error(f"cannot delete chunk {path}", exc) from exc

    def list(self) -> Iterator[bytes]:
        # Sorted walk: deterministic, and the listing of a prefix stays small (<= 256 names).
        for first in _sorted_dirs(self.root):
            for second in _sorted_dirs(first):
                for entry in sorted(os.scandir(second), key=lambda e: e.name):
                    if _HEX64.fullmatch(entry.name):
                        yield bytes.fromhex(entry.name)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _make_dirs(path: Path) -> None:
    """Create ``path`` and missing parents without fsync: ``sync`` makes the entries durable
    with the chunks in them (an fsync of the parent for each new directory was the largest
    cost of storing a chunk, since almost every new chunk lands in a new leaf directory)."""
    try:
        os.mkdir(path)
    except FileExistsError:
        return
    except FileNotFoundError:
        _make_dirs(path.parent)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path)


def sync_filesystem(path: Path) -> None:
    """Flush every dirty page and inode of the file system holding ``path`` to stable
    storage: ``syncfs(2)`` on Linux (it reports write-back errors since Linux 5.8), else
    ``sync(2)``, which flushes every file system."""
    syncfs = _syncfs()
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    try:
        func: Callable[[int], int] = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    return func


def _sorted_dirs(path: Path) -> list[Path]:
    try:
        return sorted(Path(e.path) for e in os.scandir(path) if e.is_dir())
    except FileNotFoundError:
        return []
