"""A ``Store`` in a local directory: one file per object, ``<root>/<name>``.

Writes go to a temporary file in ``<root>/tmp/`` (same file system), which is fsynced and
then hard-linked into place (create if absent: ``link`` fails when the name exists) or
renamed over it (replace); then the directory is fsynced, so the object is durable when
``put`` returns. A crashed writer leaves at most a temporary, which ``clean_temporaries``
removes once it is old.

An object of ``UNCACHED_FROM`` bytes or more (a pack) leaves the page cache once it is
durable (``POSIX_FADV_DONTNEED``): a backup writes far more than anything reads back soon,
and new page-cache pages are dear. On the project's VM (its memory mapped by the hypervisor
on first touch, and freed memory handed back to it) a write of 16 MiB into new page-cache
pages took 46 ms of CPU, against 4.5 ms when it reused the pages the previous pack left
(docs/performance.md). Readers are not affected but for speed: the bytes are on disk.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import itertools
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from mover import clock
from mover.errors import ObjectMissing
from mover.repo.ioerrors import io_error
from mover.repo.store import Stat, check_name, check_prefix

TMP = "tmp"
UNCACHED_FROM = 1 << 20


class LocalStore:
    """See the module docstring; the ``Store`` protocol says what callers may rely on."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self._tmp = self.root / TMP
        self._dirs: set[Path] = set()         # directories known to exist (durably)
        self._names = itertools.count()
        self._lock = threading.Lock()

    def describe(self) -> str:
        return str(self.root)

    def path(self, name: str) -> Path:
        return self.root / check_name(name)

    def put(self, name: str, data: bytes | bytearray | memoryview, *,
            replace: bool = False) -> bool:
        path = self.path(name)
        try:
            self._make_dirs(path.parent)
            self._make_dirs(self._tmp)
            with self._lock:
                serial = next(self._names)
            temp = self._tmp / f".{path.name}.{os.getpid()}-{threading.get_ident()}-{serial}"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                try:
                    view = memoryview(data).cast("B")
                    _write_all(fd, view)
                    os.fsync(fd)
                    if len(view) >= UNCACHED_FROM:
                        with contextlib.suppress(OSError):  # advice only
                            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
                for attempt in range(3):
                    try:
                        if replace:
                            os.replace(temp, path)
                        else:
                            # link() refuses to replace: of two writers exactly one creates
                            # the object (rename would silently overwrite the other's).
                            os.link(temp, path)
                        break
                    except FileExistsError:
                        # The winner may not have fsynced the directory yet, and our
                        # caller takes False for "it is there, durably".
                        _fsync_dir(path.parent)
                        return False
                    except FileNotFoundError:
                        if attempt == 2:
                            raise
                        # another process's delete removed the (then empty) directory
                        self._dirs.discard(path.parent)
                        self._make_dirs(path.parent)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
            _fsync_dir(path.parent)
        except OSError as exc:
            raise io_error(f"cannot write {path}", exc) from exc
        return True

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self.path(name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise ObjectMissing(f"{path} does not exist") from exc
        except OSError as exc:
            raise io_error(f"cannot read {path}", exc) from exc
        try:
            if length is None:
                length = max(0, os.fstat(fd).st_size - offset)
            parts, done = [], 0
            while done < length:
                part = os.pread(fd, length - done, offset + done)
                if not part:
                    break
                parts.append(part)
                done += len(part)
            return parts[0] if len(parts) == 1 else b"".join(parts)
        except OSError as exc:
            raise io_error(f"cannot read {path}", exc) from exc
        finally:
            os.close(fd)

    def stat(self, name: str) -> Stat | None:
        path = self.path(name)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise io_error(f"cannot stat {path}", exc) from exc
        return Stat(st.st_size, st.st_mtime)

    def list(self, prefix: str) -> Iterator[str]:
        check_prefix(prefix)
        start = self.root / prefix if prefix else self.root
        try:
            yield from sorted(self._walk(start, prefix))
        except OSError as exc:
            raise io_error(f"cannot list {start}", exc) from exc

    def _walk(self, directory: Path, prefix: str) -> Iterator[str]:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                if not prefix and entry.name in (TMP, "locks", "lost+found"):
                    continue  # temporaries, lock files, fsck: not objects
                yield from self._walk(Path(entry.path), f"{prefix}{entry.name}/")
            else:
                yield f"{prefix}{entry.name}"

    def delete(self, name: str) -> None:
        self.delete_many([name])

    def delete_many(self, names: Iterable[str]) -> None:
        paths = [self.path(n) for n in names]
        parents: set[Path] = set()
        try:
            for path in paths:
                path.unlink(missing_ok=True)
                parents.add(path.parent)
            # Durable on return (gc relies on the order of its deletes surviving a power
            # loss): each directory touched is fsynced once, however many names went.
            for parent in parents:
                with contextlib.suppress(FileNotFoundError):
                    _fsync_dir(parent)
            # Empty directories are not objects: remove them, up to the root. A writer
            # that meanwhile links into one finds it gone and makes it again (``put``).
            for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
                while parent != self.root:
                    try:
                        parent.rmdir()
                    except OSError:
                        break
                    self._dirs.discard(parent)
                    parent = parent.parent
        except OSError as exc:
            raise io_error(f"cannot delete {paths[0] if len(paths) == 1 else names}", exc) \
                from exc

    def clean_temporaries(self, max_age: float) -> builtins.list[str]:
        """Remove temporaries older than ``max_age`` seconds (a writer keeps one only while
        it writes it); returns their names."""
        cutoff = clock.now().timestamp() - max_age
        removed: builtins.list[str] = []
        try:
            entries = list(os.scandir(self._tmp))
        except FileNotFoundError:
            return []
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed.append(entry.name)
        return removed

    def _make_dirs(self, directory: Path) -> None:
        """Create ``directory`` and its parents durably. Checked on every call (cheap: a
        cached set) because ``delete`` removes empty directories."""
        if directory in self._dirs and directory.is_dir():
            return
        missing = []
        current = directory
        while not current.is_dir():
            missing.append(current)
            current = current.parent
        for path in reversed(missing):
            with contextlib.suppress(FileExistsError):
                path.mkdir()
            _fsync_dir(path.parent)
        self._dirs.add(directory)


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # some file systems cannot fsync a directory
            raise
    finally:
        os.close(fd)
