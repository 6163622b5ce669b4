"""Chunk stores: where encoded blocks live, addressed by the SHA-256 of their content.

:class:`ChunkStore` is the seam between the pipeline and a storage backend; the local
filesystem is the first backend, an object store the next (same contract, new file).
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from mover.errors import IntegrityError
from mover.repo.atomic import fsync_dir, make_dir, write_temp
from mover.repo.ioerrors import io_error

_HEX64 = re.compile(r"[0-9a-f]{64}")


class ChunkStore(Protocol):
    """Content-addressed blobs. Every method is thread-safe and safe for several processes.

    ``put`` is atomic and idempotent: a reader never sees a partial chunk, an existing chunk
    is never rewritten (it returns False, a dedup hit), and when ``put`` returns the chunk is
    durable. The store does not check that ``digest`` matches ``blob``: ``chunk.decode`` does,
    on every read. I/O failures raise RepositoryError naming the path; ``get`` of a missing
    chunk raises IntegrityError naming the digest (an index refers to it, so it is damage).
    """

    def has(self, digest: bytes) -> bool: ...

    def put(self, digest: bytes, blob: bytes) -> bool: ...

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
    """

    def __init__(self, root: Path, tmp_dir: Path) -> None:
        self.root = root
        self.tmp_dir = tmp_dir

    def path(self, digest: bytes) -> Path:
        name = digest.hex()
        if len(digest) != 32:
            raise ValueError(f"digest {name} is not 32 bytes")
        return self.root / name[:2] / name[2:4] / name

    def has(self, digest: bytes) -> bool:
        return self.path(digest).exists()

    def put(self, digest: bytes, blob: bytes) -> bool:
        path = self.path(digest)
        if path.exists():
            return False  # dedup: same address, same content; rewriting would only cost I/O
        try:
            make_dir(path.parent)
            temp = write_temp(self.tmp_dir, blob, prefix="chunk-")
        except OSError as exc:
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
            temp.unlink(missing_ok=True)
        try:
            fsync_dir(path.parent)
        except OSError as exc:
            raise io_error(f"cannot sync directory {path.parent}", exc) from exc
        return True

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


def _sorted_dirs(path: Path) -> list[Path]:
    try:
        return sorted(Path(e.path) for e in os.scandir(path) if e.is_dir())
    except FileNotFoundError:
        return []
