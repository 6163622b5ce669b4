"""The token bucket (pure) and the limits built on it, with fake time."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mover import clock
from mover.pipeline.limits import Bandwidth, HostLimits, LimitedTransport
from mover.tokenbucket import TokenBucket

requests = st.lists(st.tuples(st.floats(0, 2.0), st.integers(1, 4 << 20)), min_size=1,
                    max_size=60)


@given(rate=st.floats(1e3, 1e9), burst=st.floats(0, 8e6), calls=requests)
def test_released_tokens_never_exceed_burst_plus_rate_times_time(
        rate: float, burst: float, calls: list[tuple[float, int]]) -> None:
    """Callers that reserve at arbitrary times and then wait as told: by any release time t,
    the tokens released add up to at most burst + rate * t."""
    bucket = TokenBucket(rate, burst, start=0.0)
    now, released = 0.0, []
    for gap, n in calls:
        now += gap
        released.append((now + bucket.reserve(n, now), n))
    released.sort()
    total = 0
    for t, n in released:
        total += n
        assert total <= burst + rate * t + 1e-6 * total + 1


@given(rate=st.floats(1e3, 1e9), calls=requests)
def test_a_caller_waits_no_longer_than_the_debt_needs(rate: float,
                                                      calls: list[tuple[float, int]]) -> None:
    """Back to back reservations with an empty bucket: the last one is released when the rate
    has paid for all of them, not later."""
    bucket = TokenBucket(rate, 0.0, start=0.0)
    total = 0
    wait = 0.0
    for _, n in calls:
        total += n
        wait = bucket.reserve(n, 0.0)
    assert wait == pytest.approx(total / rate, rel=1e-9)


def test_a_bad_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="rate above 0"):
        TokenBucket(0.0, 1.0, 0.0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    async def pause(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(clock, "monotonic", fake.monotonic)
    monkeypatch.setattr(clock, "pause", fake.pause)
    return fake


class SlowTransport:
    """Counts reads in flight; each takes a few event-loop turns."""

    name = "slow"
    size = 1 << 30
    max_readers = 64

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    async def read_into(self, offset: int, buf: memoryview) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)
        for _ in range(3):
            await asyncio.sleep(0)
        self.now -= 1

    async def close(self) -> None:
        pass


async def test_host_slots_are_shared_by_every_transport_of_the_host() -> None:
    limits = HostLimits(reads=3, bytes_per_second=None)
    inner = {host: SlowTransport() for host in ("host-1", "host-2")}
    wrapped = [LimitedTransport(inner[host], limits.slots(host), [])
               for host in ("host-1", "host-1", "host-2", "host-1")]
    buf = memoryview(bytearray(16))
    await asyncio.gather(*(t.read_into(0, buf) for t in wrapped for _ in range(10)))
    # three transports of host-1 with 30 reads: never more than 3 in flight
    assert inner["host-1"].peak == 3
    assert inner["host-2"].peak == 3


async def test_bandwidth_paces_reads_to_the_rate(fake_clock: FakeClock) -> None:
    rate = 10 << 20
    bandwidth = Bandwidth(rate)
    transport = LimitedTransport(SlowTransport(), None, [bandwidth])
    buf = memoryview(bytearray(1 << 20))
    for _ in range(100):
        await transport.read_into(0, buf)
    # 100 MiB at 10 MiB/s, less the burst (a quarter second) the bucket starts with
    assert fake_clock.now == pytest.approx(10.0 - 0.25, rel=1e-6)
