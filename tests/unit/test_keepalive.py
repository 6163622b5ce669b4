"""SessionCookie (one login for many refused readers) and Keepalive, on a fake session."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any, cast

import pytest

from mover import clock
from mover.errors import VSphereError
from mover.jobs.control import ControlPlane
from mover.jobs.keepalive import Keepalive, SessionCookie
from mover.vsphere.session import Session


class FakeSession:
    """What SessionCookie uses of Session: ``cookie``, ``relogin``, ``keepalive``."""

    def __init__(self) -> None:
        self.cookie = "c1"
        self.logins = 0
        self.pings = 0
        self.threads: set[str] = set()

    def relogin(self) -> None:
        self.threads.add(threading.current_thread().name)
        self.logins += 1
        self.cookie = f"c{self.logins + 1}"

    def keepalive(self) -> None:
        self.threads.add(threading.current_thread().name)
        self.pings += 1


@pytest.fixture
def control() -> Iterator[ControlPlane]:
    plane = ControlPlane()
    yield plane
    plane.close()


def cookie_of(control: ControlPlane, session: FakeSession) -> SessionCookie:
    return SessionCookie(control, cast(Session, session), session.cookie)


async def test_readers_refused_together_share_one_login(control: ControlPlane) -> None:
    session = FakeSession()
    cookie = cookie_of(control, session)
    fresh = await asyncio.gather(*(cookie.refresh("c1") for _ in range(16)))
    assert fresh == ["c2"] * 16
    assert session.logins == 1 and cookie.refreshes == 1
    assert session.threads == {"mover-soap_0"}  # pyvmomi only ever on the control thread


async def test_a_second_expiry_logs_in_again(control: ControlPlane) -> None:
    session = FakeSession()
    cookie = cookie_of(control, session)
    assert await cookie.refresh("c1") == "c2"
    assert await cookie.refresh("c2") == "c3"
    assert await cookie.refresh("c2") == "c3"  # a late reader of the second wave
    assert session.logins == 2


async def test_no_login_when_the_control_plane_already_renewed_the_session(
        control: ControlPlane) -> None:
    """The keepalive met the expiry first (Session.call logged in again): the data plane
    only needs the new cookie."""
    session = FakeSession()
    cookie = cookie_of(control, session)
    session.cookie = "renewed-by-the-control-plane"
    assert await cookie.refresh("c1") == "renewed-by-the-control-plane"
    assert session.logins == 0


class FakeClock:
    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def pause(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(clock, "pause", fake.pause)
    return fake


async def test_keepalive_pings_every_interval_until_the_block_ends(fake_clock: FakeClock) -> None:
    pings: list[int] = []

    async def ping() -> None:
        pings.append(len(fake_clock.sleeps))

    async with Keepalive(ping, 600.0) as keepalive:
        while len(pings) < 3:
            await asyncio.sleep(0)
    settled = len(pings)
    for _ in range(10):
        await asyncio.sleep(0)
    assert len(pings) == settled == keepalive.pings
    assert set(fake_clock.sleeps) == {600.0}


async def test_a_failed_ping_does_not_end_the_job(fake_clock: FakeClock) -> None:
    calls = 0

    async def ping() -> None:
        nonlocal calls
        calls += 1
        raise VSphereError("host unreachable")

    async with Keepalive(ping, 1.0):
        while calls < 3:
            await asyncio.sleep(0)


async def test_interval_zero_never_pings(fake_clock: FakeClock) -> None:
    async def ping() -> None:
        raise AssertionError("no ping expected")

    async with Keepalive(ping, 0):
        await asyncio.sleep(0)
    assert fake_clock.sleeps == []


async def test_keepalive_through_the_control_plane(control: ControlPlane,
                                                   fake_clock: FakeClock) -> None:
    session = FakeSession()
    cookie = cookie_of(control, session)
    async with Keepalive(cookie.keepalive, 10.0):
        while session.pings < 2:
            await asyncio.sleep(0.001)
    assert session.threads == {"mover-soap_0"}


async def test_cancelling_the_caller_is_not_swallowed(fake_clock: FakeClock) -> None:
    async def ping() -> None:
        pass

    entered = asyncio.Event()

    async def job() -> Any:
        async with Keepalive(ping, 1.0):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(job())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
