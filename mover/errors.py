"""The error tree of mover. Every error a user can meet is one of these classes.

Each class carries a message template over its fields (what failed, and the fix) and the
process exit status the CLI and the worker use. Third-party exceptions (pyvmomi, aiohttp,
OSError) are mapped to these at the adapter that meets them, with ``raise ... from exc``.

    MoverError                      exit 1   anything unexpected that still has a message
    ├── UsageError                  exit 2   bad command line or job file
    ├── ConnectError                exit 3   server unreachable, TLS/thumbprint mismatch
    │   └── AuthenticationError     exit 4   wrong user or password
    │       └── PermissionDenied    exit 4   the user lacks a vSphere privilege (``.privilege``)
    ├── NotFoundError               exit 5   unknown VM, backup or disk
    ├── VSphereError                exit 6   a vSphere call failed (snapshot, CBT, query)
    │   └── UnsupportedVMError      exit 7   VM cannot be backed up as asked (no CBT, ...)
    ├── TransportError              exit 8   reading disk data failed (HTTP, short reads);
    │                                        ``.transient``: may the same read succeed later
    ├── RepositoryError             exit 9   repository damaged, wrong format, I/O failure
    │   ├── ObjectMissing           exit 9   the store has no object of that name
    │   └── IntegrityError          exit 10  a chunk or index does not match its digest
    ├── CbtSuspect                  exit 11  committed, but the canary caught CBT losing
    │                                        changes (the disk was read whole; reset CBT)
    ├── PartialJob                  exit 12  a job (``mover run``) committed some VMs, not all
    └── Interrupted                 exit 130 stopped by SIGINT/SIGTERM after cleaning up

CbtSuspect and PartialJob are statuses of a run that did commit; they are classes so that
every exit status has one home, and are raised only where a caller needs to stop.
"""

from __future__ import annotations

from typing import Any, ClassVar


class MoverError(Exception):
    """Base class: ``str(err)`` is the one-line cause and fix for a person."""

    exit_code: ClassVar[int] = 1
    template: ClassVar[str] = "{detail}"

    def __init__(self, detail: str = "", **fields: Any) -> None:
        self.detail = detail
        self.fields = fields
        super().__init__(self.template.format(detail=detail, **fields))

    @property
    def kind(self) -> str:
        """A stable machine-readable name for the JSON result."""
        return type(self).__name__

    def to_json(self) -> dict[str, Any]:
        """The JSON result's ``error``: kind, message, exit code and the fields that name
        what failed (``vm``, ``disk``, ``offset``, ``privilege``, ...; only plain values)."""
        plain = {k: v for k, v in self.fields.items()
                 if v is None or isinstance(v, str | int | float | bool)}
        out: dict[str, Any] = {"kind": self.kind, "message": str(self),
                               "exit_code": self.exit_code}
        if plain:
            out["fields"] = plain
        return out


class UsageError(MoverError):
    exit_code = 2


class ConnectError(MoverError):
    exit_code = 3


class AuthenticationError(ConnectError):
    exit_code = 4


class PermissionDenied(AuthenticationError):
    """The server knows the user and refused one operation for want of a privilege
    (``NoPermission``, or HTTP 403 on ``/folder``): not an expired session, so logging in
    again does not help. ``fields["privilege"]`` names the privilege, ``fields["object"]``
    what it is needed on."""


class NotFoundError(MoverError):
    exit_code = 5


class VSphereError(MoverError):
    exit_code = 6


class UnsupportedVMError(VSphereError):
    exit_code = 7


class TransportError(MoverError):
    """``transient`` is the adapter's verdict: True for faults a retry of the same read may
    outlive (HTTP 5xx, connection reset, short body, timeout), False for answers that will
    not change (404, 416, a wrong Content-Range). Unclassified errors are permanent."""

    exit_code = 8

    def __init__(self, detail: str = "", *, transient: bool = False, **fields: Any) -> None:
        super().__init__(detail, **fields)
        self.transient = transient


class RepositoryError(MoverError):
    exit_code = 9


class ObjectMissing(RepositoryError):
    """A store has no object of the name asked for (``mover.repo.store``). Where a missing
    object means damage (an index names a chunk whose pack is gone), the repository raises
    IntegrityError instead."""


class IntegrityError(RepositoryError):
    exit_code = 10


class CbtSuspect(MoverError):
    exit_code = 11


class PartialJob(MoverError):
    exit_code = 12


class Interrupted(MoverError):
    exit_code = 130
