"""Keeping the control plane's session usable while the data plane copies.

Hosts expire API sessions (idle ones after 30-60 minutes, and some also while data flows on
``/folder``); after that ``/folder`` answers 401. Two things cover it:

- ``SessionCookie``: the cookie the data plane sends, and ``refresh`` after a 401, which
  logs in again through the control plane **once** however many readers were refused with
  the same stale cookie;
- ``Keepalive``: while disks are copied, a background task pings the session every
  ``interval`` seconds, so the host never sees it idle.
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import Awaitable, Callable

from mover import clock
from mover.jobs.control import ControlPlane
from mover.vsphere.session import Session

log = logging.getLogger(__name__)


class SessionCookie:
    """The ``vmware_soap_session`` value for the data plane (``CookieSource`` of
    ``mover.pipeline.folder``). Used on the event loop only."""

    def __init__(self, control: ControlPlane, session: Session, value: str) -> None:
        self.value = value
        self.refreshes = 0              # times a refusal made us fetch a new cookie
        self._control = control
        self._session = session
        self._lock = asyncio.Lock()

    @classmethod
    async def of(cls, control: ControlPlane, session: Session) -> SessionCookie:
        """The cookie of the control plane's current (logged-in) session."""
        return cls(control, session, await control.run(lambda: session.cookie))

    async def refresh(self, stale: str) -> str:
        """A cookie other than ``stale``. Readers refused together wait for one login."""
        async with self._lock:
            if self.value != stale:     # another reader (or the control plane) renewed it
                return self.value
            self.value = await self._control.run(_renew, self._session, stale)
            self.refreshes += 1
            return self.value

    async def keepalive(self) -> None:
        """Reset the host's idle timer (the control plane logs in again if it expired)."""
        await self._control.run(self._session.keepalive)


def _renew(session: Session, stale: str) -> str:
    """On the control thread: the session's cookie, after logging in again unless the
    control plane already did (``Session.call`` does on ``NotAuthenticated``)."""
    if session.cookie == stale:
        log.warning("the host refused the data plane's session cookie; logging in again")
        session.relogin()
    return session.cookie


class Keepalive:
    """``async with Keepalive(ping, interval):`` runs ``ping`` every ``interval`` seconds in
    the background until the block ends. A failed ping is logged, not raised: the data plane
    notices a dead session by itself (401) and refreshes it. ``interval <= 0``: no pings."""

    def __init__(self, ping: Callable[[], Awaitable[None]], interval: float) -> None:
        self.pings = 0
        self._ping = ping
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            await clock.pause(self._interval)
            try:
                await self._ping()
            except Exception as exc:  # best effort: never let a ping end the job
                log.warning("session keepalive failed: %s", exc)
            self.pings += 1

    async def __aenter__(self) -> Keepalive:
        if self._interval > 0:
            self._task = asyncio.create_task(self._run(), name="mover-keepalive")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: types.TracebackType | None) -> None:
        if self._task is not None:
            self._task.cancel()
            # wait() does not raise the task's CancelledError, so our own cancellation (if
            # any) still reaches the caller
            await asyncio.wait([self._task])
            self._task = None
