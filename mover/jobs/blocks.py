"""The pipeline's BlockSource, from the repository: the bases of partly fetched blocks."""

from __future__ import annotations

import threading

import zstandard

from mover.errors import IntegrityError, RepositoryError
from mover.repo import Repository


class RepositoryBlocks:
    """``mover.pipeline.process.BlockSource`` over ``repo``'s chunks. Thread-safe: each
    thread decodes with its own ``ZstdDecompressor`` (python-zstandard forbids sharing)."""

    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        self._local = threading.local()

    def read_block(self, digest: bytes) -> bytes:
        decompressor: zstandard.ZstdDecompressor | None = getattr(self._local, "d", None)
        if decompressor is None:
            decompressor = self._local.d = zstandard.ZstdDecompressor()
        try:
            return self._repo.read_block(digest, decompressor)
        except IntegrityError:
            raise
        except RepositoryError as exc:  # unreadable: for the copy, as good as missing
            raise IntegrityError(f"chunk {digest.hex()} cannot be read: {exc}") from exc
