"""Datastore HTTP(S) transport: ``GET /folder/<path>?dcPath=..&dsName=..`` with ``Range``.

This is how a host serves the raw bytes of a file on a datastore; for the flat extent of a
snapshot's base disk that is exactly the point-in-time disk image. Every reply is checked to
be the range asked for (``206`` and ``Content-Range``): a server that ignores ``Range``
would otherwise feed us the wrong bytes at the right offsets.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from typing import Protocol
from urllib.parse import quote

import aiohttp
from yarl import URL

from mover.errors import AuthenticationError, PermissionDenied, TransportError

log = logging.getLogger(__name__)
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def folder_url(base_url: str, datastore: str, path: str, datacenter: str) -> URL:
    query = f"dcPath={quote(datacenter, safe='')}&dsName={quote(datastore, safe='')}"
    return URL(f"{base_url}/folder/{quote(path)}?{query}", encoded=True)


SslSetting = ssl.SSLContext | aiohttp.Fingerprint | bool


def ssl_setting(insecure: bool, thumbprint: bytes | None) -> SslSetting:
    """aiohttp's ``ssl=`` for the same trust the control plane uses."""
    if thumbprint is not None:
        return aiohttp.Fingerprint(thumbprint)
    if insecure:
        return False
    return ssl.create_default_context()


class CookieSource(Protocol):
    """The session cookie the host wants on every request.

    Contract: ``value`` is the cookie to send now; ``refresh(stale)`` returns a cookie other
    than ``stale`` (logging in again at most once however many readers ask with the same
    stale value) or raises ``AuthenticationError``/``ConnectError``."""

    @property
    def value(self) -> str: ...

    async def refresh(self, stale: str) -> str: ...


class FolderTransport:
    """Reads one datastore file. The aiohttp session (connection pool, TLS) is owned by the
    caller and shared between disks; the cookie comes from ``cookie`` on every request.

    Errors are classified here (``TransportError.transient``): HTTP 5xx, 408 and 429, a
    connection reset or refused, a short body and both timeouts are transient; any other
    status (404, 416, ...), a wrong ``Content-Range``, a body longer than asked and TLS
    failures are permanent. A 401/403 is answered once by refreshing the cookie and reading
    again; a second refusal is an ``AuthenticationError``."""

    def __init__(self, http: aiohttp.ClientSession, url: URL, size: int, max_readers: int,
                 cookie: CookieSource, cookie_name: str, ssl_: SslSetting = True,
                 read_timeout: float | None = None, idle_timeout: float | None = None) -> None:
        self.name = url.path
        self.size = size
        self.max_readers = max_readers
        self._http = http
        self._url = url
        self._ssl = ssl_
        self._cookie = cookie
        self._cookie_name = cookie_name
        self._read_timeout = read_timeout
        self._idle_timeout = idle_timeout
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=idle_timeout)

    async def read_into(self, offset: int, buf: memoryview) -> None:
        end = offset + len(buf) - 1
        where = f"{self.name} bytes {offset}-{end}"
        cookie = self._cookie.value
        refused = await self._read(offset, buf, cookie, where)
        if refused is None:
            return
        if refused == 403:
            raise forbidden(where, offset)
        log.info("reading %s: HTTP %d, renewing the session cookie", where, refused)
        cookie = await self._cookie.refresh(cookie)
        refused = await self._read(offset, buf, cookie, where)
        if refused is not None:
            raise AuthenticationError(f"reading {where}: the host refused the session (HTTP "
                                      f"{refused}) also after logging in again")

    async def _read(self, offset: int, buf: memoryview, cookie: str, where: str) -> int | None:
        """One request: fills ``buf``, or returns the 401/403 status, or raises."""
        end = offset + len(buf) - 1
        headers = {"Range": f"bytes={offset}-{end}", "Cookie": f"{self._cookie_name}={cookie}"}
        try:
            async with asyncio.timeout(self._read_timeout):
                async with self._http.get(self._url, headers=headers, ssl=self._ssl,
                                          timeout=self._timeout) as resp:
                    if resp.status in (401, 403):
                        return resp.status
                    if resp.status != 206:
                        raise await _status_failure(where, resp, 206)
                    _check_content_range(resp.headers.get("Content-Range", ""), offset, end,
                                         self.size, where)
                    filled = 0
                    # readchunk hands over aiohttp's buffered pieces one by one; iter_any
                    # joins them into a new bytes first (fetch stage 1.73 vs 1.37 GB/s).
                    while piece := (await resp.content.readchunk())[0]:
                        stop = filled + len(piece)
                        if stop > len(buf):
                            raise _failure(where, "the body is longer than asked", False)
                        buf[filled:stop] = piece
                        filled = stop
        except aiohttp.SocketTimeoutError as exc:
            raise _failure(where, f"no bytes for {self._idle_timeout} s (idle timeout)",
                           True) from exc
        except TimeoutError as exc:  # asyncio.timeout above, or aiohttp's connect timeout
            what = ("connecting timed out" if isinstance(exc, aiohttp.ClientError) else
                    f"no complete reply within {self._read_timeout} s (read timeout)")
            raise _failure(where, what, True) from exc
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise _client_failure(where, exc) from exc
        if filled != len(buf):
            raise _failure(where, f"short body, {filled} of {len(buf)} bytes", True)
        return None

    async def close(self) -> None:
        """The shared HTTP session belongs to the caller; nothing of ours to release."""


