"""Prometheus metrics of a job and of a repository, in the text format (``prometheus_client``).

The job's file follows the node-exporter textfile collector convention: it is rewritten whole
at the end of each run, atomically (``write_to_textfile`` writes a temporary file beside it
and renames it over the old one), so the collector never reads half a file. Series are
gauges of the last run, labelled by VM; ``mover_vm_last_success_timestamp_seconds`` comes from
the repository, so a VM that failed in this run still shows when it last succeeded.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest, write_to_textfile

from mover import clock
from mover.errors import RepositoryError
from mover.repo import BackupRecord, Repository


def _timestamp(iso: str) -> float:
    return clock.parse(iso).timestamp()


def job_registry(results: list[dict[str, Any]], seconds: float, exit_code: int,
                 backups: list[BackupRecord]) -> CollectorRegistry:
    """The series of one job: ``results`` are the VMs' results (``job_finished.results``),
    ``backups`` the repository's backup records (for the last success of each VM)."""
    registry = CollectorRegistry()

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ("vm",)) -> Gauge:
        return Gauge(name, doc, labels, registry=registry)

    per_vm = {
        "bytes_read": gauge("mover_vm_bytes_read", "bytes read from vSphere in the last run"),
        "bytes_stored": gauge("mover_vm_bytes_stored",
                              "compressed bytes newly written to the repository"),
        "dedup_chunks": gauge("mover_vm_dedup_chunks",
                              "blocks the repository already held (deduplicated)"),
        "new_chunks": gauge("mover_vm_new_chunks", "blocks newly stored"),
        "changed_bytes": gauge("mover_vm_changed_bytes", "bytes CBT reported changed"),
        "retries": gauge("mover_vm_retries", "reads retried after transient faults"),
    }
    seconds_g = gauge("mover_vm_seconds", "seconds the VM's backup took")
    stun = gauge("mover_vm_stun_seconds", "seconds creating the backup snapshot took")
    success = gauge("mover_vm_success", "1 if the last run committed a backup, else 0")
    last = gauge("mover_vm_last_success_timestamp_seconds",
                 "when the VM's newest committed backup finished (Unix time)")
    failures = gauge("mover_job_failures", "VMs not committed in the last run, by error class",
                     ("kind",))
    job = {name: Gauge(f"mover_job_{name}", doc, registry=registry) for name, doc in (
        ("bytes_read", "bytes read, all VMs"), ("bytes_stored", "bytes stored, all VMs"),
        ("dedup_chunks", "blocks deduplicated, all VMs"), ("seconds", "seconds the job took"),
        ("exit_code", "the job's exit status"), ("vms", "VMs in the job"),
        ("vms_committed", "VMs committed"),
        ("last_run_timestamp_seconds", "when the job ended (Unix time)"))}
    newest: dict[str, float] = {}
    for record in backups:
        newest[record.vm_name] = max(newest.get(record.vm_name, 0.0), _timestamp(record.finished))
    kinds: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for result in results:
        vm, disks = result["vm"], result.get("disks") or []
        for field, g in per_vm.items():
            value = sum(d[field] for d in disks)
            g.labels(vm).set(value)
            totals[field] += value
        seconds_g.labels(vm).set(result.get("seconds", 0.0))
        stun.labels(vm).set((result.get("snapshot") or {}).get("create_seconds", 0.0))
        committed = result["status"] == "committed"
        success.labels(vm).set(1 if committed else 0)
        if vm in newest:
            last.labels(vm).set(newest[vm])
        if not committed:
            kinds[(result.get("error") or {}).get("kind", "MoverError")] += 1
    for kind, n in kinds.items():
        failures.labels(kind).set(n)
    for field in ("bytes_read", "bytes_stored", "dedup_chunks"):
        job[field].set(totals[field])
    job["seconds"].set(seconds)
    job["exit_code"].set(exit_code)
    job["vms"].set(len(results))
    job["vms_committed"].set(sum(1 for r in results if r["status"] == "committed"))
    job["last_run_timestamp_seconds"].set(clock.now().timestamp())
    return registry


def write_job(path: Path, results: list[dict[str, Any]], seconds: float, exit_code: int,
              backups: list[BackupRecord]) -> None:
    """Write the job's series to ``path`` atomically; RepositoryError naming the fix when the
    directory cannot be written."""
    try:
        write_to_textfile(str(path), job_registry(results, seconds, exit_code, backups))
    except OSError as exc:
        raise RepositoryError(f"cannot write metrics_file {path}: {exc.strerror}; check the "
                              "directory exists and mover may write there") from exc


def repository_text(repo: Repository) -> str:
    """``mover metrics --repo``: per VM the backups kept, the newest one's time and age, and
    the bytes its backups stored."""
    registry = CollectorRegistry()
    count = Gauge("mover_repo_backups", "committed backups in the repository", ("vm",),
                  registry=registry)
    newest_g = Gauge("mover_repo_newest_backup_timestamp_seconds",
                     "when the VM's newest backup finished (Unix time)", ("vm",),
                     registry=registry)
    age = Gauge("mover_repo_newest_backup_age_seconds", "seconds since the VM's newest backup",
                ("vm",), registry=registry)
    stored = Gauge("mover_repo_stored_bytes", "compressed bytes the VM's backups stored",
                   ("vm",), registry=registry)
    capacity = Gauge("mover_repo_capacity_bytes", "disk capacity of the VM's newest backup",
                     ("vm",), registry=registry)
    now = clock.now().timestamp()
    by_vm: dict[str, list[BackupRecord]] = {}
    for record in repo.list_backups():
        by_vm.setdefault(record.vm_name, []).append(record)
    for vm, records in by_vm.items():
        newest = max(records, key=lambda r: r.finished)
        finished = _timestamp(newest.finished)
        count.labels(vm).set(len(records))
        newest_g.labels(vm).set(finished)
        age.labels(vm).set(max(0.0, now - finished))
        stored.labels(vm).set(sum(d.bytes_stored for r in records for d in r.disks))
        capacity.labels(vm).set(sum(d.capacity for d in newest.disks))
    return generate_latest(registry).decode()


__all__ = ["job_registry", "repository_text", "write_job"]
