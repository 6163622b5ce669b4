"""Chunk framing: round trips, the raw fallback, and detection of every kind of damage."""

from __future__ import annotations

import hashlib
import os
import struct

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from mover import chunk
from mover.errors import IntegrityError

C = zstandard.ZstdCompressor(level=3)
D = zstandard.ZstdDecompressor()


@given(st.binary(max_size=5000))
def test_round_trip_random(data: bytes) -> None:
    blob = chunk.encode(data, C)
    assert chunk.decode(blob, chunk.digest(data), D) == data


@given(st.binary(min_size=1, max_size=64), st.integers(2, 200))
def test_round_trip_compressible_is_zstd(pattern: bytes, repeat: int) -> None:
    data = pattern * repeat + bytes(4096)
    blob = chunk.encode(memoryview(data), C)
    assert blob[:4] == b"MVCK" and blob[4] == 1 and blob[5] == chunk.CODEC_ZSTD
    assert struct.unpack_from("<Q", blob, 8)[0] == len(data)
    assert len(blob) < len(data)
    assert chunk.decode(blob, chunk.digest(data), D) == data


def test_incompressible_is_stored_raw() -> None:
    data = os.urandom(65536)
    blob = chunk.encode(data, C)
    assert blob[5] == chunk.CODEC_RAW
    assert blob[chunk.HEADER_SIZE :] == data
    assert len(blob) == chunk.HEADER_SIZE + len(data)


def test_digest_is_sha256_of_uncompressed() -> None:
    assert chunk.digest(b"abc") == hashlib.sha256(b"abc").digest()
    assert len(chunk.digest(memoryview(b"abc"))) == chunk.DIGEST_SIZE


@given(st.binary(min_size=1, max_size=3000), st.data())
def test_any_flipped_byte_is_detected(data: bytes, draw: st.DataObject) -> None:
    blob = bytearray(chunk.encode(data, C))
    pos = draw.draw(st.integers(0, len(blob) - 1))
    if 6 <= pos < 8:
        return  # reserved bytes carry no meaning in format 1
    blob[pos] ^= 1 << draw.draw(st.integers(0, 7))
    with pytest.raises(IntegrityError, match=chunk.digest(data).hex()):
        chunk.decode(bytes(blob), chunk.digest(data), D)


def test_wrong_digest_and_truncation() -> None:
    data = b"x" * 1000
    blob = chunk.encode(data, C)
    with pytest.raises(IntegrityError, match="does not match"):
        chunk.decode(blob, bytes(32), D)
    with pytest.raises(IntegrityError, match="truncated"):
        chunk.decode(blob[:10], chunk.digest(data), D)
    with pytest.raises(IntegrityError):
        chunk.decode(blob[:-3], chunk.digest(data), D)


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 1 << 20], ids=lambda s: f"{s}-bytes")
def test_is_zero(size: int) -> None:
    buf = bytearray(size)
    assert chunk.is_zero(bytes(buf)) and chunk.is_zero(memoryview(buf))
    if size:
        buf[-1] = 1
        assert not chunk.is_zero(bytes(buf)) and not chunk.is_zero(memoryview(buf))
        buf[-1], buf[0] = 0, 7
        assert not chunk.is_zero(memoryview(buf)[: size])
        assert chunk.is_zero(memoryview(buf)[1:])
