"""Restore targets: where a restore writes the image of one disk.

The restore job (``mover.jobs.restore``) reads and checks chunks concurrently and hands the
blocks to a target in ascending offset order, one call at a time, from one thread. Three
targets exist:

``NewFile``   a regular file that does not exist yet (or a regular file ``--force``
              replaces; never a FIFO, device node or symlink). Written
              as ``<name>.mover-tmp-<pid>`` in the same directory, sparse (zero blocks stay
              holes), fsynced, then renamed over the name and the directory fsynced: a
              restore that fails or is killed never leaves a file under the final name.
``InPlace``   an existing regular file or a block device, written where it is (a full
              restore to a device, or a differential restore). A device is opened with
              ``O_EXCL``: one in use raises OSError(EBUSY). Zero blocks are written as
              zeros. A failure leaves it *partially written*: ``partial`` is True and the job
              reports the offset up to which the new image was written.
``Stream``    standard output (or any file descriptor), strictly sequential: every byte of
              the image, zero blocks as zeros, no seeking.

Every method raises OSError on an I/O failure; the job maps it to a mover error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

_ZEROS = bytes(1 << 20)


class RestoreTarget(Protocol):
    """The seam a restore writes through (see the module docstring for the three kinds).

    Contract: ``write``/``zero`` are called with ascending, non-overlapping offsets from a
    single thread; a target where ``sequential`` is True also gets every byte (no gaps),
    the others may be given only some blocks (a differential restore). ``commit`` is called
    once after the last block and makes the image durable and visible; ``abort`` is called
    instead on any failure or interruption and never raises. After ``abort``, ``partial``
    says whether the target was changed (only an in-place target can be)."""

    sequential: bool
    partial: bool

    def describe(self) -> str: ...

    def size(self) -> int: ...

    def write(self, offset: int, data: bytes | memoryview) -> int: ...

    def zero(self, offset: int, length: int) -> int: ...

    def read(self, offset: int, length: int) -> bytes: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> int:
    view, done = memoryview(data), 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)
    return done


def _write_zeros(write: Callable[[memoryview, int], int], offset: int, length: int) -> int:
    done = 0
    while done < length:
        step = min(length - done, len(_ZEROS))
        done += write(memoryview(_ZEROS)[:step], offset + done)
    return done


class NewFile:
    """A new sparse image file, made visible by rename only once complete."""

    sequential = False

    def __init__(self, path: Path, capacity: int, replace: bool = False) -> None:
        self.path = path
        self.partial = False
        if not replace and os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "exists", str(path))
        self._temp = path.with_name(f"{path.name}.mover-tmp-{os.getpid()}")
        self._replace = replace
        self._fd = os.open(self._temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(self._fd, capacity)
        except BaseException:
            self.abort()
            raise

    def describe(self) -> str:
        return str(self.path)

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def write(self, offset: int, data: bytes | memoryview) -> int:
        return _pwrite_all(self._fd, data, offset)

    def zero(self, offset: int, length: int) -> int:
        return 0  # the file was created sized and empty: a hole reads as zeros

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    def commit(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        if os.path.lexists(self.path) and not (  # appeared, or was swapped, while we wrote
                self._replace and stat.S_ISREG(os.lstat(self.path).st_mode)):
            self.abort()
            raise FileExistsError(errno.EEXIST, "appeared during the restore", str(self.path))
        os.replace(self._temp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def abort(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(OSError):
            os.unlink(self._temp)


class InPlace:
    """An existing regular file or block device, overwritten where it is."""

    sequential = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = False
        # O_EXCL on a block device: Linux refuses (EBUSY) one that is mounted or held open
        # exclusively (LVM, md, another restore), and then holds it until close.
        exclusive = os.O_EXCL if stat.S_ISBLK(os.stat(path).st_mode) else 0
        self._fd = os.open(path, os.O_RDWR | exclusive)
        self.is_device = stat.S_ISBLK(os.fstat(self._fd).st_mode)

    def describe(self) -> str:
        return str(self.path)

    def size(self) -> int:
        return os.lseek(self._fd, 0, os.SEEK_END)  # st_size is 0 for a device

    def write(self, offset: int, data: bytes | memoryview) -> int:
        self.partial = True
        return _pwrite_all(self._fd, data, offset)

    def zero(self, offset: int, length: int) -> int:
        self.partial = True
        return _write_zeros(lambda d, o: _pwrite_all(self._fd, d, o), offset, length)

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    def commit(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1

    def abort(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)  # what was written is at least durable and reportable
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


class Stream:
    """Every byte of the image, in order, to a file descriptor (standard output)."""

    sequential = True

    def __init__(self, fd: int, name: str = "standard output") -> None:
        self._fd = fd
        self._name = name
        self._offset = 0
        self.partial = False

    def describe(self) -> str:
        return self._name

    def size(self) -> int:
        return self._offset

    def write(self, offset: int, data: bytes | memoryview) -> int:
        if offset != self._offset:
            raise ValueError(f"stream write at {offset}, expected {self._offset}")
        view, done = memoryview(data), 0
        self.partial = True
        while done < len(view):
            done += os.write(self._fd, view[done:])
        self._offset += done
        return done

    def zero(self, offset: int, length: int) -> int:
        return _write_zeros(lambda d, o: self.write(o, d), offset, length)

    def read(self, offset: int, length: int) -> bytes:
        raise OSError(errno.ESPIPE, f"{self._name} cannot be read back")

    def commit(self) -> None:
        with contextlib.suppress(OSError):  # a pipe or terminal cannot be fsynced
            os.fsync(self._fd)

    def abort(self) -> None:
        pass
