"""Waiting for vSphere tasks and retrying operations the server says are busy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from mover import clock
from mover.errors import VSphereError
from mover.vsphere.session import Session
from mover.vsphere.vmomi import vim

T = TypeVar("T")


def run_task(session: Session, invoke: Callable[[], Any], what: str,
             attempts: int = 6) -> Any:
    """Start a task with ``invoke`` and return its result. Only a refused call is issued
    again (after a re-login, or while the object is busy with another task); a task that
    started is never started twice: a session that expires while we poll it is renewed
    and the same task polled on."""

    def start_and_wait() -> Any:
        task = session.call(invoke)
        return wait(task, what, read=lambda: session.call(lambda: task.info))

    return retry_busy(start_and_wait, what, attempts=attempts)


def wait(task: Any, what: str, timeout: float = 3600.0, poll: float = 0.1,
         read: Callable[[], Any] | None = None) -> Any:
    """Wait for ``task`` and return its result; raise VSphereError naming ``what`` and the
    server's message if it fails. Polling backs off to one second for long tasks; ``read``
    fetches ``task.info`` (through a session that survives expiry)."""
    deadline = clock.monotonic() + timeout
    while True:
        info = read() if read is not None else task.info
        if info.state == vim.TaskInfo.State.success:
            return info.result
        if info.state == vim.TaskInfo.State.error:
            raise VSphereError(f"{what} failed: {fault_message(info.error)}") from _as_exc(
                info.error)
        if clock.monotonic() > deadline:
            raise VSphereError(f"{what} did not finish within {timeout:.0f} s")
        clock.sleep(poll)
        poll = min(poll * 1.5, 1.0)


def fault_message(fault: Any) -> str:
    msg = getattr(fault, "msg", None) or ""
    if not msg and getattr(fault, "faultMessage", None):
        msg = "; ".join(m.message for m in fault.faultMessage if getattr(m, "message", None))
    return f"{type(fault).__name__.split('.')[-1]}: {msg}" if msg else type(fault).__name__


def _as_exc(fault: Any) -> BaseException | None:
    return fault if isinstance(fault, BaseException) else None


def is_busy(exc: BaseException) -> bool:
    """The server refused because another operation runs on the object: try again later."""
    cause = exc.__cause__ if isinstance(exc, VSphereError) else exc
    return isinstance(cause, vim.fault.TaskInProgress)


def retry_busy(operation: Callable[[], T], what: str, attempts: int = 6, delay: float = 0.5) -> T:
    """Run ``operation``; while vSphere answers TaskInProgress, wait (doubling) and retry."""
    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except (vim.fault.TaskInProgress, VSphereError) as exc:
            if attempt == attempts or not is_busy(exc):
                if isinstance(exc, VSphereError):
                    raise
                raise VSphereError(f"{what} failed: the object stayed busy "
                                   f"({fault_message(exc)}) after {attempts} attempts") from exc
            clock.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")
