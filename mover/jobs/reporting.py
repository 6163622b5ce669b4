"""How a job tells the outside what it is doing: a Reporter, and the result it returns.

The CLI supplies progress bars for people or JSON lines for schedulers; tests supply a
recorder. A reporter's methods are called on the event loop and must not block."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from mover.errors import CbtSuspect, VSphereError


class Reporter(Protocol):
    """What one VM's backup tells as it runs, in this order: ``snapshot_created``, per disk
    ``disk_started``, ``disk_progress`` (bytes read since the last call; as often as the
    pipeline likes: rate limiting is the reporter's), ``disk_done``, then
    ``snapshot_removed`` (also when the backup failed, once the snapshot existed); ``note``
    anywhere. ``mover.progress`` turns these into the typed events of ``mover.jobs.events``."""

    def note(self, message: str) -> None: ...

    def snapshot_created(self, name: str, stun_seconds: float) -> None: ...

    def disk_started(self, key: int, label: str, mode: str, planned_bytes: int,
                     reason: str = "") -> None: ...

    def disk_progress(self, key: int, done_bytes: int) -> None: ...

    def disk_done(self, key: int, result: DiskResult) -> None: ...

    def snapshot_removed(self, name: str, removed: bool, seconds: float | None) -> None: ...


@dataclass(slots=True)
class DiskResult:
    key: int
    label: str
    mode: str
    reason: str
    capacity: int
    changed_bytes: int      # bytes CBT reported (changed or allocated areas)
    bytes_read: int         # bytes fetched from the host
    bytes_stored: int       # compressed bytes newly written to the repository
    zero_blocks: int
    new_chunks: int
    dedup_chunks: int
    seconds: float
    resumed_blocks: int = 0     # blocks an interrupted run had already stored
    retries: int = 0            # reads retried after a transient fault (mover.pipeline.retry)
    # refusals of a busy (503) or locking (500) host waited out, by fault
    host_waits: dict[str, int] = field(default_factory=dict)
    # Sub-block fetch (mover.fetchplan): blocks fetched in part and completed from the
    # parent's chunk, the executor time that took, and blocks read again whole because the
    # parent's chunk was missing or damaged.
    merged_blocks: int = 0
    base_seconds: float = 0.0
    refetched_blocks: int = 0
    # The CBT canary (mover.jobs.canary): sampled blocks CBT called unchanged, the bytes and
    # time that took; cbt_suspect when one differed from the parent (then the disk was read
    # again as a full), with the offsets of the differing blocks.
    canary_blocks: int = 0
    canary_bytes: int = 0
    canary_seconds: float = 0.0
    cbt_suspect: bool = False
    canary_mismatches: list[int] = field(default_factory=list)
    # Which transport read the disk (mover.jobs.routes: "folder" or "nbd") and why.
    transport: str = "folder"
    transport_reason: str = ""
    # A full through NBD: bytes of blocks block status calls zero, stored without reading.
    zero_skipped_bytes: int = 0


@dataclass(slots=True)
class BackupResult:
    status: str                         # "committed" or "failed"
    backup_id: str | None
    vm: str
    parent: str | None = None
    resumed_from: str | None = None     # the interrupted backup this run completed
    disks: list[DiskResult] = field(default_factory=list)
    skipped_disks: list[dict[str, Any]] = field(default_factory=list)
    snapshot: dict[str, Any] = field(default_factory=dict)
    orphans_removed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def exit_status(self) -> int:
        """0; 11 when a disk's CBT proved unreliable (committed, but reset CBT); 6 when the
        snapshot was left behind (committed; the next run removes it)."""
        if any(disk.cbt_suspect for disk in self.disks):
            return CBT_SUSPECT
        return VSphereError.exit_code if self.snapshot.get("removed") is False else 0


CBT_SUSPECT = CbtSuspect.exit_code
"""Exit status of a committed backup whose canary caught CBT losing changes."""
