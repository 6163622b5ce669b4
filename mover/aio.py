"""Small asyncio helpers shared by the pipeline and the jobs."""

from __future__ import annotations

import asyncio


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real error of a task group, so a user sees one cause, not a tree of
    cancellations."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = next((e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)),
                   exc.exceptions[0])
    return exc
