"""Where the vSphere server is and how far to trust its certificate (pure values)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from mover.errors import UsageError


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """``--server``: a host name or a URL. ``https`` unless the URL says ``http``."""

    scheme: str
    host: str
    port: int
    path: str = "/sdk"

    @classmethod
    def parse(cls, text: str) -> ServerAddress:
        raw = text.strip()
        if not raw:
            raise UsageError("--server is empty: give a host name or a URL such as https://vc.example/sdk")
        parts = urlsplit(raw if "://" in raw else f"https://{raw}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"--server {text!r} is not a host name or an http(s) URL")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise UsageError(f"--server {text!r} has an invalid port") from exc
        path = parts.path.rstrip("/") or "/sdk"
        return cls(parts.scheme, parts.hostname, port, path)

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.base_url}{self.path}"


#: SHA-256 (32 bytes) or SHA-1 (20 bytes, what vSphere's own tools and older ESXi print)
_THUMBPRINT = re.compile(r"^[0-9a-fA-F]{2}(:?[0-9a-fA-F]{2}){19}((:?[0-9a-fA-F]{2}){12})?$")


@dataclass(frozen=True, slots=True)
class TlsPolicy:
    """Verify against the system CAs (default), pin a thumbprint, or trust anything. The
    pin is the certificate's SHA-256, or its SHA-1 (``weak``: accepted because VMware's
    tools print it, with a warning)."""

    insecure: bool = False
    thumbprint: str | None = None

    def __post_init__(self) -> None:
        if self.thumbprint is not None and not _THUMBPRINT.match(self.thumbprint):
            raise UsageError(
                "--thumbprint must be the server certificate's SHA-256 (64 hex digits; "
                "openssl x509 -noout -fingerprint -sha256) or SHA-1 (40 hex digits), "
                "optionally colon-separated"
            )

    @property
    def thumbprint_bytes(self) -> bytes | None:
        return bytes.fromhex(self.thumbprint.replace(":", "")) if self.thumbprint else None

    @property
    def algorithm(self) -> str:
        """``sha1`` or ``sha256``: the digest the pin is of (by its length)."""
        pin = self.thumbprint_bytes
        return "sha1" if pin is not None and len(pin) == 20 else "sha256"

    @property
    def weak(self) -> bool:
        """A SHA-1 pin: collisions can be made, so a certificate could be forged to match."""
        return self.thumbprint is not None and self.algorithm == "sha1"
