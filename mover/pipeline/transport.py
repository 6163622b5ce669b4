"""The boundary between the pipeline and wherever disk bytes come from."""

from __future__ import annotations

from typing import Protocol


class Transport(Protocol):
    """Reads bytes of one disk image.

    Contract: ``read_into`` fills ``buf`` completely with the bytes at ``offset`` or raises
    ``mover.errors.TransportError`` naming the range; it never returns a partial fill. It may
    be called concurrently up to ``max_readers`` times. ``close`` is idempotent."""

    name: str
    size: int
    max_readers: int

    async def read_into(self, offset: int, buf: memoryview) -> None: ...

    async def close(self) -> None: ...
