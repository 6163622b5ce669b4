"""Keeping a repository for years: forget backups by keep rules, collect garbage, verify,
repair indexes. Each is one call the CLI (and later the worker) makes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mover.errors import NotFoundError
from mover.repo import Repository
from mover.repo.gc import GcReport, collect, repair_index
from mover.repo.s3url import RepoLocation
from mover.repo.verify import Problem, verify
from mover.retention import Candidate, KeepPolicy, select


@dataclass(slots=True)
class ForgetResult:
    policy: str
    dry_run: bool
    kept: list[dict[str, Any]] = field(default_factory=list)
    forgotten: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "dry_run": self.dry_run, "kept": self.kept,
                "forgotten": self.forgotten}


def forget(repo_path: RepoLocation, policy: KeepPolicy, vm: str | None = None,
           dry_run: bool = False) -> ForgetResult:
    """Remove the backup records the policy does not keep (of one VM: name or instance
    UUID, or of all). Their chunks stay until ``gc``; no other backup is affected, since
    every backup is a synthetic full."""
    repo = Repository.open(repo_path, create=False)
    records = repo.list_backups()
    if vm is not None:
        records = [r for r in records if vm in (r.vm_name, r.vm_instance_uuid)]
        if not records:
            raise NotFoundError(f"repository {repo.location} has no backups of VM {vm!r}; "
                                "`mover list` shows the VMs there")
    by_id = {r.id: r for r in records}
    result = ForgetResult(policy.describe(), dry_run)
    for selection in select((Candidate(r.id, r.vm_instance_uuid,
                                       r.created_at) for r in records),
                            policy):
        for kept in selection.kept:
            record = by_id[kept.backup.id]
            result.kept.append({"id": record.id, "vm": record.vm_name,
                                "created": record.created, "reasons": kept.describe()})
        for gone in selection.forgotten:
            record = by_id[gone.id]
            if not dry_run:
                repo.remove_backup(record)
            result.forgotten.append({"id": record.id, "vm": record.vm_name,
                                     "created": record.created})
    return result


def gc(repo_path: RepoLocation, dry_run: bool = False, repack_threshold: float = 0.5,
       note: Callable[[str], None] | None = None, wait: float | None = None) -> GcReport:
    return collect(Repository.open(repo_path, create=False), dry_run, repack_threshold, note,
                   wait=wait)


def check(repo_path: RepoLocation, read_data: bool = False, subset: tuple[int, int] = (1, 1),
          backup_id: str | None = None) -> list[Problem]:
    repo = Repository.open(repo_path, create=False)
    if backup_id is not None:
        repo.get_backup(backup_id)  # NotFoundError names it
    with repo.reading():
        return verify(repo, read_data, subset, backup_id)


def repair(repo_path: RepoLocation) -> list[str]:
    return repair_index(Repository.open(repo_path, create=False))
