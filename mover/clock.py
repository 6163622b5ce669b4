"""The one place mover reads time, so tests can control it."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime


def monotonic() -> float:
    return time.monotonic()


def boottime() -> float:
    """Seconds on a clock that also counts the time the machine was suspended
    (``CLOCK_BOOTTIME`` on Linux; ``CLOCK_MONOTONIC`` stops meanwhile, so a lease measured
    with it would look fresh after a laptop's sleep). Elsewhere the monotonic clock. No
    local clock sees a guest VM that its hypervisor suspended: leases measure with this and
    still check the store (``mover.repo.leases``)."""
    return time.clock_gettime(_BOOTTIME) if _BOOTTIME is not None else time.monotonic()


_BOOTTIME: int | None = getattr(time, "CLOCK_BOOTTIME", None)


def sleep(seconds: float) -> None:
    """Block the calling thread (only ever a worker thread, never the event loop)."""
    time.sleep(seconds)


async def pause(seconds: float) -> None:
    """Sleep on the event loop (cancellable). Unit tests replace this to use fake time."""
    await asyncio.sleep(seconds)


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None = None) -> str:
    """UTC time as ``2026-11-25T02:15:00Z``."""
    return (moment or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp(moment: datetime | None = None) -> str:
    """UTC time to the microsecond, ``2026-11-25T02:15:00.123456Z``: what orders a VM's
    backups (two runs of a small VM can start in one second)."""
    return (moment or now()).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse(text: str) -> datetime:
    """A time written by :func:`iso` or :func:`stamp` (ValueError otherwise)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
