"""An asyncio NBD client: the transport that reads a disk from an NBD server (nbdkit).

One ``NbdConnection`` is one socket (Unix or TCP) after the fixed newstyle handshake, with
structured replies and ``base:allocation`` negotiated when the server offers them. Many
requests are in flight on it at once; replies are matched by cookie. Read data goes from
the socket straight into the caller's buffer: the receiver is an ``asyncio.BufferedProtocol``
whose ``get_buffer`` hands the kernel the slice of the caller's buffer that the next bytes
belong to (no per-block copy; ``StreamReader.readexactly`` was measured 4x slower for 4 MiB
reads). A request whose caller was cancelled is *abandoned*: its remaining bytes go to a
scratch buffer, never into the buffer the caller may already be reusing.

``NbdTransport`` is the pipeline's ``Transport`` over a few such connections, opened lazily
and opened again after one is lost. Errors are classified here, as ``folder.py`` does for
HTTP (``TransportError.transient``): a lost or refused connection, a timeout and the server
errors EIO/ENOMEM/ESHUTDOWN are transient; every other server error, a read past the end
of the export and a protocol violation are permanent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mover.errors import TransportError
from mover.pipeline import nbdproto as p

__all__ = ["NbdConnection", "NbdTransport", "Opener", "tcp", "unix"]

log = logging.getLogger(__name__)


class NbdFailure(Exception):
    """A request's failure as the connection saw it; ``NbdTransport`` maps it."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(eq=False, slots=True)
class _Request:
    kind: int
    offset: int
    length: int
    buf: memoryview | None
    done: asyncio.Future[None]
    covered: int = 0
    error: str | None = None
    errno: int = 0
    extents: list[p.Extent] = field(default_factory=list)
    abandoned: bool = False


