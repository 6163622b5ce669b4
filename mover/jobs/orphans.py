"""mover's snapshots found on a VM before a backup: orphans are removed, a live one makes
the run refuse. The rule is ``mover.ownership``'s; this module gathers what it needs (this
host, its boot, which processes live, which backups this repository runs or knows)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mover import clock
from mover.errors import UnsupportedVMError
from mover.jobs.control import ControlPlane
from mover.ownership import Here, Owner, Verdict, judge
from mover.repo import Repository
from mover.vsphere import snapshots
from mover.vsphere.faults import ObjectGone
from mover.vsphere.inventory import VMFacts
from mover.vsphere.session import Session
from mover.vsphere.snapshots import SnapshotRef

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def here(repo: Repository) -> Here:
    return Here(repo.config.id, socket.gethostname(), boot_id())


def owner(repo: Repository, backup_id: str, started: str) -> Owner:
    """The ownership tag of this process's backup ``backup_id``."""
    mark = here(repo)
    return Owner(mark.repo, backup_id, mark.host, mark.boot, os.getpid(), started)


def boot_id() -> str:
    """This boot of this host (Linux); "" where the system does not say."""
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return ""


def mover_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host and is a mover (a recycled pid of another
    program does not keep a snapshot alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    try:
        return b"mover" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # cannot tell: keep it alive


@dataclass(frozen=True, slots=True)
class Found:
    snapshot: SnapshotRef
    owner: Owner | None
    age: float
    verdict: Verdict


async def clear(control: ControlPlane, session: Session, vm: VMFacts, repo: Repository,
                spare_moref: str | None, max_age: float) -> list[str]:
    """Remove the orphans among mover's snapshots of ``vm`` (except ``spare_moref``, the
    snapshot of the backup this run resumes) and return their names; raise
    UnsupportedVMError naming a live one, before removing anything."""
    listed, now = await control.run(snapshots.movers, session, vm.ref)
    listed = [s for s in listed if s.moref != spare_moref]
    if not listed:
        return []
    found = await asyncio.to_thread(_judge_all, listed, now, vm, repo, max_age)
    live = [f for f in found if not f.verdict.orphan]
    if live:
        raise UnsupportedVMError(_refusal(vm, live[0], max_age))
    removed = []
    for f in found:
        with contextlib.suppress(ObjectGone):  # another run removed it first: just as well
            await control.run(snapshots.remove, session, f.snapshot.ref, f.snapshot.name)
        removed.append(f.snapshot.name)
    return removed


def _judge_all(listed: list[SnapshotRef], now: datetime, vm: VMFacts, repo: Repository,
               max_age: float) -> list[Found]:
    mark = here(repo)
    known = {b for b, _ in repo.resumable(vm.instance_uuid)}
    known |= {r.id for r in repo.list_backups(vm.instance_uuid)}

    def running(backup: str) -> bool:
        return repo.is_backup_id(backup) and repo.is_running(backup)

    out = []
    for snap in listed:
        tag = Owner.parse(snap.description)
        created = snap.created or _parse_time(tag.started if tag else "")
        age = (now - created).total_seconds() if created is not None else float("inf")
        legacy = snap.name[len(snapshots.PREFIX):]
        verdict = judge(tag, legacy, age, max_age, mark, running, known.__contains__,
                        mover_alive)
        out.append(Found(snap, tag, age, verdict))
    return out


def _parse_time(text: str) -> datetime | None:
    try:
        return clock.parse(text)
    except ValueError:
        return None


def _refusal(vm: VMFacts, live: Found, max_age: float) -> str:
    snap, tag = live.snapshot, live.owner
    age = _duration(live.age)
    if tag is None:
        whose = "left by a mover without owner tags"
    else:
        whose = (f"of mover backup {tag.backup} into repository {tag.repo}, process "
                 f"{tag.pid} on host {tag.host}")
    return (f"VM {vm.name!r} has snapshot {snap.name!r} ({snap.moref}) {whose}, taken {age} "
            f"ago, and {live.verdict.why}: another mover backup of this VM may be running "
            "and reading it (a second snapshot would stack on it, and removing it would "
            "rewrite the disk under that reader). Wait for that backup to end and retry; if "
            "that run is dead, remove the snapshot in vSphere, or let a run remove it once it "
            f"is older than --orphan-age ({max_age / 3600:g} h)")


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "an unknown time"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
