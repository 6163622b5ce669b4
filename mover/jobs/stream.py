"""The event stream of a job: stamps each event (time, seq, job_id), rate-limits progress
and hands the typed events (``mover.jobs.events``) to the sinks (NDJSON, progress bars,
metrics), in order, on the event loop.

``VmEvents`` is the ``Reporter`` a backup of one VM is given: it turns the backup's calls into
events of that VM."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Protocol

from mover import clock
from mover.jobs import events
from mover.jobs.reporting import DiskResult


class EventSink(Protocol):
    """Gets every event of a job in order, on the event loop: must not block for long and
    must not raise (a sink that cannot write, e.g. a closed pipe, drops the event)."""

    def write(self, event: events.Event) -> None: ...


class EventStream:
    def __init__(self, job_id: str, sinks: Sequence[EventSink], interval: float = 1.0) -> None:
        self.job_id = job_id
        self.interval = interval        # progress events at most this often per disk
        self._sinks = tuple(sinks)
        self._seq = 0

    def emit(self, kind: type[events._Event], **fields: Any) -> None:
        self._seq += 1
        stamp = clock.now().isoformat(timespec="milliseconds").replace("+00:00", "Z")
        event = kind(time=stamp, seq=self._seq, job_id=self.job_id, **fields)
        for sink in self._sinks:
            sink.write(event)  # type: ignore[arg-type]

    def for_vm(self, vm: str) -> VmEvents:
        return VmEvents(self, vm)


class VmEvents:
    """The Reporter of one VM's backup (``mover.jobs.reporting.Reporter``)."""

    def __init__(self, stream: EventStream, vm: str) -> None:
        self._stream = stream
        self.vm = vm
        self._disks: dict[int, list[float]] = {}  # key -> [planned, done, start, last sent]

    def note(self, message: str) -> None:
        self._stream.emit(events.Note, vm=self.vm, message=message)

    def snapshot_created(self, name: str, stun_seconds: float) -> None:
        self._stream.emit(events.SnapshotCreated, vm=self.vm, snapshot=name,
                          stun_seconds=stun_seconds)

    def disk_started(self, key: int, label: str, mode: str, planned_bytes: int,
                     reason: str = "") -> None:
        now = clock.monotonic()
        self._disks[key] = [float(planned_bytes), 0.0, now, now]
        self._stream.emit(events.DiskStarted, vm=self.vm, disk=key, label=label, mode=mode,
                          reason=reason, planned_bytes=planned_bytes)

    def disk_progress(self, key: int, done_bytes: int) -> None:
        state = self._disks[key]
        state[1] += done_bytes
        now = clock.monotonic()
        if now - state[3] < self._stream.interval:
            return
        state[3] = now
        planned, done, start = state[0], state[1], state[2]
        rate = done / max(now - start, 1e-6)
        eta = (planned - done) / rate if rate > 0 else None
        self._stream.emit(events.Progress, vm=self.vm, disk=key, bytes=int(done),
                          planned_bytes=int(planned), rate=rate,
                          eta_seconds=max(0.0, eta) if eta is not None else None)

    def disk_done(self, key: int, result: DiskResult) -> None:
        self._disks.pop(key, None)
        self._stream.emit(events.DiskFinished, vm=self.vm, disk=key, result=asdict(result))

    def snapshot_removed(self, name: str, removed: bool, seconds: float | None) -> None:
        self._stream.emit(events.SnapshotRemoved, vm=self.vm, snapshot=name, removed=removed,
                          seconds=seconds)
