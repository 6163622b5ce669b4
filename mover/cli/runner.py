"""What every command shares: logging, the event loop, signals and the error line.

One signal style for every command: SIGTERM and SIGINT stop the work, which cleans up after
itself (a backup removes its snapshot and commits nothing, a restore removes its partial
image), and the process exits with ``Interrupted``'s status and a message saying what was
cleaned up and what to do next.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from mover.errors import Interrupted, MoverError

T = TypeVar("T")


class Commands(Protocol):
    """Where a command module declares its parser (``ArgumentParser.add_subparsers()``)."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


SIGNALS = (signal.SIGTERM, signal.SIGINT)


def setup_logging(verbose: int, quiet: bool = False) -> None:
    """Human logs on stderr: warnings (errors only with ``quiet``), -v info, -vv debug."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO,
                                         logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_async(coro: Coroutine[Any, Any, T], stopped: str) -> T:
    """Run ``coro`` on uvloop when available. A signal cancels it; once it has cleaned up,
    ``Interrupted`` is raised with ``stopped`` (what was left and what to do) in its message."""
    try:
        import uvloop
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    caught: list[str] = []

    async def guarded() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def stop(sig: signal.Signals) -> None:
            caught.append(sig.name)
            task.cancel()

        for sig in SIGNALS:
            loop.add_signal_handler(sig, stop, sig)
        return await coro

    with runner:
        try:
            return runner.run(guarded())
        except asyncio.CancelledError as exc:
            if caught:
                raise Interrupted(f"stopped by {caught[0]}: {stopped}") from exc
            raise


def run_sync(work: Callable[[], T], stopped: str) -> T:
    """Run synchronous ``work`` (which cleans up in its ``finally``/``except`` blocks); a
    signal raises ``Interrupted`` with ``stopped`` in its message inside it."""
    with _raising_on_signals(stopped):
        return work()


@contextmanager
def _raising_on_signals(stopped: str) -> Iterator[None]:
    def stop(signum: int, frame: object) -> None:
        raise Interrupted(f"stopped by {signal.Signals(signum).name}: {stopped}")

    previous = {sig: signal.signal(sig, stop) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def fail(exc: MoverError, as_json: bool) -> int:
    """Report ``exc`` (a JSON line on stdout for schedulers, one line on stderr for people)
    and return its class's exit status."""
    if as_json:
        print(json.dumps({"status": "failed", "error": exc.to_json()}))
    print(f"mover: error: {exc}", file=sys.stderr)
    return exc.exit_code
