"""The NBD protocol's messages, encoded and decoded (pure: no sockets, no asyncio).

What mover speaks (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md):
the *fixed newstyle* handshake, ``NBD_OPT_STRUCTURED_REPLY``, ``NBD_OPT_SET_META_CONTEXT``
for ``base:allocation``, ``NBD_OPT_GO`` with the export name, then ``NBD_CMD_READ``,
``NBD_CMD_BLOCK_STATUS`` and ``NBD_CMD_DISC``. Glossary:

    option       a handshake request (client -> server), answered by one or more replies
    cookie       the 64-bit handle the client puts on a request; its replies repeat it
    chunk        one structured reply; the last chunk of a request has ``REPLY_FLAG_DONE``
    extent       a (length, flags) run of block status; flags ``STATE_HOLE | STATE_ZERO``

Every decoder raises ``ProtocolViolation`` on bytes the specification does not allow; the
I/O client (``mover.pipeline.nbd``) then drops the connection (it can no longer tell where
the next message starts).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

NBDMAGIC = 0x4E42444D41474943          # "NBDMAGIC"
IHAVEOPT = 0x49484156454F5054          # "IHAVEOPT"
OPTION_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

FLAG_FIXED_NEWSTYLE = 1 << 0           # handshake flags (server) and client flags
FLAG_NO_ZEROES = 1 << 1

OPT_ABORT = 2
OPT_STARTTLS = 5
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_SET_META_CONTEXT = 10

REP_ACK = 1
REP_INFO = 3
REP_META_CONTEXT = 4
REP_FLAG_ERROR = 1 << 31
REP_ERRORS = {REP_FLAG_ERROR | 1: "unsupported", REP_FLAG_ERROR | 2: "forbidden by policy",
              REP_FLAG_ERROR | 3: "invalid", REP_FLAG_ERROR | 4: "not supported on this platform",
              REP_FLAG_ERROR | 5: "TLS required", REP_FLAG_ERROR | 6: "unknown export",
              REP_FLAG_ERROR | 7: "server shutting down", REP_FLAG_ERROR | 8: "block size required",
              REP_FLAG_ERROR | 9: "request too big"}
REP_ERR_UNSUP = REP_FLAG_ERROR | 1
REP_ERR_TLS_REQD = REP_FLAG_ERROR | 5
REP_ERR_SHUTDOWN = REP_FLAG_ERROR | 7

INFO_EXPORT = 0
INFO_BLOCK_SIZE = 3

TFLAG_HAS_FLAGS = 1 << 0               # transmission flags (per export)
TFLAG_READ_ONLY = 1 << 1
TFLAG_SEND_DF = 1 << 7
TFLAG_CAN_MULTI_CONN = 1 << 8

CMD_READ = 0
CMD_DISC = 2
CMD_BLOCK_STATUS = 7
CMD_FLAG_REQ_ONE = 1 << 3

REPLY_FLAG_DONE = 1 << 0
REPLY_NONE = 0
REPLY_OFFSET_DATA = 1
REPLY_OFFSET_HOLE = 2
REPLY_BLOCK_STATUS = 5
REPLY_ERROR_BIT = 1 << 15
REPLY_ERROR = REPLY_ERROR_BIT | 1
REPLY_ERROR_OFFSET = REPLY_ERROR_BIT | 2

STATE_HOLE = 1 << 0                    # base:allocation
STATE_ZERO = 1 << 1
BASE_ALLOCATION = "base:allocation"

# The errno values NBD puts on the wire (fixed by the protocol, not the host's errno).
EPERM, EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN = 1, 5, 12, 22, 28, 75, 95, 108
ERRNO_NAMES = {EPERM: "EPERM", EIO: "EIO", ENOMEM: "ENOMEM", EINVAL: "EINVAL",
               ENOSPC: "ENOSPC", EOVERFLOW: "EOVERFLOW", ENOTSUP: "ENOTSUP",
               ESHUTDOWN: "ESHUTDOWN"}
#: Errors a retry of the same request may outlive: an I/O error of the server's backend
#: (VDDK's NFC stream, a host under load), memory pressure, a server going down (the next
#: connection may reach a restarted one). The rest describe the request, which will not change.
TRANSIENT_ERRNOS = frozenset({EIO, ENOMEM, ESHUTDOWN})

#: The largest request the specification promises a server accepts without a block size
#: constraint saying more.
DEFAULT_MAX_REQUEST = 32 * 1024 * 1024

_HELLO = struct.Struct(">QQH")
_OPTION = struct.Struct(">QII")
_OPTION_REPLY = struct.Struct(">QIII")
_REQUEST = struct.Struct(">IHHQQI")
SIMPLE_REPLY = struct.Struct(">IIQ")          # magic, error, cookie (16 bytes)
_STRUCTURED = struct.Struct(">IHHQI")          # magic, flags, type, cookie, length (20 bytes)
HELLO_SIZE = _HELLO.size
OPTION_REPLY_SIZE = _OPTION_REPLY.size
REPLY_HEAD_SIZE = SIMPLE_REPLY.size            # read first: it tells which kind follows
STRUCTURED_HEAD_SIZE = _STRUCTURED.size


class ProtocolViolation(ValueError):
    """The peer sent bytes the NBD specification does not allow here."""


@dataclass(frozen=True, slots=True)
class OptionReply:
    option: int
    type: int
    data: bytes

    @property
    def is_error(self) -> bool:
        return bool(self.type & REP_FLAG_ERROR)

    def error_text(self) -> str:
        name = REP_ERRORS.get(self.type, f"error {self.type & ~REP_FLAG_ERROR}")
        detail = self.data.decode("utf-8", "replace").strip()
        return f"{name}: {detail}" if detail else name


@dataclass(frozen=True, slots=True)
class Export:
    """What ``NBD_OPT_GO`` said about the export."""

    size: int
    flags: int
    min_block: int = 1
    preferred_block: int = 4096
    max_block: int = DEFAULT_MAX_REQUEST


@dataclass(frozen=True, slots=True)
class ReplyHeader:
    """One reply header: ``structured`` chunks carry ``type``, ``flags`` and ``length``; a
    simple reply has ``error`` and (for a read) the request's length of data after it."""

    cookie: int
    structured: bool
    error: int = 0
    flags: int = 0
    type: int = REPLY_NONE
    length: int = 0

    @property
    def done(self) -> bool:
        return not self.structured or bool(self.flags & REPLY_FLAG_DONE)


