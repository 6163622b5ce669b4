"""The TLS context of the control plane, built from the job's ``TlsPolicy``.

mover always hands pyvmomi an explicit context: without one, pyvmomi silently skips
certificate checks for ``localhost``, and its ``thumbprint`` argument is only consulted
after a failed CA check, and not at all while it discovers the API version. A pinned
thumbprint is therefore enforced here, on every handshake of every connection."""

from __future__ import annotations

import hashlib
import socket
import ssl
from typing import Any

from mover.vsphere.address import TlsPolicy


class ThumbprintMismatch(ssl.SSLError):
    def __init__(self, expected: bytes, actual: bytes) -> None:
        self.expected, self.actual = expected, actual
        algorithm = "SHA-1" if len(expected) == 20 else "SHA-256"
        super().__init__(f"certificate {algorithm} is {_colons(actual)}, pinned "
                         f"{_colons(expected)}")

    def __str__(self) -> str:
        return str(self.args[0])


class PinnedContext(ssl.SSLContext):
    """Trusts exactly one certificate, the one whose SHA-256 (or, for a 20-byte pin,
    SHA-1) is ``pin``; no CA is asked. ``sha256`` is the SHA-256 of the certificate last
    accepted: the data plane pins that, as aiohttp takes SHA-256 fingerprints only."""

    pin: bytes
    sha256: bytes | None = None

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        tls = super().wrap_socket(sock, *args, **kwargs)
        der = tls.getpeercert(binary_form=True) or b""
        actual = hashlib.new("sha1" if len(self.pin) == 20 else "sha256", der).digest()
        if actual != self.pin:
            tls.close()
            raise ThumbprintMismatch(self.pin, actual)
        self.sha256 = hashlib.sha256(der).digest()
        return tls


def context_for(policy: TlsPolicy) -> ssl.SSLContext:
    if policy.thumbprint_bytes is not None:
        pinned = PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
        pinned.check_hostname = False  # the pin identifies the host; names don't matter
        pinned.verify_mode = ssl.CERT_NONE
        pinned.pin = policy.thumbprint_bytes
        return pinned
    if policy.insecure:
        return ssl._create_unverified_context()
    return ssl.create_default_context()


def _colons(digest: bytes) -> str:
    return ":".join(f"{b:02X}" for b in digest)