def forbidden(where: str, offset: int | None = None) -> PermissionDenied:
    """HTTP 403: the session is valid (an expired one is 401) but the user may not read
    the file; logging in again does not help. /folder names no privilege: a read needs
    Datastore.Browse (mover.vsphere.privileges.FOLDER_READ) on the datastore."""
    return PermissionDenied(
        f"reading {where}: the host refused the file (HTTP 403 Forbidden): the user lacks "
        "the vSphere privilege Datastore.Browse (and Datastore.FileManagement) on the "
        "datastore; grant it to the user's role (README, \"vSphere privileges\")",
        privilege="Datastore.Browse", object=where, offset=offset)


#: ``TransportError.fields["fault"]`` of a host that refuses for now (``mover.pipeline.retry``
#: waits for these within a time budget): 503 (the host serves too many transfers), 500
#: "disk locked" (another tool, an NFC reader or a backup appliance, holds the disk open)
HOST_BUSY, DISK_LOCKED = "busy", "locked"


async def _status_failure(where: str, resp: aiohttp.ClientResponse,
                          expected: int) -> TransportError:
    """A reply of another status than ``expected``, classified. The first bytes of a 5xx
    body tell a locked disk from other server errors (ESXi says "Failed to lock the file")."""
    fault = None
    if resp.status == 503:
        fault = HOST_BUSY
    elif resp.status >= 500:
        try:
            head = await resp.content.read(512)
        except (aiohttp.ClientError, ConnectionError):
            head = b""
        if b"lock" in head.lower():
            fault = DISK_LOCKED
    what = {HOST_BUSY: " (the host is busy)",
            DISK_LOCKED: " (the disk is locked by another reader)"}.get(fault or "", "")
    cause = f"expected HTTP {expected}, got {resp.status} {resp.reason}{what}"
    return TransportError(f"reading {where}: {cause}", transient=_transient_status(resp.status),
                          cause=cause, status=resp.status, fault=fault)


def _transient_status(status: int) -> bool:
    """Server errors, request timeout and throttling may pass; other answers will not."""
    return status >= 500 or status in (408, 429)


def _failure(where: str, cause: str, transient: bool) -> TransportError:
    return TransportError(f"reading {where}: {cause}", transient=transient, cause=cause)


def _client_failure(where: str, exc: aiohttp.ClientError | ConnectionError) -> TransportError:
    """An HTTP client or socket error, classified: a TLS failure will not pass (checked
    first: aiohttp's TLS errors are connection errors too), a broken connection or body may,
    any other client error will not."""
    if isinstance(exc, (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch)):
        return _failure(where, f"TLS: {exc}", False)
    transient = isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError,
                                 ConnectionError))
    return _failure(where, f"{type(exc).__name__}: {exc}", transient)


def _check_content_range(header: str, start: int, end: int, size: int, where: str) -> None:
    match = _CONTENT_RANGE.match(header.strip())
    if match is None or int(match[1]) != start or int(match[2]) != end:
        raise _failure(where, f"the server answered Content-Range {header!r}, not the range "
                       "asked for", False)
    if match[3] != "*" and int(match[3]) != size:
        # the file is not the disk: another extent layout, or a file of another size
        raise _failure(where, f"the file is {match[3]} bytes, the disk {size} (Content-Range "
                       f"{header!r}); refusing to read it as the disk", False)


async def read_small(http: aiohttp.ClientSession, url: URL, cookie: CookieSource,
                     cookie_name: str, ssl_: SslSetting = True, limit: int = 64 * 1024,
                     timeout: float = 60.0) -> bytes:
    """The whole of a small datastore file (a disk descriptor): one GET, at most ``limit``
    bytes. Errors are classified as ``FolderTransport``'s; a 401/403 renews the cookie
    once. A file longer than ``limit`` is refused (a descriptor is a few hundred bytes;
    a monolithic sparse disk holds its descriptor inside a binary file)."""
    where = f"{url.path} (whole file)"
    value = cookie.value
    for attempt in (1, 2):
        headers = {"Cookie": f"{cookie_name}={value}"}
        try:
            async with asyncio.timeout(timeout):
                async with http.get(url, headers=headers, ssl=ssl_) as resp:
                    if resp.status == 403:
                        raise forbidden(where)
                    if resp.status in (401, 403) and attempt == 1:
                        value = await cookie.refresh(value)
                        continue
                    if resp.status in (401, 403):
                        raise AuthenticationError(f"reading {where}: the host refused the "
                                                  f"session (HTTP {resp.status}) also after "
                                                  "logging in again")
                    if resp.status != 200:
                        raise await _status_failure(where, resp, 200)
                    body = bytearray()
                    while len(body) <= limit:  # read(n) returns what is there, up to n
                        piece = await resp.content.read(limit + 1 - len(body))
                        if not piece:
                            break
                        body += piece
        except TimeoutError as exc:
            raise _failure(where, f"no complete reply within {timeout} s", True) from exc
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise _client_failure(where, exc) from exc
        if len(body) > limit:
            raise _failure(where, f"longer than {limit} bytes: not a text descriptor", False)
        return bytes(body)
    raise AssertionError("unreachable")
