"""RetryingTransport on fake time, over an in-memory transport that fails on a schedule."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mover import clock
from mover.errors import AuthenticationError, TransportError
from mover.pipeline.retry import RetryBudget, RetryingTransport, RetryPolicy

KiB = 1024


class ScheduledTransport:
    """An in-memory disk whose reads fail as ``schedule`` says: one entry per call, an
    exception to raise or None to succeed; past the end of the schedule reads succeed."""

    def __init__(self, schedule: list[BaseException | None], size: int = 64 * KiB) -> None:
        self.name = "/folder/vm/vm-flat.vmdk"
        self.size = size
        self.max_readers = 4
        self.data = bytes(range(256)) * (size // 256)
        self.calls: list[int] = []
        self._schedule = iter(schedule)

    async def read_into(self, offset: int, buf: memoryview) -> None:
        self.calls.append(offset)
        failure = next(self._schedule, None)
        if failure is not None:
            buf[: len(buf) // 2] = b"x" * (len(buf) // 2)  # a failed read leaves garbage
            raise failure
        buf[:] = self.data[offset:offset + len(buf)]

    async def close(self) -> None:
        pass


class FakeTime:
    """Replaces ``clock.pause``: records each delay, advances ``now``, never really waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    async def pause(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # still a suspension point, as a real sleep is


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTime]:
    fake = FakeTime()
    monkeypatch.setattr(clock, "pause", fake.pause)
    yield fake


class Highest(random.Random):
    """Jitter pinned to its upper bound, to see the backoff caps themselves."""

    def uniform(self, a: float, b: float) -> float:
        return b


def transient(cause: str = "expected HTTP 206, got 503 Service Unavailable") -> TransportError:
    return TransportError(f"reading /folder/vm/vm-flat.vmdk: {cause}", transient=True,
                          cause=cause)


def permanent(cause: str = "expected HTTP 206, got 404 Not Found") -> TransportError:
    return TransportError(f"reading /folder/vm/vm-flat.vmdk: {cause}", transient=False,
                          cause=cause)


def wrap(inner: ScheduledTransport, attempts: int = 5, budget: RetryBudget | None = None,
         rng: random.Random | None = None, base: float = 0.5,
         cap: float = 20.0) -> RetryingTransport:
    return RetryingTransport(inner, RetryPolicy(attempts, base, cap), budget or RetryBudget(100),
                             rng or random.Random(7))


async def read(transport: RetryingTransport, offset: int = 4 * KiB,
               length: int = 8 * KiB) -> bytes:
    buf = bytearray(length)
    await transport.read_into(offset, memoryview(buf))
    return bytes(buf)


@pytest.mark.parametrize(
    "failures",
    [
        pytest.param([transient()], id="one-503"),
        pytest.param([transient("ClientPayloadError: Response payload is not completed"),
                      transient("short body, 100 of 8192 bytes")], id="reset-then-short-body"),
        pytest.param([transient("no complete reply within 1.0 s (read timeout)")] * 4,
                     id="four-timeouts-then-the-fifth-attempt-succeeds"),
    ],
)
async def test_transient_failures_are_retried_until_the_read_succeeds(
        fake_time: FakeTime, failures: list[BaseException | None]) -> None:
    inner = ScheduledTransport(failures)
    budget = RetryBudget(10)
    transport = wrap(inner, budget=budget)
    assert await read(transport) == inner.data[4 * KiB:12 * KiB]
    assert inner.calls == [4 * KiB] * (len(failures) + 1)
    assert transport.retries == budget.used == len(fake_time.sleeps) == len(failures)


async def test_delays_double_up_to_the_cap(fake_time: FakeTime) -> None:
    inner = ScheduledTransport([transient()] * 7)
    transport = wrap(inner, attempts=8, rng=Highest(), base=0.5, cap=3.0)
    await read(transport)
    assert fake_time.sleeps == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0]


@given(seed=st.integers(0, 2**32), base=st.floats(0.01, 2.0), factor=st.floats(1.0, 50.0))
async def test_delays_are_jittered_between_zero_and_the_cap(seed: int, base: float,
                                                            factor: float) -> None:
    sleeps: list[float] = []

    async def pause(seconds: float) -> None:
        sleeps.append(seconds)

    # hypothesis and function-scoped fixtures do not mix: patch by hand
    saved, clock.pause = clock.pause, pause
    try:
        policy = RetryPolicy(9, base, base * factor)
        inner = ScheduledTransport([transient()] * 8)
        await read(RetryingTransport(inner, policy, RetryBudget(100), random.Random(seed)))
    finally:
        clock.pause = saved
    assert len(sleeps) == 8
    for retry, delay in enumerate(sleeps, start=1):
        assert 0.0 <= delay <= policy.cap(retry) <= policy.max_delay


async def test_jitter_spreads_the_delays(fake_time: FakeTime) -> None:
    """Full jitter: readers failing together do not come back together."""
    rng = random.Random(3)
    for _ in range(200):
        await read(wrap(ScheduledTransport([transient()]), rng=rng))
    first = fake_time.sleeps
    assert min(first) < 0.05 and max(first) > 0.45  # the whole [0, 0.5] range is used
    assert 0.2 < sum(first) / len(first) < 0.3      # uniform: mean about half the cap
    assert len(set(first)) == len(first)


