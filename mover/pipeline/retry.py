"""Retrying reads: a ``Transport`` wrapper that retries what the adapter calls transient.

The wrapper only asks ``TransportError.transient``; classifying a failure is the adapter's
job (``mover.pipeline.folder``). A read is retried with exponential backoff and full jitter
(a uniformly random delay between 0 and ``base * 2**(retry-1)``, capped), at most
``attempts`` times in all, and every retry of every disk of a job takes one unit from a
shared ``RetryBudget``: a host that keeps failing ends the job instead of stretching it
forever. Giving up raises a ``TransportError`` naming the range, the attempts and the last
cause. Sleeping goes through ``mover.clock.pause``, so tests run on fake time.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from dataclasses import dataclass

from mover import clock
from mover.errors import TransportError
from mover.pipeline.transport import Transport

__all__ = ["RetryBudget", "RetryPolicy", "RetryingTransport"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5           # per read, the first one included; 1 disables retrying
    base_delay: float = 0.5     # seconds; the cap of the first retry's delay
    max_delay: float = 20.0     # seconds; no delay cap grows beyond this

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
        self._inner = inner
        self._policy = policy
        self._budget = budget
        self._rng = rng or random.Random()

    async def read_into(self, offset: int, buf: memoryview) -> None:
        for attempt in itertools.count(1):
            try:
                await self._inner.read_into(offset, buf)
                return
            except TransportError as exc:
                if not exc.transient:
                    raise
                self._give_up_unless_allowed(offset, len(buf), attempt, exc)
                cause = _cause(exc)
            delay = self._rng.uniform(0.0, self._policy.cap(attempt))
            log.info("retrying %s bytes %d-%d in %.2f s (attempt %d: %s)", self.name, offset,
                     offset + len(buf) - 1, delay, attempt, cause)
            await clock.pause(delay)
            _refuse_if_cancelled()
            self.retries += 1

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
