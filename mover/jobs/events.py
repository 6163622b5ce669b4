"""The event stream of a job: what ``mover run --json`` prints, one JSON object a line.

Every event has ``event`` (its type), ``time`` (ISO 8601 UTC), ``seq`` (1, 2, ... in the
order written), ``job_id``, and ``vm``/``disk`` where they apply. The order for one VM is
``vm_started``, ``snapshot_created``, per disk ``disk_started``, ``progress``... (at most one
a second per disk), ``disk_finished``, then ``snapshot_removed`` and ``vm_finished``; the
VMs of a job interleave. ``job_started`` is first and ``job_finished`` (every VM's result)
is last. ``note`` events carry what a person would read in the log.

These models are the contract: ``schema()`` is published in docs/events.md (a test checks it
is current). Add fields, never rename or remove them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    time: str = Field(description="when it happened, ISO 8601 UTC with milliseconds")
    seq: int = Field(description="1 for the first event of the job, one more for each next")
    job_id: str = Field(description="the job's ID, the same in every event of one run")


class JobStarted(_Event):
    event: Literal["job_started"] = "job_started"
    vms: list[str] = Field(description="the VMs of the job, as the job names them")


class VmStarted(_Event):
    event: Literal["vm_started"] = "vm_started"
    vm: str


class SnapshotCreated(_Event):
    event: Literal["snapshot_created"] = "snapshot_created"
    vm: str
    snapshot: str = Field(description="the snapshot's name")
    stun_seconds: float = Field(description="how long creating the snapshot took (the stun)")


class DiskStarted(_Event):
    event: Literal["disk_started"] = "disk_started"
    vm: str
    disk: int = Field(description="the disk's device key, e.g. 2000")
    label: str
    mode: str = Field(description="full or incremental")
    reason: str = Field(description="why this mode")
    planned_bytes: int = Field(description="bytes this disk's copy will read")


class Progress(_Event):
    event: Literal["progress"] = "progress"
    vm: str
    disk: int
    bytes: int = Field(description="bytes read so far of planned_bytes")
    planned_bytes: int
    rate: float = Field(description="bytes a second since the disk started")
    eta_seconds: float | None = Field(description="seconds left at this rate (null: unknown)")


class DiskFinished(_Event):
    event: Literal["disk_finished"] = "disk_finished"
    vm: str
    disk: int
    result: dict[str, Any] = Field(description="the disk's result, as in vm_finished's disks")


class SnapshotRemoved(_Event):
    event: Literal["snapshot_removed"] = "snapshot_removed"
    vm: str
    snapshot: str
    removed: bool = Field(description="false: it was left behind (the next run removes it)")
    seconds: float | None = Field(description="how long the removal took (the unstun)")


class VmFinished(_Event):
    event: Literal["vm_finished"] = "vm_finished"
    vm: str
    status: str = Field(description="committed, failed or skipped")
    exit_code: int = Field(description="what `mover backup` would have exited with")
    result: dict[str, Any] = Field(description="the VM's result, as `mover backup --json` "
                                   "gives it (with \"error\" when it failed)")


class JobFinished(_Event):
    event: Literal["job_finished"] = "job_finished"
    status: str = Field(description="committed (every VM), partial or failed")
    exit_code: int = Field(description="the process's exit status")
    results: list[dict[str, Any]] = Field(description="every VM's result, in job order")
    seconds: float


class Note(_Event):
    event: Literal["note"] = "note"
    vm: str | None = None
    message: str


Event = Annotated[JobStarted | VmStarted | SnapshotCreated | DiskStarted | Progress
                  | DiskFinished | SnapshotRemoved | VmFinished | JobFinished | Note,
                  Field(discriminator="event")]
EVENT: TypeAdapter[Event] = TypeAdapter(Event)

ORDER = ("job_started", "vm_started", "snapshot_created", "disk_started", "progress",
         "disk_finished", "snapshot_removed", "vm_finished", "job_finished")
"""The event types in the order one VM's backup emits them (``note`` may come anywhere)."""


def schema() -> dict[str, Any]:
    """The JSON Schema of one line of the stream."""
    return EVENT.json_schema()


def parse(line: str) -> Event:
    """One line of the stream as its model (pydantic.ValidationError if it is not one)."""
    return EVENT.validate_json(line)


def document() -> str:
    """docs/events.md: the stream's contract with its JSON Schema (``python -m
    mover.jobs.events > docs/events.md`` writes it; a unit test checks it is current)."""
    import json

    rows = "\n".join(f"| `{name}` | {_WHAT[name]} |" for name in (*ORDER, "note"))
    return f"""# Events of `mover run --json`

<!-- Generated by `python -m mover.jobs.events > docs/events.md` from mover/jobs/events.py;
     tests/unit/test_events.py fails when this file is not current. -->

`mover run JOB --json` writes one JSON object a line on stdout (NDJSON); human logs go to
stderr. Every object has `event` (its type), `time` (ISO 8601 UTC, milliseconds), `seq` (1 for
the first event of the run, one more for each next) and `job_id` (the same in every line of a
run), and `vm` and `disk` where they apply. `job_started` is the first line and
`job_finished` the last; the events of the VMs of a job interleave, the events of one VM come
in the order below. `progress` comes at most once a second per disk. Consumers must ignore
fields they do not know: fields are added, never renamed or removed.

| event | when |
| --- | --- |
{rows}

`vm_finished.result` and each item of `job_finished.results` are the VM's result exactly as
`mover backup --json` prints it (with `status` "committed", "failed" or "skipped" and an
`error` object `{{kind, message, exit_code}}` when not committed). `job_finished.exit_code`
is the process's exit status: 0 every VM committed (11 or 6 when one of them says so), 12 some
committed and some not, otherwise the first failure's.

## JSON Schema of one line

```json
{json.dumps(schema(), indent=2, sort_keys=True)}
```
"""


_WHAT = {
    "job_started": "first: the job's VMs",
    "vm_started": "a VM's backup begins (its pre-hook runs now)",
    "snapshot_created": "the backup snapshot exists; `stun_seconds` is how long creating it "
                        "took",
    "disk_started": "a disk's copy begins: `mode` (full, incremental) and `reason`",
    "progress": "bytes read of the disk so far, `rate` (bytes/s) and `eta_seconds`",
    "disk_finished": "a disk is copied: its result",
    "snapshot_removed": "the snapshot is gone (`removed` false: it was left behind)",
    "vm_finished": "a VM is done: its result, committed or not",
    "job_finished": "last: every VM's result and the exit status",
    "note": "something a person would want to read (removed orphans, retries, warnings)",
}


if __name__ == "__main__":
    print(document(), end="")
