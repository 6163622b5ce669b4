"""An in-memory ``Transport`` for unit tests: a disk image held in a ``bytes``.

It keeps the contract of ``mover.pipeline.transport`` exactly as the real transports do (the
contract suite in tests/unit/test_transport_contract.py runs over all of them), and can be
told to fail (``fail_next``) or to take its time (``delay``) so retry, cancellation and
buffer reuse are testable without a server.
"""

from __future__ import annotations

import asyncio

from mover.errors import TransportError


class MemoryTransport:
    """Reads ``data`` as the disk. ``fail_next(n, transient)`` makes the next ``n`` reads
    raise (``heal`` forgets them); each read takes ``delay`` seconds, writing its bytes in
    two halves with a pause between them (so a cancelled read is cancelled half-way)."""

    def __init__(self, data: bytes, name: str = "memory", max_readers: int = 8,
                 delay: float = 0.0) -> None:
        self.name = name
        self.size = len(data)
        self.max_readers = max_readers
        self.delay = delay
        self.reads = 0
        self.bytes_read = 0
        self._data = memoryview(data)
        self._failures: list[bool] = []

    def fail_next(self, count: int = 1, transient: bool = True) -> None:
        self._failures.extend([transient] * count)

    def heal(self) -> None:
        """Forget the failures still to come."""
        self._failures.clear()

    async def read_into(self, offset: int, buf: memoryview) -> None:
        where = f"{self.name} bytes {offset}-{offset + len(buf) - 1}"
        self.reads += 1
        if self._failures:
            transient = self._failures.pop(0)
            raise TransportError(f"reading {where}: injected failure", transient=transient,
                                 cause="injected failure")
        if offset < 0 or offset + len(buf) > self.size:
            raise TransportError(f"reading {where}: beyond the end of the {self.size}-byte "
                                 "disk", transient=False, cause="beyond the end")
        half = len(buf) // 2
        if self.delay:
            await asyncio.sleep(self.delay / 2)
        buf[:half] = self._data[offset:offset + half]
        if self.delay:
            await asyncio.sleep(self.delay / 2)
        buf[half:] = self._data[offset + half:offset + len(buf)]
        self.bytes_read += len(buf)

    async def close(self) -> None:
        """Nothing to release."""
