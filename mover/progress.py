"""Reporters for the CLI: progress bars for people, JSON lines for schedulers.

``BarReporter``/``JsonReporter`` serve ``mover backup``; the sinks (``NdjsonSink``,
``LogSink``, ``RichSink``) take the typed events of ``mover run`` (``mover.jobs.events``)."""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import asdict
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
)
from rich.progress import Progress as RichProgress
from rich.table import Table

from mover import clock
from mover.jobs import events
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


class NdjsonSink:
    """Events as JSON lines (``--json``), flushed one by one; a closed pipe drops them."""

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self._out = stream

    def write(self, event: events.Event) -> None:
        try:
            self._out.write(event.model_dump_json() + "\n")
            self._out.flush()
        except (BrokenPipeError, ValueError):
            pass


class LogSink:
    """Plain lines for people on ``stream`` (no control characters): notes, each disk and
    each VM as it ends. ``quiet``: only failures."""

    def __init__(self, stream: TextIO = sys.stderr, quiet: bool = False) -> None:
        self._out = stream
        self._quiet = quiet

    def write(self, event: events.Event) -> None:
        line = None
        if isinstance(event, events.VmFinished) and event.status != "committed":
            error = event.result.get("error") or {}
            line = f"VM {event.vm}: {event.status}: {error.get('message', '')}"
        elif self._quiet:
            return
        elif isinstance(event, events.Note):
            line = event.message
        elif isinstance(event, events.DiskFinished):
            r = event.result
            rate = human_bytes(r["bytes_read"] / max(r["seconds"], 1e-6))
            line = (f"VM {event.vm}: disk {event.disk} {r['label']} {r['mode']} done in "
                    f"{r['seconds']:.1f} s ({rate}/s)")
        elif isinstance(event, events.VmFinished):
            line = f"VM {event.vm}: committed backup {event.result.get('backup_id')}"
        if line is not None:
            with contextlib.suppress(BrokenPipeError, ValueError):
                print(f"mover: {line}", file=self._out, flush=True)


class RichSink:
    """Progress bars per disk with rate and ETA (``rich``) on a terminal; notes above them.
    Use only when ``console`` is a terminal; call ``close`` at the end."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._bars = RichProgress(
            TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
            DownloadColumn(binary_units=True), TextColumn("{task.fields[rate]}/s"),
            TextColumn("ETA {task.fields[eta]}"), console=console, transient=True)
        self._tasks: dict[tuple[str, int], TaskID] = {}
        self._bars.start()

    def write(self, event: events.Event) -> None:
        if isinstance(event, events.DiskStarted):
            self._tasks[event.vm, event.disk] = self._bars.add_task(
                f"{event.vm} {event.label} {event.mode}", total=event.planned_bytes or 1,
                rate="-", eta="-")
        elif isinstance(event, events.Progress):
            task = self._tasks.get((event.vm, event.disk))
            if task is not None:
                eta = event.eta_seconds
                self._bars.update(task, completed=event.bytes, rate=human_bytes(event.rate),
                                  eta="-" if eta is None else f"{eta:.0f} s")
        elif isinstance(event, events.DiskFinished):
            task = self._tasks.pop((event.vm, event.disk), None)
            if task is not None:
                self._bars.remove_task(task)
            r = event.result
            self._console.print(f"{event.vm}: disk {event.disk} {r['label']} {r['mode']}, "
                                f"read {human_bytes(r['bytes_read'])} in {r['seconds']:.1f} s")
        elif isinstance(event, events.Note):
            self._console.print(f"mover: {event.message}", markup=False, highlight=False)
        elif isinstance(event, events.JobFinished):
            self.close()

    def close(self) -> None:
        self._bars.stop()


def summary(results: list[dict[str, Any]], console: Console) -> None:
    """The table of a job's VMs (status, backup, disks, bytes, time), one row per VM."""
    table = Table(title="mover run", box=box.SIMPLE if console.is_terminal else box.ASCII)
    for column, justify in (("VM", "left"), ("status", "left"), ("backup", "left"),
                            ("disks", "right"), ("read", "right"), ("stored", "right"),
                            ("seconds", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for r in results:
        disks = r.get("disks") or []
        status = r["status"] if not r.get("error") else f"{r['status']}: {r['error']['kind']}"
        table.add_row(r["vm"], status, r.get("backup_id") or "-", str(len(disks)),
                      human_bytes(sum(d["bytes_read"] for d in disks)),
                      human_bytes(sum(d["bytes_stored"] for d in disks)),
                      f"{r.get('seconds', 0.0):.1f}")
    console.print(table)
