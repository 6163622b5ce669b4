"""The reporters of ``mover backup``: a line per disk for people, JSON lines for scripts.

The sinks of ``mover run``'s typed events are ``mover.sinks``: kept apart so that a backup
does not import rich and pydantic at start-up (an incremental is about a second in all)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any, TextIO

from mover import clock
from mover.jobs.reporting import DiskResult


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class BarReporter:
    """One line per disk, redrawn in place on a terminal (plain lines otherwise)."""

    WIDTH = 30

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self._out = stream
        self._tty = stream.isatty()
        self._disks: dict[int, list[Any]] = {}  # key -> [label, mode, planned, done, start]
        self._drawn = 0.0

    def note(self, message: str) -> None:
        self._clear()
        print(f"mover: {message}", file=self._out, flush=True)

    def snapshot_created(self, name: str, stun_seconds: float) -> None:
        pass  # noted by the snapshot itself

    def snapshot_removed(self, name: str, removed: bool, seconds: float | None) -> None:
        pass

    def disk_started(self, key: int, label: str, mode: str, planned_bytes: int,
                     reason: str = "") -> None:
        self._disks[key] = [label, mode, planned_bytes, 0, clock.monotonic()]
        self._draw(force=True)

    def disk_progress(self, key: int, done_bytes: int) -> None:
        self._disks[key][3] += done_bytes
        self._draw()

    def disk_done(self, key: int, result: DiskResult) -> None:
        self._clear()
        rate = human_bytes(result.bytes_read / max(result.seconds, 1e-6))
        print(f"  {result.label} done in {result.seconds:.1f} s ({rate}/s)", file=self._out,
              flush=True)
        del self._disks[key]
        self._draw(force=True)

    def _line(self, label: str, mode: str, planned: int, done: int, start: float) -> str:
        frac = done / planned if planned else 1.0
        filled = int(frac * self.WIDTH)
        rate = done / max(clock.monotonic() - start, 1e-6)
        return (f"  {label:<12} {mode:<11} [{'#' * filled}{'.' * (self.WIDTH - filled)}] "
                f"{frac:6.1%} {human_bytes(done):>10} / {human_bytes(planned):<10} "
                f"{human_bytes(rate)}/s")

    def _draw(self, force: bool = False) -> None:
        now = clock.monotonic()
        if not self._tty or (not force and now - self._drawn < 0.2):
            return
        self._drawn = now
        self._clear()
        lines = [self._line(*d) for d in self._disks.values()]
        self._out.write("\n".join(lines) + ("\n" if lines else ""))
        self._out.write(f"\x1b[{len(lines)}A" if lines else "")
        self._out.flush()

    def _clear(self) -> None:
        if self._tty:
            self._out.write("\x1b[J")


class JsonReporter:
    """JSON lines on ``stream`` (``{"event": ...}``), progress at most once a second per disk."""

    def __init__(self, stream: TextIO = sys.stdout, interval: float = 1.0) -> None:
        self._out = stream
        self._interval = interval
        self._done: dict[int, int] = {}
        self._planned: dict[int, int] = {}
        self._last: dict[int, float] = {}

    def emit(self, event: str, **fields: Any) -> None:
        print(json.dumps({"event": event, **fields}, sort_keys=True), file=self._out, flush=True)

    def note(self, message: str) -> None:
        self.emit("note", message=message)

    def snapshot_created(self, name: str, stun_seconds: float) -> None:
        pass  # noted by the snapshot itself

    def snapshot_removed(self, name: str, removed: bool, seconds: float | None) -> None:
        pass

    def disk_started(self, key: int, label: str, mode: str, planned_bytes: int,
                     reason: str = "") -> None:
        self._done[key], self._planned[key], self._last[key] = 0, planned_bytes, 0.0
        self.emit("disk_started", key=key, label=label, mode=mode, planned_bytes=planned_bytes)

    def disk_progress(self, key: int, done_bytes: int) -> None:
        self._done[key] += done_bytes
        now = clock.monotonic()
        if now - self._last[key] >= self._interval:
            self._last[key] = now
            self.emit("progress", key=key, done_bytes=self._done[key],
                      planned_bytes=self._planned[key])

    def disk_done(self, key: int, result: DiskResult) -> None:
        self.emit("disk_done", **asdict(result))
