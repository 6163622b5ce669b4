"""One CPU pool for a job's backups: each backup's view waits for its own work only."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from mover.aio import TrackedExecutor


def test_shutdown_waits_for_its_own_work_and_not_for_the_others() -> None:
    pool = ThreadPoolExecutor(2)
    a, b = TrackedExecutor(pool), TrackedExecutor(pool)
    release_a, release_b = threading.Event(), threading.Event()
    done: list[str] = []

    def work(name: str, gate: threading.Event) -> None:
        gate.wait(10)
        done.append(name)

    b_future = b.submit(work, "b", release_b)       # blocks until the end of the test
    a.submit(work, "a", release_a)
    threading.Timer(0.2, release_a.set).start()
    a.shutdown(wait=True, cancel_futures=True)
    assert done == ["a"]                            # waited for its own running call
    assert not b_future.done()                      # the other view's work goes on
    with pytest.raises(RuntimeError, match="after shutdown"):
        a.submit(work, "late", release_a)
    release_b.set()
    b.shutdown(wait=True)
    assert done == ["a", "b"]
    pool.shutdown()


def test_shutdown_cancels_its_queued_work() -> None:
    pool = ThreadPoolExecutor(1)
    gate = threading.Event()
    view = TrackedExecutor(pool)
    running = view.submit(gate.wait, 10)
    queued = view.submit(lambda: "never")
    threading.Timer(0.2, gate.set).start()
    view.shutdown(wait=True, cancel_futures=True)
    assert running.done() and queued.cancelled()
    pool.shutdown()
