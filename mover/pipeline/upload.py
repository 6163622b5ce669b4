"""Datastore files over ``/folder`` for restores into vSphere: a small GET (a new disk's
descriptor) and ``FolderUpload``, a restore target that streams a disk's flat file as one
``PUT`` with a ``Content-Length`` of the disk's capacity.

Synchronous (``http.client``): the restore copy loop is a thread that hands blocks in order,
and a PUT body is a stream, so there is nothing to overlap. The session cookie authenticates
as for ``/folder`` GET (ESXi and vCenter apply the same rules to both). Errors are
TransportError: transient for 5xx and broken connections, not for other answers.
"""

from __future__ import annotations

import contextlib
import http.client
import ssl
from urllib.parse import quote, urlsplit

from mover.errors import AuthenticationError, TransportError

_TIMEOUT = 300.0


def folder_path(datastore: str, path: str, datacenter: str) -> str:
    """The request target of a datastore file: ``/folder/<path>?dcPath=&dsName=``."""
    return (f"/folder/{quote(path)}?dcPath={quote(datacenter, safe='')}"
            f"&dsName={quote(datastore, safe='')}")


class FolderClient:
    """Connections to one host's ``/folder`` with one session cookie."""

    def __init__(self, base_url: str, cookie_name: str, cookie: str,
                 context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._context = context
        self.cookie = f"{cookie_name}={cookie}"

    def connect(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=_TIMEOUT,
                                               context=self._context)
        return http.client.HTTPConnection(self._host, self._port, timeout=_TIMEOUT)

    def get(self, target: str, limit: int = 64 * 1024) -> bytes | None:
        """The whole of a small file, or None if the host has no such file (404)."""
        conn = self.connect()
        try:
            conn.request("GET", target, headers={"Cookie": self.cookie})
            reply = conn.getresponse()
            body = reply.read(limit + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(f"GET {target}: {exc}", transient=True) from exc
        finally:
            conn.close()
        if reply.status == 404:
            return None
        _check(reply.status, reply.reason, f"GET {target}")
        if len(body) > limit:
            raise TransportError(f"GET {target}: longer than {limit} bytes")
        return body

    def put(self, target: str, data: bytes) -> None:
        """Write a whole small file (the NVRAM)."""
        upload = FolderUpload(self, target, len(data))
        upload.write(0, data)
        upload.commit()


class FolderUpload:
    """A ``RestoreTarget`` (``mover.pipeline.targets``): sequential, every byte, ``size``
    bytes in all; ``commit`` reads the host's answer. A failed upload leaves the file
    partly written: the caller removes what it created."""

    sequential = True

    def __init__(self, client: FolderClient, target: str, size: int) -> None:
        self.target = target
        self.partial = False
        self._size = size
        self._sent = 0
        self._conn = client.connect()
        try:
            self._conn.putrequest("PUT", target, skip_accept_encoding=True)
            self._conn.putheader("Cookie", client.cookie)
            self._conn.putheader("Content-Type", "application/octet-stream")
            self._conn.putheader("Content-Length", str(size))
            self._conn.endheaders()
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            raise TransportError(f"PUT {target}: {exc}", transient=True) from exc

    def describe(self) -> str:
        return self.target.split("?", 1)[0]

    def size(self) -> int:
        return self._sent

    def write(self, offset: int, data: bytes | memoryview) -> int:
        if offset != self._sent:
            raise ValueError(f"upload write at {offset}, expected {self._sent}")
        self.partial = True
        try:
            self._conn.send(data)
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(f"PUT {self.describe()} at offset {offset}: {exc}",
                                 transient=True) from exc
        self._sent += len(data)
        return len(data)

    def zero(self, offset: int, length: int) -> int:
        step = 1 << 20
        zeros = memoryview(bytes(min(step, length)))
        done = 0
        while done < length:
            done += self.write(offset + done, zeros[: min(step, length - done)])
        return done

    def read(self, offset: int, length: int) -> bytes:
        raise OSError(f"{self.describe()} is being uploaded and cannot be read back")

    def commit(self) -> None:
        if self._sent != self._size:
            raise TransportError(f"PUT {self.describe()}: {self._sent} of {self._size} bytes "
                                 "sent")
        try:
            reply = self._conn.getresponse()
            reply.read()
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(f"PUT {self.describe()}: no answer ({exc})",
                                 transient=True) from exc
        finally:
            self._conn.close()
        _check(reply.status, reply.reason, f"PUT {self.describe()}")

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.close()


def _check(status: int, reason: str, what: str) -> None:
    if status in (401, 403):
        raise AuthenticationError(f"{what}: the host refused the session (HTTP {status})")
    if not 200 <= status < 300:
        raise TransportError(f"{what}: HTTP {status} {reason}", transient=status >= 500)
