"""The SHA-1 thumbprint VDDK wants (nbdkit-vddk-plugin's ``thumbprint=``), taken from the
certificate the server presents, trusted exactly as the control plane trusts it: pinned by
its SHA-256 (``--thumbprint``), verified against the system CAs, or not at all
(``--insecure``). A certificate that fails that trust is a ConnectError, never a
thumbprint handed on."""

from __future__ import annotations

import hashlib
import socket
import ssl

from mover.errors import ConnectError
from mover.vsphere.address import ServerAddress, TlsPolicy
from mover.vsphere.tls import context_for


def certificate_sha1(server: ServerAddress, policy: TlsPolicy, timeout: float = 30.0) -> str:
    """``AA:BB:...`` (20 bytes, upper-case hex), as VDDK prints and compares it."""
    context = context_for(policy)
    try:
        with socket.create_connection((server.host, server.port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=server.host) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise ConnectError(f"cannot read the certificate of {server.base_url} for VDDK's "
                           f"thumbprint: {exc}; check --server and --thumbprint") from exc
    if not der:
        raise ConnectError(f"{server.base_url} presented no certificate")
    return ":".join(f"{b:02X}" for b in hashlib.sha1(der).digest())
