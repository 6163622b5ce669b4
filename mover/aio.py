"""Small asyncio helpers shared by the pipeline and the jobs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real error of a task group, so a user sees one cause, not a tree of
    cancellations."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = next((e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)),
                   exc.exceptions[0])
    return exc


async def finish(work: Awaitable[T], *,
                 undo: Callable[[T], Awaitable[object]] | None = None,
                 too_late: bool = False) -> T:
    """Await ``work`` to its end even if the calling task is cancelled meanwhile.

    Side effects on a server or a disk (a snapshot being created or removed, a commit) run
    on a thread that a cancellation cannot stop, so the caller must wait for them and then
    decide. If the caller is cancelled while ``work`` runs:

    * ``too_late=True``: the work is done and cannot be taken back (a commit); the
      cancellation is withdrawn and the result returned, so the run reports what happened.
    * otherwise ``undo(result)`` runs (itself to its end: removing a snapshot created
      meanwhile) and ``CancelledError`` is raised. An error of ``work`` or ``undo`` after the
      cancellation is logged; the cancellation wins.
    """
    future = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if too_late:
            result = await future
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            return result
        try:
            result = await future
        except Exception as exc:  # the cancellation is what the caller must see
            log.info("after a cancellation: %s", exc)
            raise asyncio.CancelledError() from exc
        if undo is not None:
            with contextlib.suppress(Exception):
                await finish(undo(result))
        raise


class TrackedExecutor(concurrent.futures.Executor):
    """A view of a shared thread pool that knows its own work: ``shutdown`` cancels this
    view's queued calls and waits for its running ones, never the other users' (and never
    shuts the pool down). The backups of a job share one pool; each backup's data plane has
    a view, so that its exit still waits for every block it handed to a thread before the
    backup's pending state is suspended or aborted (a thread cannot be cancelled)."""

    def __init__(self, pool: concurrent.futures.Executor) -> None:
        self._pool = pool
        self._lock = threading.Lock()
        self._futures: set[concurrent.futures.Future[Any]] = set()
        self._closed = False

    def submit(self, fn: Callable[..., T], /, *args: Any,
               **kwargs: Any) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new work after shutdown")
            future = self._pool.submit(fn, *args, **kwargs)
            self._futures.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._futures.discard(future)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            mine = list(self._futures)
        if cancel_futures:
            for future in mine:
                future.cancel()
        if wait:
            concurrent.futures.wait(mine)