class _Wire(asyncio.BufferedProtocol):
    """Fills one target buffer at a time and calls its callback when it is full.

    With no target the socket is paused. A loop may still deliver bytes then (uvloop reads
    once more after ``pause_reading``): they are kept in ``_stash`` and go into the next
    target first."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._target = memoryview(bytearray(1))
        self._filled = 0
        self._on_full: Callable[[], None] | None = None
        self._owner: _Request | None = None
        self._paused = False
        self._scratch = bytearray()
        self._spare = bytearray(64 * 1024)
        self._stash = bytearray()
        self._pumping = False
        self.on_lost: Callable[[Exception], None] = lambda exc: None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods
        self.transport = transport  # type: ignore[assignment]
        if self._on_full is None:
            self._pause()

    def expect(self, target: memoryview, on_full: Callable[[], None],
               owner: _Request | None = None) -> None:
        """The next ``len(target)`` bytes go into ``target`` (non-empty), then ``on_full``."""
        self._target, self._filled, self._on_full, self._owner = target, 0, on_full, owner
        if self._stash:
            self._pump()
        elif self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def _pump(self) -> None:
        """Feed stashed bytes to the targets, in order, until one is left waiting."""
        if self._pumping:
            return  # a callback set the next target: the loop below goes on with it
        self._pumping = True
        try:
            while self._on_full is not None and self._stash:
                n = min(len(self._stash), len(self._target) - self._filled)
                if self._owner is None or not self._owner.abandoned:
                    self._target[self._filled:self._filled + n] = self._stash[:n]
                del self._stash[:n]
                self._filled += n
                if self._filled == len(self._target):
                    self._fire()
        except p.ProtocolViolation as exc:
            self._fail(NbdFailure(f"protocol violation: {exc}", transient=False))
        finally:
            self._pumping = False
        if self._on_full is None:
            self._pause()
        elif self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def _fire(self) -> None:
        on_full, self._on_full, self._owner = self._on_full, None, None
        assert on_full is not None
        on_full()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._on_full is None:
            return memoryview(self._spare)  # nobody waits for bytes: into the stash
        if self._owner is not None and self._owner.abandoned:
            # The caller gave up on this read (and may reuse its buffer): the rest of the
            # reply still has to be read off the socket, into scratch.
            if len(self._scratch) < len(self._target):
                self._scratch = bytearray(len(self._target))
            self._target = memoryview(self._scratch)[:len(self._target)]
            self._owner = None
        return self._target[self._filled:]

    def buffer_updated(self, nbytes: int) -> None:
        if self._on_full is None:
            self._stash += self._spare[:nbytes]
            return
        self._filled += nbytes
        try:
            while self._on_full is not None and self._filled == len(self._target):
                self._fire()
        except p.ProtocolViolation as exc:
            self._fail(NbdFailure(f"protocol violation: {exc}", transient=False))
            return
        if self._on_full is None:
            self._pause()

    def _pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def _fail(self, exc: NbdFailure) -> None:
        self.on_lost(exc)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_lost(NbdFailure(f"the connection was lost ({exc or 'closed by the server'})",
                                transient=True))
        if not self.closed.done():
            self.closed.set_result(None)

    def eof_received(self) -> bool | None:
        return False  # close our side too: the server is gone

    async def read_exact(self, n: int) -> bytes:
        """Handshake only: the next ``n`` bytes."""
        buf = bytearray(n)
        got: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def full() -> None:
            if not got.done():
                got.set_result(None)

        self.expect(memoryview(buf), full)
        lost = self.on_lost

        def fail(exc: Exception) -> None:
            if not got.done():
                got.set_exception(exc)
            lost(exc)

        self.on_lost = fail
        try:
            await got
        finally:
            self.on_lost = lost
        return bytes(buf)


class NbdConnection:
    """One negotiated connection. Use ``await NbdConnection.open(...)``; ``read_into`` and
    ``block_status`` may be awaited concurrently; ``close`` disconnects politely."""

    def __init__(self, wire: _Wire, export: p.Export, structured: bool,
                 allocation_context: int | None) -> None:
        self.export = export
        self.structured = structured
        self.allocation_context = allocation_context
        self._wire = wire
        self._pending: dict[int, _Request] = {}
        self._cookies = itertools.count(1)
        self._head = bytearray(p.STRUCTURED_HEAD_SIZE)
        self._small = bytearray(16)
        self.lost: NbdFailure | None = None
        wire.on_lost = self._lost
        self._await_head()

    @classmethod
    async def open(cls, connect: Callable[[Callable[[], _Wire]],
                                          Awaitable[tuple[asyncio.BaseTransport, _Wire]]],
                   export_name: str = "") -> NbdConnection:
        _, wire = await connect(_Wire)
        try:
            return await _handshake(wire, export_name)
        except BaseException:
            if wire.transport is not None:
                wire.transport.abort()
            raise

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def read_into(self, offset: int, buf: memoryview) -> None:
        await self._submit(p.CMD_READ, offset, len(buf), buf)

    async def block_status(self, offset: int, length: int) -> list[p.Extent]:
        """``base:allocation`` extents from ``offset``; they cover at least one byte and
        may end before or after ``offset + length`` (the server decides)."""
        if self.allocation_context is None:
            return [p.Extent(offset, length, 0)]  # no information: all of it is data
        req = await self._submit(p.CMD_BLOCK_STATUS, offset, length, None)
        return req.extents

    async def _submit(self, kind: int, offset: int, length: int,
                      buf: memoryview | None) -> _Request:
        transport = self._wire.transport
        if self.lost is not None or transport is None:
            raise self.lost or NbdFailure("not connected", transient=True)
        cookie = next(self._cookies)
        req = _Request(kind, offset, length, buf, asyncio.get_running_loop().create_future())
        self._pending[cookie] = req
        transport.write(p.request(kind, cookie, offset, length))
        try:
            await asyncio.shield(req.done)
        except asyncio.CancelledError:
            req.abandoned = True  # its reply is still read, into scratch
            raise
        return req

    async def close(self) -> None:
        transport = self._wire.transport
        if transport is None or transport.is_closing():
            return
        if self.lost is None:
            with contextlib.suppress(Exception):
                transport.write(p.request(p.CMD_DISC, next(self._cookies), 0, 0))
        transport.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self._wire.closed

    # -- the receiver's state machine: head (16) [+4] -> payload -> next head --

    def _await_head(self) -> None:
        self._wire.expect(memoryview(self._head)[:p.REPLY_HEAD_SIZE], self._on_head)

    def _on_head(self) -> None:
        head = p.parse_reply_head(self._head[:p.REPLY_HEAD_SIZE])
        if head is None:
            self._wire.expect(memoryview(self._head)[p.REPLY_HEAD_SIZE:], self._on_chunk)
            return
        req = self._request(head.cookie)
        if head.error:
            self._finish(head.cookie, req, head.error, "")
        elif req.kind == p.CMD_READ and req.length:
            req.covered = req.length
            self._wire.expect(self._into(req, 0, req.length),
                              lambda: self._finish(head.cookie, req), req)
        elif req.kind == p.CMD_READ:
            self._finish(head.cookie, req)
        else:
            raise p.ProtocolViolation("a simple reply to a block status request")

    def _on_chunk(self) -> None:
        head = p.structured_header(self._head)
        req = self._request(head.cookie)
        if head.type == p.REPLY_OFFSET_DATA and req.kind == p.CMD_READ:
            if head.length <= 8:
                raise p.ProtocolViolation("an OFFSET_DATA chunk without data")
            self._wire.expect(memoryview(self._small)[:8], lambda: self._on_data(head, req))
        elif head.type in (p.REPLY_OFFSET_HOLE, p.REPLY_BLOCK_STATUS) or head.type & \
                p.REPLY_ERROR_BIT:
            if head.length > 16 * 1024 * 1024:
                raise p.ProtocolViolation(f"a {head.length}-byte reply chunk")
            payload = bytearray(head.length)
            if head.length == 0:
                self._on_payload(head, req, payload)
            else:
                self._wire.expect(memoryview(payload),
                                  lambda: self._on_payload(head, req, payload))
        elif head.type == p.REPLY_NONE and head.length == 0:
            self._chunk_done(head, req)
        else:
            raise p.ProtocolViolation(f"reply chunk type {head.type} (length {head.length}) "
                                      f"to command {req.kind}")

    def _on_data(self, head: p.ReplyHeader, req: _Request) -> None:
        start = p.parse_offset(self._small) - req.offset
        length = head.length - 8
        self._check_inside(req, start, length)
        req.covered += length
        self._wire.expect(self._into(req, start, length), lambda: self._chunk_done(head, req),
                          req)

    def _on_payload(self, head: p.ReplyHeader, req: _Request, payload: bytearray) -> None:
        if head.type & p.REPLY_ERROR_BIT:
            errno, message = p.parse_error(head.type, payload)
            req.errno, req.error = errno, message
        elif head.type == p.REPLY_OFFSET_HOLE:
            if req.kind != p.CMD_READ:
                raise p.ProtocolViolation("a hole chunk to a block status request")
            offset, length = p.parse_hole(payload)
            start = offset - req.offset
            self._check_inside(req, start, length)
            req.covered += length
            if not req.abandoned and req.buf is not None:
                req.buf[start:start + length] = bytes(length)
        else:
            if req.kind != p.CMD_BLOCK_STATUS:
                raise p.ProtocolViolation("a block status chunk to a read")
            context, extents = p.parse_block_status(payload, req.offset)
            if context == self.allocation_context:
                req.extents = extents
        self._chunk_done(head, req)

    def _chunk_done(self, head: p.ReplyHeader, req: _Request) -> None:
        if head.done:
            self._finish(head.cookie, req, req.errno, req.error or "")
        else:
            self._await_head()

    def _finish(self, cookie: int, req: _Request, errno: int = 0, message: str = "") -> None:
        del self._pending[cookie]
        if req.done.done():
            pass
        elif req.abandoned:
            req.done.cancel()   # nobody awaits it: no result, and no unretrieved exception
        elif errno:
            text = f"the server answered {p.errno_name(errno)}" + (f": {message}" if message
                                                                    else "")
            req.done.set_exception(NbdFailure(text, errno in p.TRANSIENT_ERRNOS))
        elif req.kind == p.CMD_READ and req.covered != req.length:
            # chunks never overlap (the specification): less is a short reply
            req.done.set_exception(NbdFailure(
                f"the reply covered {req.covered} of {req.length} bytes", transient=False))
        elif req.kind == p.CMD_BLOCK_STATUS and not req.extents:
            req.done.set_exception(NbdFailure("block status without base:allocation extents",
                                              transient=False))
        else:
            req.done.set_result(None)
        self._await_head()

    def _request(self, cookie: int) -> _Request:
        req = self._pending.get(cookie)
        if req is None:
            raise p.ProtocolViolation(f"a reply to cookie {cookie}, which is not in flight")
        return req

    @staticmethod
    def _check_inside(req: _Request, start: int, length: int) -> None:
        if start < 0 or start + length > req.length:
            raise p.ProtocolViolation(f"a chunk at {req.offset + start} (+{length}) outside "
                                      f"the request {req.offset} (+{req.length})")

    def _into(self, req: _Request, start: int, length: int) -> memoryview:
        assert req.buf is not None
        return req.buf[start:start + length]

    def _lost(self, exc: Exception) -> None:
        failure = exc if isinstance(exc, NbdFailure) else NbdFailure(str(exc), True)
        if self.lost is None:
            self.lost = failure
        for req in self._pending.values():
            if req.abandoned:
                req.done.cancel()
            elif not req.done.done():
                req.done.set_exception(failure)
        self._pending.clear()


async def _handshake(wire: _Wire, export_name: str) -> NbdConnection:
    flags = p.parse_hello(await wire.read_exact(p.HELLO_SIZE))
    transport = wire.transport
    assert transport is not None
    transport.write(p.client_flags(flags))

    async def ask(data: bytes, opt: int) -> list[p.OptionReply]:
        transport.write(data)
        replies = []
        while True:
            rtype, length = p.parse_option_reply_head(await wire.read_exact(
                p.OPTION_REPLY_SIZE), opt)
            if length > 1024 * 1024:
                raise p.ProtocolViolation(f"an option reply of {length} bytes")
            reply = p.OptionReply(opt, rtype, await wire.read_exact(length) if length else b"")
            replies.append(reply)
            if rtype == p.REP_ACK or reply.is_error:
                return replies

    try:
        structured = not (await ask(p.option(p.OPT_STRUCTURED_REPLY),
                                    p.OPT_STRUCTURED_REPLY))[-1].is_error
        context = None
        if structured:
            for reply in await ask(p.set_meta_context(export_name, p.BASE_ALLOCATION),
                                   p.OPT_SET_META_CONTEXT):
                if reply.type == p.REP_META_CONTEXT:
                    ident, name = p.parse_meta_context(reply.data)
                    if name == p.BASE_ALLOCATION:
                        context = ident
        export: p.Export | None = None
        for reply in await ask(p.go(export_name), p.OPT_GO):
            if reply.is_error:
                transient = reply.type == p.REP_ERR_SHUTDOWN
                raise NbdFailure(f"the server refused export {export_name!r}: "
                                 f"{reply.error_text()}", transient)
            if reply.type == p.REP_INFO:
                export = p.apply_info(export, reply.data)
    except p.ProtocolViolation as exc:
        raise NbdFailure(f"protocol violation in the handshake: {exc}", False) from exc
    if export is None:
        raise NbdFailure("the server accepted NBD_OPT_GO without saying the export's size",
                         False)
    return NbdConnection(wire, export, structured, context)


Opener = Callable[[Callable[[], _Wire]], Awaitable[tuple[asyncio.BaseTransport, _Wire]]]


def unix(path: str) -> Opener:
    """Connects to an NBD server's Unix socket (nbdkit ``-U``)."""
    async def connect(factory: Callable[[], _Wire]) -> tuple[asyncio.BaseTransport, _Wire]:
        return await asyncio.get_running_loop().create_unix_connection(factory, path)
    return connect


