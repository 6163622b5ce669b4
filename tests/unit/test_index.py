"""FixedIndex: slots, serialization, and detection of a changed byte anywhere in the file."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mover.errors import IntegrityError
from mover.index import HEADER_SIZE, FixedIndex

digest_st = st.one_of(st.none(), st.binary(min_size=32, max_size=32))


@st.composite
def indexes(draw: st.DrawFn) -> FixedIndex:
    block_size = draw(st.sampled_from([1, 512, 4096, 1 << 20]))
    capacity = draw(st.integers(0, 40)) * block_size + draw(st.integers(0, block_size - 1))
    index = FixedIndex(capacity, block_size)
    for block in range(len(index)):
        index.set(block, draw(digest_st))
    return index


@given(indexes())
def test_round_trip(index: FixedIndex) -> None:
    data = index.to_bytes()
    assert len(data) == HEADER_SIZE + 32 * len(index)
    back = FixedIndex.from_bytes(data)
    assert back == index
    assert (back.capacity, back.block_size, len(back)) == (
        index.capacity, index.block_size, len(index),
    )
    assert [back.get(b) for b in range(len(back))] == [index.get(b) for b in range(len(index))]


@given(indexes(), st.data())
def test_flipped_byte_is_detected(index: FixedIndex, data: st.DataObject) -> None:
    blob = bytearray(index.to_bytes())
    pos = data.draw(st.integers(0, len(blob) - 1))
    blob[pos] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(IntegrityError):
        FixedIndex.from_bytes(bytes(blob))


@given(indexes())
def test_copy_is_independent(index: FixedIndex) -> None:
    copy = index.copy()
    assert copy == index
    if len(index):
        before = index.get(0)
        copy.set(0, b"\x01" * 32)
        assert index.get(0) == before
        assert copy.get(0) == b"\x01" * 32


def test_zero_slots_digests_and_counts() -> None:
    a, b = hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()
    index = FixedIndex(capacity=5 * 4096 + 1, block_size=4096)
    assert len(index) == 6
    for block, value in enumerate([a, None, b, a, None, a]):
        index.set(block, value)
    assert index.get(1) is None and index.get(3) == a
    assert list(index.digests()) == [a, b]
    assert index.zero_blocks() == 2
    index.set(0, FixedIndex.ZERO)
    assert index.get(0) is None
    raw = index.to_bytes()
    assert raw[:8] == b"MVINDEX\0"
    assert int.from_bytes(raw[16:24], "little") == 4096
    assert int.from_bytes(raw[24:32], "little") == 5 * 4096 + 1
    assert int.from_bytes(raw[32:40], "little") == 6
    assert raw[40:72] == hashlib.sha256(raw[HEADER_SIZE:]).digest()
    assert raw[4064:4096] == hashlib.sha256(raw[:4064]).digest()


def test_bounds_and_bad_digests() -> None:
    index = FixedIndex(10, 4)
    with pytest.raises(IndexError):
        index.get(3)
    with pytest.raises(IndexError):
        index.set(-1, None)
    with pytest.raises(ValueError):
        index.set(0, b"short")
    with pytest.raises(ValueError):
        FixedIndex(10, 4, bytearray(10))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:100], "truncated"),
        (lambda b: b"X" + b[1:], "not an index"),
        (lambda b: b[:8] + (2).to_bytes(4, "little") + b[12:], "version 2"),
        (lambda b: b + bytes(32), "slot bytes"),
    ],
    ids=["truncated", "magic", "newer-version", "extra-slot"],
)
def test_damage_messages(mutate: object, message: str) -> None:
    index = FixedIndex(8192, 4096)
    with pytest.raises(IntegrityError, match=message):
        FixedIndex.from_bytes(mutate(index.to_bytes()))  # type: ignore[operator]
