"""A logged-in SOAP session that survives expiry: re-login on ``NotAuthenticated``."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any, TypeVar

from mover.errors import AuthenticationError, ConnectError
from mover.vsphere.address import ServerAddress, TlsPolicy
from mover.vsphere.tls import ThumbprintMismatch, context_for
from mover.vsphere.vmomi import connect, vim

log = logging.getLogger(__name__)
T = TypeVar("T")

COOKIE_NAME = "vmware_soap_session"


@dataclass(frozen=True, slots=True)
class Credentials:
    user: str
    password: str

    def __repr__(self) -> str:  # never let a password reach a log line or a traceback
        return f"Credentials(user={self.user!r}, password=***)"


class Session:
    """One SOAP session. ``call`` runs a pyvmomi operation, logging in again once if the
    server says the session expired (hosts drop idle API sessions after 30-60 minutes)."""

    def __init__(self, address: ServerAddress, credentials: Credentials, tls: TlsPolicy) -> None:
        self.address = address
        self._credentials = credentials
        self._tls = tls
        self._si: Any = None
        self._context: ssl.SSLContext | None = None
        self.logins = 0

    def login(self) -> None:
        kwargs: dict[str, Any] = {
            "protocol": self.address.scheme,
            "host": self.address.host,
            "port": self.address.port,
            "path": self.address.path,
            "user": self._credentials.user,
            "pwd": self._credentials.password,
            "connectionPoolTimeout": -1,
        }
        if self.address.scheme == "https":
            self._context = kwargs["sslContext"] = context_for(self._tls)
        try:
            self._si = connect.SmartConnect(**kwargs)
        except vim.fault.InvalidLogin as exc:
            raise AuthenticationError(
                f"{self.address.host} rejected user {self._credentials.user!r}: check the user "
                "name and the password file (or MOVER_PASSWORD)"
            ) from exc
        except ThumbprintMismatch as exc:
            raise ConnectError(
                f"the certificate of {self.address.host} does not match --thumbprint "
                f"({exc}): if the host's certificate was renewed, pin the new one") from exc
        except ssl.SSLCertVerificationError as exc:
            raise ConnectError(
                f"the TLS certificate of {self.address.host} is not trusted "
                f"({exc.verify_message}): install its CA, pin it with --thumbprint SHA256, "
                "or use --insecure"
            ) from exc
        except ssl.SSLError as exc:
            raise ConnectError(f"TLS to {self.address.base_url} failed: {exc}") from exc
        except OSError as exc:
            raise ConnectError(
                f"cannot reach {self.address}: {exc}; check --server and the network"
            ) from exc
        self.logins += 1
        log.info("logged in to %s as %s", self.address, self._credentials.user)

    @property
    def pinned_sha256(self) -> bytes | None:
        """The SHA-256 of the certificate a pinned login accepted (whatever the pin's
        digest), so that other connections to the host can pin the same certificate."""
        return getattr(self._context, "sha256", None)

    @property
    def content(self) -> Any:
        return self.service_instance.content

    @property
    def service_instance(self) -> Any:
        if self._si is None:
            self.login()
        return self._si

    @property
    def cookie(self) -> str:
        """The ``vmware_soap_session`` value, for the data plane's ``/folder`` requests."""
        morsel = SimpleCookie(self.service_instance._stub.cookie).get(COOKIE_NAME)
        if morsel is None:
            raise ConnectError(f"{self.address} gave no {COOKIE_NAME} cookie after login")
        return morsel.value

    def relogin(self) -> None:
        """Log in again on the same connection. Every managed object the job holds (VM,
        snapshot) is bound to this connection's stub; ``Login`` through it gives the stub the
        new session cookie, whereas a new connection would leave those objects on the dead
        session."""
        if self._si is None:
            self.login()
            return
        try:
            self._si.content.sessionManager.Login(self._credentials.user,
                                                  self._credentials.password)
        except vim.fault.InvalidLogin as exc:
            raise AuthenticationError(
                f"{self.address.host} no longer accepts user {self._credentials.user!r}: "
                "check the user name and the password file (or MOVER_PASSWORD)"
            ) from exc
        self.logins += 1
        log.info("logged in to %s again as %s", self.address, self._credentials.user)

    def call(self, operation: Callable[[], T]) -> T:
        """Run ``operation``; on ``NotAuthenticated`` log in again and run it once more."""
        try:
            return operation()
        except vim.fault.NotAuthenticated:
            log.warning("session to %s expired; logging in again", self.address)
            self.relogin()
            return operation()

    def keepalive(self) -> None:
        """A cheap call that resets the server's idle timer (and re-logs in if needed)."""
        self.call(lambda: self.service_instance.CurrentTime())

    def logout(self) -> None:
        if self._si is not None:
            try:
                connect.Disconnect(self._si)
            except Exception:  # logging out is a courtesy; the server expires it anyway
                log.debug("logout failed", exc_info=True)
            self._si = None
