"""Waiting for vSphere tasks and retrying operations the server says are busy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from mover import clock
from mover.errors import VSphereError
from mover.vsphere.privileges import permission_denied
from mover.vsphere.session import Session
from mover.vsphere.vmomi import vim

T = TypeVar("T")


#: how long an operation waits by default for an object busy with another task (seconds)
BUSY_WAIT = 15.0


def run_task(session: Session, invoke: Callable[[], Any], what: str,
             busy_wait: float = BUSY_WAIT) -> Any:
    """Start a task with ``invoke`` and return its result. Only a refused call is issued
    again (after a re-login, or while the object is busy with another task, for up to
    ``busy_wait`` seconds); a task that started is never started twice: a session that
    expires while we poll it is renewed and the same task polled on."""

    def start_and_wait() -> Any:
        try:
            task = session.call(invoke)
        except vim.fault.NoPermission as exc:
            denied = permission_denied(exc, what)
            if denied is None:
                raise
            raise denied from exc
        return wait(task, what, read=lambda: session.call(lambda: task.info))

    return retry_busy(start_and_wait, what, busy_wait)


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
            denied = permission_denied(info.error, what)
            if denied is not None:
                raise denied from _as_exc(info.error)
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


def retry_busy(operation: Callable[[], T], what: str, busy_wait: float = BUSY_WAIT,
               delay: float = 0.5, max_delay: float = 10.0) -> T:
    """Run ``operation``; while vSphere answers TaskInProgress (another tool's snapshot,
    backup or consolidation holds the VM), wait (doubling up to ``max_delay``) and retry,
    for at most ``busy_wait`` seconds in all. A time, not a count: another tool's
    consolidation can hold a VM for minutes."""
    deadline = clock.monotonic() + busy_wait
    attempts = 0
    while True:
        attempts += 1
        try:
            return operation()
        except (vim.fault.TaskInProgress, VSphereError) as exc:
            left = deadline - clock.monotonic()
            if not is_busy(exc) or left <= 0:
                if not is_busy(exc) and isinstance(exc, VSphereError):
                    raise
                raise VSphereError(
                    f"{what} failed: the VM stayed busy with another task "
                    f"({fault_message(exc.__cause__ if isinstance(exc, VSphereError) else exc)}) "
                    f"for {busy_wait:g} s ({attempts} attempts): wait for the other tool's "
                    "snapshot or consolidation to end, or give a longer --busy-wait",
                    busy_wait=busy_wait, attempts=attempts) from exc
            clock.sleep(min(delay, left))
            delay = min(delay * 2, max_delay)
