"""The NBD messages (pure, property-tested) and the client against a scripted server that
does what nbdkit never does: fragmented, reordered and interleaved structured replies,
holes, error chunks, replies one byte at a time and protocol violations."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mover.errors import TransportError
from mover.pipeline import nbdproto as p
from mover.pipeline.nbd import NbdTransport, unix

u16, u32, u64 = (st.integers(0, 2**n - 1) for n in (16, 32, 64))


@given(flags=u16, rtype=u16, cookie=u64, length=u32)
def test_structured_headers_decode_to_their_fields(flags: int, rtype: int, cookie: int,
                                                   length: int) -> None:
    raw = struct.pack(">IHHQI", p.STRUCTURED_REPLY_MAGIC, flags, rtype, cookie, length)
    assert p.parse_reply_head(raw[:16]) is None
    head = p.structured_header(raw)
    assert (head.flags, head.type, head.cookie, head.length) == (flags, rtype, cookie, length)
    assert head.done == bool(flags & p.REPLY_FLAG_DONE)


@given(error=u32, cookie=u64)
def test_simple_replies_decode(error: int, cookie: int) -> None:
    head = p.parse_reply_head(struct.pack(">IIQ", p.SIMPLE_REPLY_MAGIC, error, cookie))
    assert head is not None and (head.error, head.cookie, head.done) == (error, cookie, True)


@given(runs=st.lists(st.tuples(st.integers(1, 2**32 - 1), u32), min_size=1, max_size=50),
       context=u32, offset=st.integers(0, 2**62))
def test_block_status_extents_follow_each_other_from_the_offset(
        runs: list[tuple[int, int]], context: int, offset: int) -> None:
    raw = struct.pack(">I", context) + b"".join(struct.pack(">II", n, f) for n, f in runs)
    got_context, extents = p.parse_block_status(raw, offset)
    assert got_context == context
    assert [(e.length, e.flags) for e in extents] == runs
    assert extents[0].offset == offset
    assert all(a.end == b.offset for a, b in itertools.pairwise(extents))


@given(errno=st.integers(1, 2**32 - 1), message=st.text(max_size=40), offset=u64)
def test_error_chunks_carry_errno_and_message(errno: int, message: str, offset: int) -> None:
    text = message.encode()
    raw = struct.pack(">IH", errno, len(text)) + text
    assert p.parse_error(p.REPLY_ERROR, raw) == (errno, message)
    got, said = p.parse_error(p.REPLY_ERROR_OFFSET, raw + struct.pack(">Q", offset))
    assert got == errno and said.endswith(f"at offset {offset})" if message
                                          else f"at offset {offset}")


@given(st.binary(max_size=64))
def test_any_bytes_decode_or_raise_protocol_violation(data: bytes) -> None:
    for decode in (lambda: p.parse_block_status(data, 0), lambda: p.parse_hole(data),
                   lambda: p.parse_error(p.REPLY_ERROR, data),
                   lambda: p.apply_info(None, data), lambda: p.parse_meta_context(data)):
        with contextlib.suppress(p.ProtocolViolation):
            decode()
    if len(data) >= 16:
        with contextlib.suppress(p.ProtocolViolation):
            p.parse_reply_head(data[:16])


@given(name=st.text(max_size=30))
def test_go_names_the_export_and_asks_for_block_sizes(name: str) -> None:
    raw = p.go(name)
    magic, opt, length = struct.unpack_from(">QII", raw)
    encoded = name.encode()
    assert (magic, opt, length) == (p.IHAVEOPT, p.OPT_GO, 4 + len(encoded) + 4)
    assert raw[16:20] == struct.pack(">I", len(encoded)) and raw[20:20 + len(encoded)] == encoded
    assert raw[-4:] == struct.pack(">HH", 1, p.INFO_BLOCK_SIZE)


def test_the_handshake_refuses_an_oldstyle_server() -> None:
    with pytest.raises(p.ProtocolViolation, match="newstyle"):
        p.parse_hello(struct.pack(">QQH", p.NBDMAGIC, 0x00420281861253, 0))


# -- the client against a scripted server --

SIZE = 1 << 20
DATA = random.Random(3).randbytes(SIZE)
Script = Callable[[int, int, int], list[bytes]]   # (cookie, offset, length) -> messages


def chunk(cookie: int, rtype: int, payload: bytes, done: bool = False) -> bytes:
    return struct.pack(">IHHQI", p.STRUCTURED_REPLY_MAGIC, p.REPLY_FLAG_DONE if done else 0,
                       rtype, cookie, len(payload)) + payload


def data(cookie: int, offset: int, length: int, done: bool = False) -> bytes:
    return chunk(cookie, p.REPLY_OFFSET_DATA, struct.pack(">Q", offset)
                 + DATA[offset:offset + length], done)


async def serve(sock: Path, script: Script, trickle: bool = False
                ) -> asyncio.AbstractServer:
    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(struct.pack(">QQH", p.NBDMAGIC, p.IHAVEOPT, p.FLAG_FIXED_NEWSTYLE))
        await reader.readexactly(4)
        while True:
            _, opt, length = struct.unpack(">QII", await reader.readexactly(16))
            await reader.readexactly(length)

            def reply(rtype: int, body: bytes = b"", opt: int = opt) -> bytes:
                return struct.pack(">QIII", p.OPTION_REPLY_MAGIC, opt, rtype, len(body)) + body

            if opt == p.OPT_SET_META_CONTEXT:
                writer.write(reply(p.REP_META_CONTEXT, struct.pack(">I", 7)
                                   + p.BASE_ALLOCATION.encode()))
            if opt == p.OPT_GO:
                writer.write(reply(p.REP_INFO, struct.pack(">HQH", p.INFO_EXPORT, SIZE, 1)))
            writer.write(reply(p.REP_ACK))
            if opt == p.OPT_GO:
                break
        while True:
            try:
                head = await reader.readexactly(28)
            except asyncio.IncompleteReadError:
                return
            _, _, cmd, cookie, offset, length = struct.unpack(">IHHQQI", head)
            if cmd == p.CMD_DISC:
                writer.close()
                return
            for message in script(cookie, offset, length):
                if trickle:
                    for i in range(len(message)):
                        writer.write(message[i:i + 1])
                        await writer.drain()
                else:
                    writer.write(message)
            await writer.drain()

    return await asyncio.start_unix_server(one, str(sock))


@pytest.fixture
async def scripted(tmp_path: Path) -> AsyncIterator[Callable[..., asyncio.Future[NbdTransport]]]:
    servers: list[asyncio.AbstractServer] = []
    transports: list[NbdTransport] = []

    async def make(script: Script, trickle: bool = False) -> NbdTransport:
        sock = tmp_path / f"s{len(servers)}"
        servers.append(await serve(sock, script, trickle))
        t = NbdTransport(unix(str(sock)), "scripted", read_timeout=10)
        transports.append(t)
        return await t.open(SIZE)

    yield make  # type: ignore[misc]
    for t in transports:
        await t.close()
    for s in servers:
        s.close()


def reordered_with_a_hole(cookie: int, offset: int, length: int) -> list[bytes]:
    """Three pieces, the last first, the middle one a hole (and the client zero-fills)."""
    a, b = length // 3, 2 * length // 3
    return [data(cookie, offset + b, length - b),
            chunk(cookie, p.REPLY_OFFSET_HOLE, struct.pack(">QI", offset + a, b - a)),
            data(cookie, offset, a), chunk(cookie, p.REPLY_NONE, b"", done=True)]


@pytest.mark.parametrize("trickle", [False, True], ids=["whole-messages", "one-byte-writes"])
async def test_fragmented_reordered_replies_fill_the_buffer(
        scripted: Callable[..., asyncio.Future[NbdTransport]], trickle: bool) -> None:
    t = await scripted(reordered_with_a_hole, trickle)
    buf = memoryview(bytearray(b"\xff" * 3000))
    await t.read_into(1000, buf)
    a, b = 1000, 2000
    assert bytes(buf) == DATA[1000:1000 + a] + bytes(b - a) + DATA[1000 + b:4000]


async def test_replies_of_concurrent_requests_interleave(
        scripted: Callable[..., asyncio.Future[NbdTransport]]) -> None:
    held: list[tuple[int, int, int]] = []

    def hold_then_answer_backwards(cookie: int, offset: int, length: int) -> list[bytes]:
        held.append((cookie, offset, length))
        if len(held) < 4:
            return []
        out = []
        for c, o, n in reversed(held):
            out += [data(c, o, n // 2)]
        for c, o, n in held:
            out += [data(c, o + n // 2, n - n // 2, done=True)]
        return out

    t = await scripted(hold_then_answer_backwards)
    bufs = [memoryview(bytearray(5000)) for _ in range(4)]
    await asyncio.gather(*(t.read_into(i * 7000, b) for i, b in enumerate(bufs)))
    for i, b in enumerate(bufs):
        assert bytes(b) == DATA[i * 7000:i * 7000 + 5000]


@pytest.mark.parametrize(("errno", "transient"), [(p.EIO, True), (p.EINVAL, False),
                                                  (p.EPERM, False), (p.ESHUTDOWN, True)],
                         ids=["EIO", "EINVAL", "EPERM", "ESHUTDOWN"])
async def test_error_chunks_are_classified(scripted: Callable[..., asyncio.Future[NbdTransport]],
                                           errno: int, transient: bool) -> None:
    def fail(cookie: int, offset: int, length: int) -> list[bytes]:
        msg = b"vddk said no"
        return [chunk(cookie, p.REPLY_ERROR, struct.pack(">IH", errno, len(msg)) + msg,
                      done=True)]

    t = await scripted(fail)
    with pytest.raises(TransportError, match="vddk said no") as info:
        await t.read_into(0, memoryview(bytearray(100)))
    assert info.value.transient is transient


@pytest.mark.parametrize("bad", ["outside-the-request", "short", "unknown-cookie"])
async def test_protocol_violations_are_permanent(
        scripted: Callable[..., asyncio.Future[NbdTransport]], bad: str) -> None:
    def lie(cookie: int, offset: int, length: int) -> list[bytes]:
        if bad == "outside-the-request":
            return [data(cookie, offset + 10, length, done=True)]
        if bad == "short":
            return [data(cookie, offset, length - 1, done=True)]
        return [data(cookie + 99, offset, length, done=True)]

    t = await scripted(lie)
    with pytest.raises(TransportError) as info:
        await t.read_into(0, memoryview(bytearray(100)))
    assert not info.value.transient


async def test_block_status_is_clipped_and_gap_free(
        scripted: Callable[..., asyncio.Future[NbdTransport]]) -> None:
    def status(cookie: int, offset: int, length: int) -> list[bytes]:
        runs = [(4096, 0), (8192, p.STATE_HOLE | p.STATE_ZERO), (SIZE, 0)]
        body = struct.pack(">I", 7) + b"".join(struct.pack(">II", n, f) for n, f in runs)
        return [chunk(cookie, p.REPLY_BLOCK_STATUS, body, done=True)]

    t = await scripted(status)
    got = await t.extents(0, 20000)
    assert [(e.offset, e.length, e.reads_as_zero) for e in got] == [
        (0, 4096, False), (4096, 8192, True), (12288, 20000 - 12288, False)]
