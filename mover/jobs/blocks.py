"""The pipeline's BlockSource, from the repository: the bases of partly fetched blocks."""

from __future__ import annotations

from mover.errors import IntegrityError, RepositoryError
from mover.repo import Repository


class RepositoryBlocks:
    """``mover.pipeline.process.BlockSource`` over ``repo``'s chunks (thread-safe: the
    repository's codec keeps a decompressor per thread)."""

    def __init__(self, repo: Repository) -> None:
        self._repo = repo

    def read_block(self, digest: bytes) -> bytes:
        try:
            return self._repo.read_block(digest)
        except IntegrityError:
            raise
        except RepositoryError as exc:  # unreadable: for the copy, as good as missing
            raise IntegrityError(f"chunk {digest.hex()} cannot be read: {exc}") from exc
