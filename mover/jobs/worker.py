"""The worker: every VM of one job (``mover run``) in one process.

One repository handle, one control thread and one vSphere session for all VMs
(``mover.jobs.shared``); up to ``parallel_vms`` VMs at once; the job-wide cap of disks copied
at once, the per-ESXi-host cap of reads in flight and the bandwidths are shared by every VM.
Per VM: the pre-hook (a failure skips the VM), the backup (``mover.jobs.backup.backup_vm``),
the post-hook (after the snapshot is removed). After the VMs: retention for each VM that
committed, then the metrics file. One VM's failure never stops another's backup.

Exit status: 0 when every VM committed (11 or 6 when one of them says so, as ``mover backup``
would); 12 (``PartialJob``) when some committed and some did not; otherwise the first
failure's class.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from mover import clock
from mover.errors import MoverError, PartialJob
from mover.jobs import events, maintenance, metrics
from mover.jobs.backup import backup_vm
from mover.jobs.reporting import BackupResult
from mover.jobs.settings import JobSettings
from mover.jobs.shared import Shared, connected
from mover.jobs.stream import EventStream
from mover.pipeline.limits import Bandwidth, HostLimits

log = logging.getLogger(__name__)


class HookFailed(MoverError):
    """A pre- or post-hook exited non-zero, timed out or could not start."""


@dataclass(slots=True)
class JobResult:
    job_id: str
    status: str                 # committed, partial or failed
    exit_code: int
    results: list[dict[str, Any]] = field(default_factory=list)   # per VM, job order
    backups: list[BackupResult] = field(default_factory=list)     # the same, typed
    seconds: float = 0.0


async def run_job(job: JobSettings, stream: EventStream) -> JobResult:
    """Back up every VM of ``job``; never raises for one VM's failure (it is in its result),
    only for what stops the whole job (the repository cannot be opened, login fails, a
    signal)."""
    started = clock.monotonic()
    stream.emit(events.JobStarted, vms=list(job.vms))
    hosts = (HostLimits(job.host_reads, job.host_bandwidth)
             if job.host_reads is not None or job.host_bandwidth is not None else None)
    bandwidth = Bandwidth(job.bandwidth) if job.bandwidth is not None else None
    backups: list[BackupResult | None] = [None] * len(job.vms)
    async with connected(job.backup, hosts=hosts, bandwidth=bandwidth,
                         disks=job.max_disks, pool=True) as shared:
        slots = asyncio.Semaphore(job.parallel_vms)

        async def one(i: int, vm: str) -> None:
            async with slots:
                backups[i] = await _one_vm(job, shared, stream, vm)

        async with asyncio.TaskGroup() as group:
            for i, vm in enumerate(job.vms):
                group.create_task(one(i, vm))
    done = [b for b in backups if b is not None]
    if job.keep is not None:
        await _retention(job, done, stream)
    result = _outcome(stream.job_id, done)
    result.seconds = clock.monotonic() - started
    if job.metrics_file is not None:
        records = await asyncio.to_thread(shared.repo.list_backups)
        try:
            await asyncio.to_thread(metrics.write_job, job.metrics_file, result.results,
                                    result.seconds, result.exit_code, records)
        except MoverError as exc:
            stream.emit(events.Note, message=f"metrics: {exc}")
    stream.emit(events.JobFinished, status=result.status, exit_code=result.exit_code,
                results=result.results, seconds=result.seconds)
    return result


async def _one_vm(job: JobSettings, shared: Shared, stream: EventStream,
                  vm: str) -> BackupResult:
    reporter = stream.for_vm(vm)
    stream.emit(events.VmStarted, vm=vm)
    started = clock.monotonic()
    settings = dataclasses.replace(job.backup, vm=vm)
    result: BackupResult
    try:
        if job.pre_hook:
            await run_hook(job.pre_hook, job.hook_timeout, "pre-hook", vm,
                           {"MOVER_JOB_ID": stream.job_id, "MOVER_VM": vm},
                           job.secret_variables)
        result = await backup_vm(shared, settings, reporter)
    except MoverError as exc:
        skipped = isinstance(exc, HookFailed)
        result = BackupResult(status="skipped" if skipped else "failed", backup_id=None, vm=vm,
                              error={"kind": exc.kind, "message": str(exc),
                                     "exit_code": exc.exit_code})
        reporter.note(f"VM {vm!r}: {exc}")
    result.seconds = clock.monotonic() - started
    if job.post_hook and result.status != "skipped":
        try:
            await run_hook(job.post_hook, job.hook_timeout, "post-hook", vm,
                           {"MOVER_JOB_ID": stream.job_id, "MOVER_VM": vm,
                            "MOVER_BACKUP_ID": result.backup_id or "",
                            "MOVER_STATUS": result.status}, job.secret_variables)
        except HookFailed as exc:
            result.warnings.append(str(exc))
            reporter.note(str(exc))
    stream.emit(events.VmFinished, vm=vm, status=result.status,
                exit_code=_vm_exit(result), result=result.to_json())
    return result


async def run_hook(argv: tuple[str, ...], timeout: float, what: str, vm: str,
                   env: dict[str, str], secrets: tuple[str, ...] = ()) -> None:
    """Run ``argv`` (no shell) with ``env`` added to mover's environment less the variables
    ``secrets`` names (the password is not the hook's); its output goes to mover's stderr.
    HookFailed when it cannot start, exits non-zero or outlives ``timeout``."""
    inherited = {k: v for k, v in os.environ.items() if k not in secrets}
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, env={**inherited, **env}, stdin=asyncio.subprocess.DEVNULL,
            stdout=2, stderr=2)
    except OSError as exc:
        raise HookFailed(f"{what} of VM {vm!r} could not start ({argv[0]}: {exc.strerror}): "
                         "fix the job's hook command") from exc
    try:
        code = await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise HookFailed(f"{what} of VM {vm!r} ran longer than {timeout:g} s and was killed: "
                         "make it faster or raise hook_timeout") from None
    except asyncio.CancelledError:
        proc.kill()
        await proc.wait()
        raise
    if code != 0:
        raise HookFailed(f"{what} of VM {vm!r} exited with status {code}"
                         + (": the VM was skipped" if what == "pre-hook" else ""))


async def _retention(job: JobSettings, done: list[BackupResult], stream: EventStream) -> None:
    """Forget, by the job's keep rules, the backups of each VM that committed in this job
    (their data goes at the next ``mover gc``). A failure is a warning of that VM."""
    assert job.keep is not None
    for result in done:
        if result.status != "committed":
            continue
        try:
            gone = await asyncio.to_thread(maintenance.forget, job.backup.repo, job.keep,
                                           result.vm)
        except MoverError as exc:
            result.warnings.append(f"retention of VM {result.vm!r} failed: {exc}")
            continue
        if gone.forgotten:
            stream.emit(events.Note, vm=result.vm, message=(
                f"retention {gone.policy}: forgot {len(gone.forgotten)} backups of "
                f"{result.vm!r}; run `mover gc` to free their space"))


def _vm_exit(result: BackupResult) -> int:
    if result.status == "committed":
        return result.exit_status()
    return int(result.error["exit_code"]) if result.error else MoverError.exit_code


def _outcome(job_id: str, done: list[BackupResult]) -> JobResult:
    committed = [r for r in done if r.status == "committed"]
    failed = [r for r in done if r.status != "committed"]
    if not failed:
        status, code = "committed", max((_vm_exit(r) for r in committed), default=0)
    elif committed:
        status, code = "partial", PartialJob.exit_code
    else:
        status, code = "failed", _vm_exit(failed[0])
    return JobResult(job_id, status, code, [r.to_json() for r in done], done)
