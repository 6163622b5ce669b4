"""The chunk codec: the only code that turns blocks into stored chunks and back.

Built from ``config.json`` (digest, compression, level), so every writer of a repository
encodes alike; encryption, when it comes, plugs in here and nowhere else. The framing of
one chunk is ``mover.chunk`` (pure); this class adds the per-thread compressor state that
python-zstandard requires (a compressor must not be shared between threads).
"""

from __future__ import annotations

import threading

import zstandard

from mover import chunk


class ChunkCodec:
    """Thread-safe: each thread gets its own (de)compressor on first use."""

    def __init__(self, level: int) -> None:
        self.level = level
        self._local = threading.local()

    @staticmethod
    def digest(block: bytes | bytearray | memoryview) -> bytes:
        """The chunk's address: SHA-256 of the uncompressed block."""
        return chunk.digest(block)

    def encode(self, block: bytes | bytearray | memoryview) -> bytes:
        compressor: zstandard.ZstdCompressor | None = getattr(self._local, "c", None)
        if compressor is None:
            compressor = self._local.c = zstandard.ZstdCompressor(level=self.level)
        return chunk.encode(memoryview(block), compressor)

    def decode(self, blob: bytes, digest: bytes) -> bytes:
        """The block in ``blob``, checked against ``digest`` (IntegrityError naming it)."""
        decompressor: zstandard.ZstdDecompressor | None = getattr(self._local, "d", None)
        if decompressor is None:
            decompressor = self._local.d = zstandard.ZstdDecompressor()
        return chunk.decode(blob, digest, decompressor)
