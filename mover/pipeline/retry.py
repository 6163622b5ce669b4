"""Retrying reads: a ``Transport`` wrapper that retries what the adapter calls transient.

The wrapper only asks ``TransportError.transient``; classifying a failure is the adapter's
job (``mover.pipeline.folder``). A read is retried with exponential backoff and full jitter
(a uniformly random delay between 0 and ``base * 2**(retry-1)``, capped), at most
``attempts`` times in all, and every retry of every disk of a job takes one unit from a
shared ``RetryBudget``: a host that keeps failing ends the job instead of stretching it
forever. Giving up raises a ``TransportError`` naming the range, the attempts and the last
cause. Sleeping goes through ``mover.clock.pause``, so tests run on fake time.

A host that refuses for now (``fault`` ``busy``: 503; ``locked``: 500 while another tool
holds the disk open) is different: it is not failing, it is telling us to come back, and a
lock or a load spike lasts as long as the other tool's work, which grows with the disk. So
those refusals neither count as attempts nor take from the job's budget; they are retried
while the host has been refusing this disk for no longer than ``RetryPolicy.host_wait``
seconds (``host_wait_budget``: a minimum plus so much per GiB of the disk), measured from
the first refusal since the disk's last successful read, on ``mover.clock.monotonic``
(fetchers waiting side by side share one clock, not a sum). Giving up then says which it
was and how long it lasted (``fields["fault"]``, ``fields["waited"]``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

from mover import clock
from mover.errors import TransportError
from mover.pipeline.transport import Transport

__all__ = ["RetryBudget", "RetryPolicy", "RetryingTransport", "host_wait_budget"]

#: faults of a host that refuses for now (mover.pipeline.folder.HOST_BUSY, DISK_LOCKED)
HOST_FAULTS = {"busy": "503, the host is busy", "locked": "500, the disk is locked by another "
               "reader"}
GiB = 1 << 30


def host_wait_budget(size: int, minimum: float, per_gib: float) -> float:
    """Seconds a disk of ``size`` bytes may wait on a busy or locking host, in all:
    ``minimum`` plus ``per_gib`` for every GiB (another tool reading the same disk takes
    time in proportion to it)."""
    return minimum + per_gib * size / GiB

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5           # per read, the first one included; 1 disables retrying
    base_delay: float = 0.5     # seconds; the cap of the first retry's delay
    max_delay: float = 20.0     # seconds; no delay cap grows beyond this
    host_wait: float = 0.0      # seconds a transport may wait on busy/locked refusals, in all

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError(f"bad retry policy {self!r}")

    def cap(self, retry: int) -> float:
        """The upper bound of the delay before retry number ``retry`` (1, 2, ...)."""
        return min(self.max_delay, self.base_delay * 2.0 ** (retry - 1))


class RetryBudget:
    """Retries one job may spend, shared by all its disks (used on the event loop only)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self) -> bool:
        """Spend one retry; False when none is left."""
        if self.used >= self.limit:
            return False
        self.used += 1
        return True


class RetryingTransport:
    """Same contract as the wrapped transport; transient ``TransportError``s are retried.

    Permanent errors and every other exception (``AuthenticationError``, cancellation) pass
    through untouched on the first occurrence. A cancelled task never starts another
    attempt. ``retries`` counts the retries this transport made (for the job's result)."""

    def __init__(self, inner: Transport, policy: RetryPolicy, budget: RetryBudget,
                 rng: random.Random | None = None) -> None:
        self.name = inner.name
        self.size = inner.size
        self.max_readers = inner.max_readers
        self.retries = 0
        self.waits: dict[str, int] = {}     # busy/locked refusals waited out, by fault
        self._refused_since: float | None = None   # first refusal since the last success
        self._inner = inner
        self._policy = policy
        self._budget = budget
        self._rng = rng or random.Random()

    async def read_into(self, offset: int, buf: memoryview) -> None:
        attempt = refusals = 0
        while True:
            try:
                await self._inner.read_into(offset, buf)
                self._refused_since = None
                return
            except TransportError as exc:
                if not exc.transient:
                    raise
                fault = exc.fields.get("fault")
                if fault in HOST_FAULTS:
                    refusals += 1
                    delay = self._host_delay(offset, len(buf), refusals, exc)
                    self.waits[fault] = self.waits.get(fault, 0) + 1
                    log.info("host refused %s bytes %d-%d (%s); waiting %.2f s", self.name,
                             offset, offset + len(buf) - 1, HOST_FAULTS[fault], delay)
                    await clock.pause(delay)
                    _refuse_if_cancelled()
                    self.retries += 1
                    continue
                attempt += 1
                self._give_up_unless_allowed(offset, len(buf), attempt, exc)
                cause = _cause(exc)
            delay = self._rng.uniform(0.0, self._policy.cap(attempt))
            log.info("retrying %s bytes %d-%d in %.2f s (attempt %d: %s)", self.name, offset,
                     offset + len(buf) - 1, delay, attempt, cause)
            await clock.pause(delay)
            _refuse_if_cancelled()
            self.retries += 1

    def _host_delay(self, offset: int, length: int, refusals: int,
                    exc: TransportError) -> float:
        """The wait before asking a refusing host again, within what is left of the
        disk's time budget; giving up when none is left."""
        now = clock.monotonic()
        if self._refused_since is None:
            self._refused_since = now
        waited = now - self._refused_since
        left = self._policy.host_wait - waited
        if left <= 0:
            fault = str(exc.fields.get("fault"))
            end = offset + length - 1
            raise TransportError(
                f"reading {self.name} bytes {offset}-{end}: the host kept refusing "
                f"({HOST_FAULTS[fault]}) for {waited:.0f} s, the time budget of this disk "
                f"({self._policy.host_wait:.0f} s: --host-wait plus "
                "10 s per GiB); last cause: "
                f"{_cause(exc)}; retry when the other tool is done, or give a longer "
                "--host-wait", transient=True, offset=offset, length=length, fault=fault,
                waited=round(waited, 3), budget=self._policy.host_wait,
                cause=_cause(exc)) from exc
        # the cap grows to max_delay; a random part keeps readers from asking in step
        cap = min(self._policy.max_delay, self._policy.base_delay * 2.0 ** (refusals - 1))
        return min(left, self._rng.uniform(cap / 2, cap))

    def _give_up_unless_allowed(self, offset: int, length: int, attempt: int,
                                exc: TransportError) -> None:
        if attempt >= self._policy.attempts:
            why = f"the limit of {self._policy.attempts} attempts per read"
        elif not self._budget.take():
            why = f"the job's retry budget of {self._budget.limit} retries is spent"
        else:
            return
        end = offset + length - 1
        raise TransportError(
            f"reading {self.name} bytes {offset}-{end} failed after {attempt} "
            f"attempt{'s' if attempt > 1 else ''} ({why}); last cause: {_cause(exc)}",
            transient=True, offset=offset, length=length, attempts=attempt,
            cause=_cause(exc)) from exc

    async def close(self) -> None:
        await self._inner.close()


def _cause(exc: TransportError) -> str:
    """The adapter's short cause (without the range it repeats), else the whole message."""
    return str(exc.fields.get("cause") or exc)


def _refuse_if_cancelled() -> None:
    """A task whose cancellation was requested (and perhaps swallowed by a callee) must not
    start another request."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
