"""The nbdkit Python plugin that ``mover serve`` runs: a read-only export of one disk of
one backup (``mover.jobs.diskimage``). Loaded by nbdkit's embedded interpreter, never
imported by mover itself; nbdkit passes ``repo=``, ``backup=`` and ``disk=``.

Read-only (nbdkit also runs with ``--readonly``), parallel requests, zero blocks reported
as holes through block status, a chunk failing its check answered with EIO (and logged).
"""

from __future__ import annotations

import errno
from typing import Any

import nbdkit  # type: ignore[import-not-found]  # exists only inside nbdkit

from mover.errors import MoverError
from mover.jobs.diskimage import DiskImage
from mover.repo import Repository

API_VERSION = 2
_config: dict[str, str] = {}
_image: list[DiskImage] = []


def config(key: str, value: str) -> None:
    if key not in ("repo", "backup", "disk"):
        raise RuntimeError(f"unknown parameter {key}")
    _config[key] = value


def config_complete() -> None:
    repo = Repository.open(_config["repo"], create=False)
    record = repo.get_backup(_config["backup"])
    _image.append(DiskImage(repo, repo.read_index(record, int(_config["disk"]))))


def thread_model() -> int:
    return int(nbdkit.THREAD_MODEL_PARALLEL)


def open(readonly: bool) -> int:  # nbdkit's name for the callback
    return 1


def get_size(h: int) -> int:
    return _image[0].size


def can_write(h: int) -> bool:
    return False


def can_multi_conn(h: int) -> bool:
    return True  # read-only: every connection sees the same bytes


def can_extents(h: int) -> bool:
    return True


def pread(h: int, buf: Any, offset: int, flags: int) -> None:
    try:
        buf[:] = _image[0].pread(offset, len(buf))
    except MoverError as exc:
        nbdkit.debug(f"mover: {exc}")
        nbdkit.set_error(errno.EIO)
        raise


def extents(h: int, count: int, offset: int, flags: int) -> list[tuple[int, int, int]]:
    hole = int(nbdkit.EXTENT_HOLE | nbdkit.EXTENT_ZERO)
    return [(start, length, hole if zero else 0)
            for start, length, zero in _image[0].extents(offset, count)]
