"""A host that refuses for now (503 busy, 500 disk locked) is waited for within a time
budget that grows with the disk, not a count of attempts (fake time)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from mover import clock
from mover.errors import TransportError
from mover.pipeline.retry import RetryBudget, RetryingTransport, RetryPolicy, host_wait_budget

KiB, GiB = 1024, 1 << 30


def refusal(fault: str) -> TransportError:
    status = 503 if fault == "busy" else 500
    return TransportError(f"reading x: HTTP {status}", transient=True, fault=fault,
                          cause=f"HTTP {status}")


class Refusing:
    """Refuses ``times`` reads with ``fault`` (None: for ever), then serves zeros."""

    def __init__(self, fault: str, times: int | None) -> None:
        self.name, self.size, self.max_readers = "/folder/vm/vm-flat.vmdk", 64 * KiB, 4
        self.fault, self.left, self.calls = fault, times, 0

    async def read_into(self, offset: int, buf: memoryview) -> None:
        self.calls += 1
        if self.left is None or self.left > 0:
            if self.left is not None:
                self.left -= 1
            raise refusal(self.fault)
        buf[:] = bytes(len(buf))

    async def close(self) -> None:
        pass


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    async def pause(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTime]:
    time = FakeTime()
    monkeypatch.setattr(clock, "pause", time.pause)
    monkeypatch.setattr(clock, "monotonic", time.monotonic)
    yield time


def test_budget_scales_with_the_disk() -> None:
    assert host_wait_budget(0, 60, 10) == 60
    assert host_wait_budget(100 * GiB, 60, 10) == 1060


@pytest.mark.parametrize("fault", ["busy", "locked"])
def test_refusals_are_waited_out_without_spending_attempts(fake: FakeTime, fault: str) -> None:
    inner = Refusing(fault, 12)
    budget = RetryBudget(0)             # no retries of faults at all...
    t = RetryingTransport(inner, RetryPolicy(attempts=1, host_wait=600), budget)
    buf = bytearray(4 * KiB)
    asyncio.run(t.read_into(0, memoryview(buf)))
    assert inner.calls == 13 and t.waits == {fault: 12}   # ...yet the refusals are outlived
    assert budget.used == 0


@pytest.mark.parametrize("fault", ["busy", "locked"])
def test_giving_up_after_the_time_budget_says_which(fake: FakeTime, fault: str) -> None:
    t = RetryingTransport(Refusing(fault, None), RetryPolicy(host_wait=90), RetryBudget(200))
    started = fake.now
    with pytest.raises(TransportError) as caught:
        asyncio.run(t.read_into(4 * KiB, memoryview(bytearray(KiB))))
    error = caught.value
    assert fake.now - started == pytest.approx(90)       # waited the budget, not a count
    assert error.fields["fault"] == fault and error.fields["budget"] == 90
    assert error.fields["offset"] == 4 * KiB and error.fields["waited"] >= 90
    assert ("the host is busy" if fault == "busy" else "locked by another reader") in str(error)
    assert "--host-wait" in str(error)


def test_a_success_restarts_the_clock(fake: FakeTime) -> None:
    inner = Refusing("busy", 3)
    t = RetryingTransport(inner, RetryPolicy(host_wait=5, max_delay=4), RetryBudget(0))
    asyncio.run(t.read_into(0, memoryview(bytearray(KiB))))   # about 3.5 s of refusals
    inner.left = 3
    asyncio.run(t.read_into(0, memoryview(bytearray(KiB))))   # a fresh 5 s, not 1.5 s left
    assert t.waits == {"busy": 6}
