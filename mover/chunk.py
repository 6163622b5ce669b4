"""Chunk framing: the content address of a block and the bytes of its stored chunk file.

A chunk is named by the SHA-256 of the block's *uncompressed* bytes, so the address does
not depend on the codec or level and identical blocks from any disk or backup share one
chunk. The stored file is a 16-byte header followed by the payload (``docs/repository.md``):

    offset  size  field
    0       4     magic  b"MVCK"
    4       1     format version (1)
    5       1     codec: 0 = raw, 1 = zstd
    6       2     reserved, zero
    8       8     uncompressed length, little-endian

Compressor objects are not thread-safe (python-zstandard), so callers pass in one per thread.
"""

from __future__ import annotations

import functools
import hashlib
import struct

import zstandard

from mover.errors import IntegrityError

DIGEST_SIZE = 32
MAGIC = b"MVCK"
FORMAT = 1
CODEC_RAW = 0
CODEC_ZSTD = 1
_HEADER = struct.Struct("<4sBBHQ")
HEADER_SIZE = _HEADER.size
# Probe this much first: a data block almost always has a non-zero byte near its start,
# and a small copy is cheaper than copying a whole memoryview to compare it.
_PROBE = 4096


def digest(data: bytes | bytearray | memoryview) -> bytes:
    """The 32-byte SHA-256 of ``data``: the chunk's address."""
    return hashlib.sha256(data).digest()


def is_zero(data: bytes | memoryview) -> bool:
    """True if every byte of ``data`` is zero (an empty buffer counts as zero)."""
    size = len(data) if isinstance(data, bytes) else data.nbytes
    zero = _zeros(size)
    if isinstance(data, bytes):
        return data == zero  # a memcmp
    # memoryview == bytes compares item by item (slow); compare copies instead.
    view = data.cast("B") if data.format != "B" or data.ndim != 1 else data
    if bytes(view[:_PROBE]) != zero[:_PROBE]:
        return False
    return bytes(view) == zero


@functools.lru_cache(maxsize=8)
def _zeros(size: int) -> bytes:
    # A handful of sizes occur: the block size and each disk's short last block.
    return bytes(size)


def encode(data: bytes | memoryview, compressor: zstandard.ZstdCompressor) -> bytes:
    """The chunk file for ``data``: zstd-compressed, or raw when compression does not shrink it.

    The result decodes with :func:`decode` to exactly ``data``.
    """
    size = len(data) if isinstance(data, bytes) else data.nbytes
    compressed: bytes = compressor.compress(data)
    if len(compressed) < size:
        return _HEADER.pack(MAGIC, FORMAT, CODEC_ZSTD, 0, size) + compressed
    return _HEADER.pack(MAGIC, FORMAT, CODEC_RAW, 0, size) + bytes(data)


def decode(
    blob: bytes, expected_digest: bytes, decompressor: zstandard.ZstdDecompressor
) -> bytes:
    """The block stored in ``blob``, checked against ``expected_digest``.

    Raises IntegrityError naming the digest when the header is not a known chunk header, the
    payload does not decompress to the recorded length, or the result's SHA-256 differs.
    """
    name = expected_digest.hex()
    if len(blob) < HEADER_SIZE:
        raise IntegrityError(f"chunk {name} is truncated ({len(blob)} bytes)")
    magic, version, codec, _reserved, size = _HEADER.unpack_from(blob)
    if magic != MAGIC or version != FORMAT:
        raise IntegrityError(f"chunk {name} has no valid header (magic {magic!r}, v{version})")
    payload = memoryview(blob)[HEADER_SIZE:]
    if codec == CODEC_RAW:
        data = bytes(payload)
    elif codec == CODEC_ZSTD:
        try:
            # Check the frame's own size first: a damaged one could ask for gigabytes.
            framed = zstandard.get_frame_parameters(payload).content_size
            if framed not in (size, zstandard.CONTENTSIZE_UNKNOWN):
                raise IntegrityError(f"chunk {name} frame says {framed} bytes, header {size}")
            data = decompressor.decompress(payload, max_output_size=size)
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"chunk {name} does not decompress: {exc}") from exc
    else:
        raise IntegrityError(f"chunk {name} has unknown codec {codec}")
    if len(data) != size:
        raise IntegrityError(f"chunk {name} holds {len(data)} bytes, header says {size}")
    if digest(data) != expected_digest:
        raise IntegrityError(f"chunk {name} does not match its digest (data damaged)")
    return data