async def test_giving_up_names_the_range_the_attempts_and_the_last_cause(
        fake_time: FakeTime) -> None:
    inner = ScheduledTransport([transient("ServerDisconnectedError")] * 2 +
                               [transient("expected HTTP 206, got 503 Service Unavailable")])
    transport = wrap(inner, attempts=3)
    with pytest.raises(TransportError) as caught:
        await read(transport, offset=1 << 20, length=4 << 20)
    message = str(caught.value)
    assert "/folder/vm/vm-flat.vmdk bytes 1048576-5242879" in message
    assert "after 3 attempts" in message
    assert "the limit of 3 attempts per read" in message
    assert message.endswith("last cause: expected HTTP 206, got 503 Service Unavailable")
    assert caught.value.fields["attempts"] == 3
    assert caught.value.exit_code == 8
    assert len(inner.calls) == 3 and len(fake_time.sleeps) == 2


async def test_one_budget_is_shared_by_every_disk_of_a_job(fake_time: FakeTime) -> None:
    budget = RetryBudget(3)
    first = wrap(ScheduledTransport([transient()] * 2), budget=budget)
    second = wrap(ScheduledTransport([transient()] * 4), budget=budget)
    await read(first)
    with pytest.raises(TransportError) as caught:
        await read(second, offset=0, length=4 * KiB)
    message = str(caught.value)
    assert "bytes 0-4095 failed after 2 attempts" in message
    assert "the job's retry budget of 3 retries is spent" in message
    assert "last cause: expected HTTP 206, got 503" in message
    assert (first.retries, second.retries, budget.used) == (2, 1, 3)


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(permanent(), id="404"),
        pytest.param(permanent("expected HTTP 206, got 416 Range Not Satisfiable"), id="416"),
        pytest.param(permanent("the server answered Content-Range 'bytes 0-9/10', not the "
                               "range asked for"), id="content-range-mismatch"),
        pytest.param(TransportError("unclassified"), id="unclassified-is-permanent"),
        pytest.param(AuthenticationError("the host refused the session (HTTP 401) also after "
                                         "logging in again"), id="401-after-refresh"),
    ],
)
async def test_permanent_errors_are_not_retried(fake_time: FakeTime,
                                                error: BaseException) -> None:
    inner = ScheduledTransport([error])
    budget = RetryBudget(10)
    with pytest.raises(type(error)) as caught:
        await read(wrap(inner, budget=budget))
    assert caught.value is error
    assert len(inner.calls) == 1
    assert fake_time.sleeps == [] and budget.used == 0


async def test_a_permanent_error_after_retries_is_raised_as_it_is(fake_time: FakeTime) -> None:
    error = permanent()
    inner = ScheduledTransport([transient(), error])
    with pytest.raises(TransportError) as caught:
        await read(wrap(inner))
    assert caught.value is error and len(inner.calls) == 2


async def test_one_attempt_means_no_retries(fake_time: FakeTime) -> None:
    inner = ScheduledTransport([transient()])
    with pytest.raises(TransportError, match=r"after 1 attempt \(the limit of 1 attempts"):
        await read(wrap(inner, attempts=1))
    assert len(inner.calls) == 1 and fake_time.sleeps == []


async def test_cancelled_during_backoff_no_further_attempt(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sleeping = asyncio.Event()

    async def pause(seconds: float) -> None:
        sleeping.set()
        await asyncio.Event().wait()  # only cancellation ends this

    monkeypatch.setattr(clock, "pause", pause)
    inner = ScheduledTransport([transient()] * 10)
    task = asyncio.create_task(read(wrap(inner)))
    await sleeping.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(inner.calls) == 1


async def test_a_swallowed_cancellation_still_stops_retrying(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A callee that eats CancelledError must not make the wrapper start another request."""
    sleeping = asyncio.Event()

    async def pause(seconds: float) -> None:
        sleeping.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return  # swallowed

    monkeypatch.setattr(clock, "pause", pause)
    inner = ScheduledTransport([transient()] * 10)
    task = asyncio.create_task(read(wrap(inner)))
    await sleeping.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(inner.calls) == 1


async def test_concurrent_readers_back_off_independently(fake_time: FakeTime) -> None:
    inner = ScheduledTransport([transient()] * 4)
    transport = wrap(inner, budget=RetryBudget(4))
    reads = [read(transport, offset=i * 8 * KiB, length=8 * KiB) for i in range(4)]
    got = await asyncio.gather(*reads)
    assert b"".join(got) == inner.data[:32 * KiB]
    assert transport.retries == 4 and len(inner.calls) == 8


@pytest.mark.parametrize(
    ("attempts", "base", "cap"),
    [pytest.param(0, 0.5, 1.0, id="no-attempts"),
     pytest.param(3, -1.0, 1.0, id="negative-delay"),
     pytest.param(3, 2.0, 1.0, id="cap-below-base")],
)
def test_a_nonsense_policy_is_refused(attempts: int, base: float, cap: float) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts, base, cap)


def test_the_wrapper_keeps_the_transport_interface() -> None:
    inner = ScheduledTransport([])
    transport = wrap(inner)
    assert (transport.name, transport.size, transport.max_readers) == (
        inner.name, inner.size, inner.max_readers)
