"""The sinks of ``mover run``: the typed events of ``mover.jobs.events`` as JSON lines
(``--json``), plain log lines, or rich progress bars on a terminal; and the summary table."""

from __future__ import annotations

import contextlib
import sys
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

from mover.jobs import events
from mover.progress import human_bytes


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