def tcp(host: str, port: int) -> Opener:
    async def connect(factory: Callable[[], _Wire]) -> tuple[asyncio.BaseTransport, _Wire]:
        return await asyncio.get_running_loop().create_connection(factory, host, port)
    return connect


class NbdTransport:
    """The ``Transport`` of one NBD export (``mover.pipeline.transport``).

    ``connections`` sockets are opened lazily; each carries up to ``max_readers /
    connections`` requests at once. A read longer than the server's maximum request is
    split. ``extents`` answers ``base:allocation`` for planning. ``size`` is known after
    ``open`` (the handshake); ``expect_size`` refuses an export that is not the disk."""

    def __init__(self, opener: Opener, name: str, max_readers: int = 8, connections: int = 1,
                 export_name: str = "", read_timeout: float | None = None) -> None:
        self.name = name
        self.size = -1
        self.max_readers = max_readers
        self._opener = opener
        self._export_name = export_name
        self._timeout = read_timeout
        self._slots: list[NbdConnection | None] = [None] * max(1, connections)
        self._opening = asyncio.Lock()
        self._max_request = p.DEFAULT_MAX_REQUEST

    async def open(self, expect_size: int | None = None) -> NbdTransport:
        try:
            conn = await self._connection()
        except NbdFailure as exc:
            raise TransportError(f"opening NBD export {self.name}: {exc}",
                                 transient=exc.transient, cause=str(exc)) from exc
        if expect_size is not None and conn.export.size != expect_size:
            await self.close()
            raise TransportError(
                f"NBD export {self.name} is {conn.export.size} bytes, the disk {expect_size}; "
                "refusing to read it as the disk (is it the disk of another snapshot?)",
                transient=False)
        return self

    async def read_into(self, offset: int, buf: memoryview) -> None:
        where = f"{self.name} bytes {offset}-{offset + len(buf) - 1}"
        if offset < 0 or (self.size >= 0 and offset + len(buf) > self.size):
            raise TransportError(f"reading {where}: beyond the end of the {self.size}-byte "
                                 "export", transient=False, cause="beyond the end")
        try:
            async with asyncio.timeout(self._timeout):
                conn = await self._connection()
                if offset + len(buf) > conn.export.size:
                    raise NbdFailure(f"beyond the end of the {conn.export.size}-byte export",
                                     transient=False)
                step = self._max_request
                if len(buf) <= step:
                    await conn.read_into(offset, buf)
                else:
                    await asyncio.gather(*(conn.read_into(offset + at, buf[at:at + step])
                                           for at in range(0, len(buf), step)))
        except NbdFailure as exc:
            raise TransportError(f"reading {where}: {exc}", transient=exc.transient,
                                 cause=str(exc)) from exc
        except TimeoutError as exc:
            cause = f"no complete reply within {self._timeout} s (read timeout)"
            raise TransportError(f"reading {where}: {cause}", transient=True,
                                 cause=cause) from exc

    async def extents(self, offset: int, length: int) -> list[p.Extent]:
        """``base:allocation`` of ``[offset, offset + length)``, clipped to it, gap-free."""
        out: list[p.Extent] = []
        end = offset + length
        at = offset
        try:
            conn = await self._connection()
            while at < end:
                ask = min(end - at, 0xFFFFFFFF // 4096 * 4096)
                for ext in await conn.block_status(at, ask):
                    stop = min(ext.end, end)
                    if stop > at:
                        out.append(p.Extent(at, stop - at, ext.flags))
                        at = stop
                    if at >= end:
                        break
        except NbdFailure as exc:
            raise TransportError(f"block status of {self.name} at {at}: {exc}",
                                 transient=exc.transient, cause=str(exc)) from exc
        return out

    async def close(self) -> None:
        slots, self._slots = self._slots, [None] * len(self._slots)
        for conn in slots:
            if conn is not None:
                await conn.close()

    async def _connection(self) -> NbdConnection:
        """The live connection with the fewest requests in flight, opening one if a slot is
        empty or its connection was lost."""
        best = self._least_busy()
        if best is not None and (best.in_flight == 0 or self._all_live()):
            return best
        async with self._opening:  # one handshake at a time; slots may be filled meanwhile
            for i, conn in enumerate(self._slots):
                if conn is None or conn.lost is not None:
                    if conn is not None:
                        await conn.close()
                    new = await self._connect()
                    self._slots[i] = new
                    return new
        best = self._least_busy()
        assert best is not None
        return best

    def _least_busy(self) -> NbdConnection | None:
        live = [c for c in self._slots if c is not None and c.lost is None]
        return min(live, key=lambda c: c.in_flight, default=None)

    def _all_live(self) -> bool:
        return all(c is not None and c.lost is None for c in self._slots)

    async def _connect(self) -> NbdConnection:
        try:
            conn = await NbdConnection.open(self._opener, self._export_name)
        except OSError as exc:  # no socket (yet), refused, reset: nbdkit may come back
            raise NbdFailure(f"cannot connect: {exc.strerror or exc}", transient=True) from exc
        self.size = conn.export.size
        if conn.export.max_block:
            self._max_request = max(conn.export.min_block,
                                    min(p.DEFAULT_MAX_REQUEST, conn.export.max_block))
        return conn
