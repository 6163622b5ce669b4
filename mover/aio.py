"""Small asyncio helpers shared by the pipeline and the jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

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
