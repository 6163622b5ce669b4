"""An in-memory :class:`~mover.repo.chunks.ChunkStore` for tests of the layers above."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from mover.errors import IntegrityError


class MemoryChunkStore:
    """Keeps chunks in a dict under a lock; same contract as the local store, no durability."""

    def __init__(self) -> None:
        self._chunks: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    def has(self, digest: bytes) -> bool:
        with self._lock:
            return digest in self._chunks

    def put(self, digest: bytes, blob: bytes) -> bool:
        with self._lock:
            if digest in self._chunks:
                return False
            self._chunks[digest] = bytes(blob)
            return True

    def get(self, digest: bytes) -> bytes:
        with self._lock:
            try:
                return self._chunks[digest]
            except KeyError:
                raise IntegrityError(f"chunk {digest.hex()} is missing (memory store)") from None

    def delete(self, digest: bytes) -> None:
        with self._lock:
            self._chunks.pop(digest, None)

    def list(self) -> Iterator[bytes]:
        with self._lock:
            return iter(list(self._chunks))

    def sync(self) -> None:
        """Nothing to make durable in memory."""
