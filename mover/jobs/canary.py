"""The CBT canary of an incremental: re-read a sample of the blocks CBT calls unchanged,
compare them with the parent, and on any difference read the disk again as a full.

CBT has lost changes silently (VMware KB 2090639, KB 2136854; since ESXi 6.5 a corrupt CBT
no longer faults). The sample (``mover.canary``) is read through the disk's own transport,
so the retry wrapper and every other wrapper apply, and through the same pipeline
(``copy_disk``), but into a scratch index and without the journal: canary blocks are never
recorded as stored blocks of the plan. A resume samples the same blocks (the seed is the
backup id), so it checks exactly what the interrupted run checked.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field, replace

from mover import clock
from mover.extents import Extent, plan_reads
from mover.fetchplan import plan_fetches
from mover.index import FixedIndex
from mover.jobs.modes import Decision
from mover.jobs.planning import DiskPlan
from mover.pipeline.copy import PipelineSettings, copy_disk
from mover.pipeline.process import BlockProcessor
from mover.pipeline.transport import Transport

REASON = "CBT canary found blocks CBT called unchanged that changed"
"""How the reason of a disk the canary turned into a full starts (a resume recognises it)."""


def warning(vm: str, key: int, offsets: list[int]) -> str:
    shown = ", ".join(str(o) for o in offsets[:8]) + (" ..." if len(offsets) > 8 else "")
    return (f"CBT of VM {vm!r} disk {key} is unreliable: {len(offsets)} sampled blocks that "
            f"CBT reported unchanged differ from the previous backup (offsets {shown}). "
            "This backup read the whole disk again and is correct, but later incrementals "
            "cannot be trusted until CBT is reset (VMware KB 2090639, KB 2136854): with no "
            "snapshots on the VM, disable CBT (ctkEnabled=false), run a stun/unstun cycle "
            "(create and remove a snapshot, or power-cycle), enable it again and take one "
            "more stun/unstun cycle; then run `mover backup --full`.")


@dataclass(slots=True)
class CanaryReport:
    blocks: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    mismatches: list[int] = field(default_factory=list)     # byte offsets of the blocks


class _Seen:
    """A scratch index: the digests the canary read (no bases: canary reads are whole)."""

    def __init__(self) -> None:
        self.digests: dict[int, bytes | None] = {}

    def get(self, block: int) -> bytes | None:
        return None

    def set(self, block: int, digest: bytes | None) -> None:
        self.digests[block] = digest


async def check(transport: Transport, plan: DiskPlan, processor: BlockProcessor,
                executor: Executor, settings: PipelineSettings) -> CanaryReport:
    """Read ``plan.canary``'s blocks and compare them with the parent's digests."""
    bs, capacity = plan.index.block_size, plan.disk.capacity
    if not plan.canary:
        return CanaryReport()
    started = clock.monotonic()
    extents = [Extent(b * bs, min(bs, capacity - b * bs)) for b in sorted(plan.canary)]
    seen = _Seen()
    max_read = max(bs, settings.max_read // bs * bs)
    # Not durable: nothing will name what the canary read (a mismatching block is read
    # again by the full, which syncs), so it pays for no syncfs.
    stats = await copy_disk(transport, plan_reads(extents, bs, max_read), seen, processor,
                            executor, settings, durable=False)
    mismatches = [b * bs for b, parent in sorted(plan.canary.items())
                  if seen.digests.get(b, parent) != parent]
    return CanaryReport(len(plan.canary), stats.bytes_read, clock.monotonic() - started,
                        mismatches)


def as_full(plan: DiskPlan, offsets: list[int], max_read: int) -> DiskPlan:
    """The plan that reads the disk of ``plan`` whole, without CBT, into a fresh index."""
    disk, bs = plan.disk, plan.index.block_size
    shown = ", ".join(str(o) for o in offsets[:8]) + (" ..." if len(offsets) > 8 else "")
    reason = (f"{REASON} (offsets {shown}): read whole as a full; reset CBT "
              "(VMware KB 2090639, KB 2136854)")
    whole = [Extent(0, disk.capacity)] if disk.capacity else []
    return replace(plan, decision=Decision("full", reason, None, None), areas=whole,
                   reads=plan_fetches(whole, bs, disk.capacity, max_read),
                   index=FixedIndex(disk.capacity, bs), resumed_blocks=0, note="", canary={})


def suspect(plan: DiskPlan) -> bool:
    """Whether the plan is a full the canary asked for (also when resumed)."""
    return plan.decision.reason.startswith(REASON)