@dataclass(frozen=True, slots=True)
class Extent:
    """A block status run: ``length`` bytes from ``offset`` with ``flags``."""

    offset: int
    length: int
    flags: int

    @property
    def end(self) -> int:
        return self.offset + self.length

    @property
    def reads_as_zero(self) -> bool:
        """Only ``STATE_ZERO`` promises zeros; a hole alone may read as anything."""
        return bool(self.flags & STATE_ZERO)


def parse_hello(data: bytes) -> int:
    """The server's first 18 bytes -> its handshake flags; only fixed newstyle is spoken."""
    magic, opt, flags = _HELLO.unpack(data)
    if magic != NBDMAGIC or opt != IHAVEOPT:
        raise ProtocolViolation("not an NBD newstyle server (oldstyle or not NBD at all)")
    if not flags & FLAG_FIXED_NEWSTYLE:
        raise ProtocolViolation("the server does not speak fixed newstyle negotiation")
    return int(flags)


def client_flags(server_flags: int) -> bytes:
    return struct.pack(">I", FLAG_FIXED_NEWSTYLE | (server_flags & FLAG_NO_ZEROES))


def option(opt: int, data: bytes = b"") -> bytes:
    return _OPTION.pack(IHAVEOPT, opt, len(data)) + data


def go(export_name: str) -> bytes:
    """``NBD_OPT_GO`` asking for the export's size and its block size constraints."""
    name = export_name.encode()
    return option(OPT_GO, struct.pack(">I", len(name)) + name
                  + struct.pack(">HH", 1, INFO_BLOCK_SIZE))


def set_meta_context(export_name: str, *queries: str) -> bytes:
    name = export_name.encode()
    body = struct.pack(">I", len(name)) + name + struct.pack(">I", len(queries))
    for query in queries:
        q = query.encode()
        body += struct.pack(">I", len(q)) + q
    return option(OPT_SET_META_CONTEXT, body)


def parse_option_reply_head(data: bytes, asked: int) -> tuple[int, int]:
    """The 20-byte head of an option reply -> (reply type, payload length)."""
    magic, opt, rtype, length = _OPTION_REPLY.unpack(data)
    if magic != OPTION_REPLY_MAGIC:
        raise ProtocolViolation(f"bad option reply magic {magic:#x}")
    if opt != asked:
        raise ProtocolViolation(f"a reply to option {opt} while option {asked} was asked")
    return int(rtype), int(length)


