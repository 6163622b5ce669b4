"""``mover.aio.finish``: side effects run to their end even when the caller is cancelled."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mover.aio import finish


async def slow(value: str, log: list[str], seconds: float = 0.05) -> str:
    await asyncio.sleep(seconds)
    log.append(f"done {value}")
    return value


async def cancel_soon(task: asyncio.Task[Any]) -> None:
    await asyncio.sleep(0.01)
    task.cancel()


async def test_without_a_cancellation_it_is_a_plain_await() -> None:
    log: list[str] = []
    assert await finish(slow("a", log)) == "a"
    assert log == ["done a"]


async def test_cancelled_work_still_finishes_then_is_undone() -> None:
    log: list[str] = []

    async def undo(value: str) -> None:
        log.append(f"undo {value}")

    task = asyncio.create_task(finish(slow("snapshot", log), undo=undo))
    await cancel_soon(task)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["done snapshot", "undo snapshot"]


async def test_work_that_is_too_late_to_cancel_withdraws_the_cancellation() -> None:
    log: list[str] = []

    async def run() -> tuple[str, int]:
        result = await finish(slow("commit", log), too_late=True)
        await asyncio.sleep(0)            # no pending cancellation left to hit this
        task = asyncio.current_task()
        assert task is not None
        return result, task.cancelling()

    task = asyncio.create_task(run())
    await cancel_soon(task)
    assert await task == ("commit", 0)
    assert log == ["done commit"]


async def test_a_failure_after_the_cancellation_leaves_the_cancellation_standing() -> None:
    async def broken() -> None:
        await asyncio.sleep(0.05)
        raise OSError("removal failed")

    task = asyncio.create_task(finish(broken()))
    await cancel_soon(task)
    with pytest.raises(asyncio.CancelledError):
        await task
