"""Datastore HTTP(S) transport: ``GET /folder/<path>?dcPath=..&dsName=..`` with ``Range``.

This is how a host serves the raw bytes of a file on a datastore; for the flat extent of a
snapshot's base disk that is exactly the point-in-time disk image. Every reply is checked to
be the range asked for (``206`` and ``Content-Range``): a server that ignores ``Range``
would otherwise feed us the wrong bytes at the right offsets.
"""

from __future__ import annotations

import re
import ssl
from urllib.parse import quote

import aiohttp
from yarl import URL

from mover.errors import AuthenticationError, TransportError

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


class FolderTransport:
    """Reads one datastore file. The aiohttp session (connection pool, cookie header,
    TLS) is owned by the caller and shared between disks."""

    def __init__(self, http: aiohttp.ClientSession, url: URL, size: int, max_readers: int,
                 ssl_: SslSetting = True) -> None:
        self.name = url.path
        self.size = size
        self.max_readers = max_readers
        self._http = http
        self._url = url
        self._ssl = ssl_

    async def read_into(self, offset: int, buf: memoryview) -> None:
        end = offset + len(buf) - 1
        where = f"{self.name} bytes {offset}-{end}"
        try:
            async with self._http.get(self._url, headers={"Range": f"bytes={offset}-{end}"},
                                      ssl=self._ssl) as resp:
                if resp.status in (401, 403):
                    raise AuthenticationError(f"reading {where}: the host refused the session "
                                              f"(HTTP {resp.status})")
                if resp.status != 206:
                    raise TransportError(f"reading {where}: expected HTTP 206, got "
                                         f"{resp.status} {resp.reason}")
                _check_content_range(resp.headers.get("Content-Range", ""), offset, end, where)
                filled = 0
                async for piece in resp.content.iter_any():
                    stop = filled + len(piece)
                    if stop > len(buf):
                        raise TransportError(f"reading {where}: the body is longer than asked")
                    buf[filled:stop] = piece
                    filled = stop
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransportError(f"reading {where}: {type(exc).__name__}: {exc}") from exc
        if filled != len(buf):
            raise TransportError(f"reading {where}: short body, {filled} of {len(buf)} bytes")

    async def close(self) -> None:
        """The shared HTTP session belongs to the caller; nothing of ours to release."""


def _check_content_range(header: str, start: int, end: int, where: str) -> None:
    match = _CONTENT_RANGE.match(header.strip())
    if match is None or int(match[1]) != start or int(match[2]) != end:
        raise TransportError(f"reading {where}: the server answered Content-Range "
                             f"{header!r}, not the range asked for")