def apply_info(export: Export | None, data: bytes) -> Export | None:
    """Fold one ``NBD_REP_INFO`` payload into what is known of the export."""
    if len(data) < 2:
        raise ProtocolViolation("an NBD_REP_INFO shorter than its type")
    (kind,) = struct.unpack_from(">H", data)
    if kind == INFO_EXPORT:
        if len(data) != 12:
            raise ProtocolViolation(f"NBD_INFO_EXPORT of {len(data)} bytes, not 12")
        size, flags = struct.unpack_from(">QH", data, 2)
        if export is None:
            return Export(size, flags)
        return Export(size, flags, export.min_block, export.preferred_block, export.max_block)
    if kind == INFO_BLOCK_SIZE:
        if len(data) != 14:
            raise ProtocolViolation(f"NBD_INFO_BLOCK_SIZE of {len(data)} bytes, not 14")
        low, preferred, high = struct.unpack_from(">III", data, 2)
        if not (low >= 1 and low <= preferred and low <= high):
            raise ProtocolViolation(f"block sizes min {low} preferred {preferred} max {high}")
        base = export or Export(0, 0)
        return Export(base.size, base.flags, low, preferred, high)
    return export  # other information is optional to understand


def parse_meta_context(data: bytes) -> tuple[int, str]:
    if len(data) < 4:
        raise ProtocolViolation("an NBD_REP_META_CONTEXT shorter than its context ID")
    (ident,) = struct.unpack_from(">I", data)
    return int(ident), data[4:].decode("utf-8", "replace")


def request(cmd: int, cookie: int, offset: int, length: int, flags: int = 0) -> bytes:
    return _REQUEST.pack(REQUEST_MAGIC, flags, cmd, cookie, offset, length)


def parse_reply_head(data: bytes | bytearray | memoryview) -> ReplyHeader | None:
    """The first 16 bytes of a reply: a simple reply is complete (``ReplyHeader``); None
    means a structured one, whose header has 4 more bytes: give all 20 to
    ``structured_header``."""
    magic, error, cookie = SIMPLE_REPLY.unpack(data)
    if magic == SIMPLE_REPLY_MAGIC:
        return ReplyHeader(cookie=cookie, structured=False, error=error)
    if magic == STRUCTURED_REPLY_MAGIC:
        return None
    raise ProtocolViolation(f"bad reply magic {magic:#x}")


def structured_header(data: bytes | bytearray | memoryview) -> ReplyHeader:
    """All 20 bytes of a structured reply's header."""
    magic, flags, rtype, cookie, length = _STRUCTURED.unpack(data)
    if magic != STRUCTURED_REPLY_MAGIC:
        raise ProtocolViolation(f"bad structured reply magic {magic:#x}")
    return ReplyHeader(cookie=cookie, structured=True, flags=flags, type=rtype, length=length)


def parse_offset(data: bytes | bytearray | memoryview) -> int:
    (offset,) = struct.unpack_from(">Q", data)
    return int(offset)


def parse_hole(data: bytes | bytearray | memoryview) -> tuple[int, int]:
    if len(data) != 12:
        raise ProtocolViolation(f"NBD_REPLY_TYPE_OFFSET_HOLE of {len(data)} bytes, not 12")
    offset, length = struct.unpack(">QI", data)
    if length == 0:
        raise ProtocolViolation("a hole of length 0")
    return int(offset), int(length)


def parse_error(rtype: int, data: bytes | bytearray | memoryview) -> tuple[int, str]:
    """An error chunk -> (NBD errno, message)."""
    if len(data) < 6:
        raise ProtocolViolation(f"an error chunk of {len(data)} bytes")
    errno, size = struct.unpack_from(">IH", data)
    if 6 + size > len(data):
        raise ProtocolViolation("an error chunk whose message runs past its end")
    message = bytes(data[6:6 + size]).decode("utf-8", "replace")
    if rtype == REPLY_ERROR_OFFSET:
        if len(data) != 6 + size + 8:
            raise ProtocolViolation("NBD_REPLY_TYPE_ERROR_OFFSET without its offset")
        (offset,) = struct.unpack_from(">Q", data, 6 + size)
        message = f"{message} (at offset {offset})" if message else f"at offset {offset}"
    if errno == 0:
        raise ProtocolViolation("an error chunk with error 0")
    return int(errno), message


def parse_block_status(data: bytes | bytearray | memoryview, offset: int
                       ) -> tuple[int, list[Extent]]:
    """A block status chunk -> (context ID, extents from ``offset``, the request's)."""
    if len(data) < 12 or (len(data) - 4) % 8:
        raise ProtocolViolation(f"a block status chunk of {len(data)} bytes")
    (context,) = struct.unpack_from(">I", data)
    extents, at = [], offset
    for pos in range(4, len(data), 8):
        length, flags = struct.unpack_from(">II", data, pos)
        if length == 0:
            raise ProtocolViolation("a block status extent of length 0")
        extents.append(Extent(at, length, flags))
        at += length
    return int(context), extents


def errno_name(errno: int) -> str:
    return ERRNO_NAMES.get(errno, f"errno {errno}")
