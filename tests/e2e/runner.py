"""Run the real ``mover`` CLI in a subprocess against the lab, as a user or scheduler would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mover_lab import Lab


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def result(self) -> dict[str, Any]:
        """The last stdout line of a ``--json`` run."""
        return json.loads(self.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def env(lab: Lab) -> dict[str, str]:
    return {**os.environ, "MOVER_PASSWORD": lab.password}


def mover(*args: str | Path, lab: Lab | None = None, timeout: float = 300) -> Run:
    proc = subprocess.run([sys.executable, "-m", "mover.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          env=env(lab) if lab else None)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def backup_args(lab: Lab, vm: str, repo: Path, *extra: str) -> list[str | Path]:
    return ["backup", "--server", lab.url, "--user", lab.user, "--vm", vm, "--repo", repo,
            "--json", *extra]


def backup(lab: Lab, vm: str, repo: Path, *extra: str) -> dict[str, Any]:
    """A backup that must succeed; returns its JSON result."""
    run = mover(*backup_args(lab, vm, repo, *extra), lab=lab)
    assert run.code == 0, f"mover backup failed ({run.code}):\n{run.stdout}\n{run.stderr}"
    result = run.result
    assert result["status"] == "committed"
    return result


def restore_sha256(repo: Path, backup_id: str, key: int, out: Path) -> str:
    import hashlib

    run = mover("restore", "--repo", repo, "--backup", backup_id, "--disk", str(key),
                "--output", out, "--force")
    assert run.code == 0, run.stderr
    digest = hashlib.sha256()
    with out.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    out.unlink()
    return digest.hexdigest()


def snapshot_digests(lab: Lab, vm: str, snapshot: dict[str, Any] | str) -> dict[int, str]:
    """SHA-256 of each disk of a backup's snapshot (``result["snapshot"]``, or its name) as
    the lab froze it (lab config snapshotDigests). A dict is matched by MoRef (a resumed
    backup's new snapshot has the same name as the interrupted one's); a name matches the
    newest snapshot of that name."""
    for snap in reversed(lab.snapshot_history(vm)):
        if (snap["name"] == snapshot if isinstance(snapshot, str)
                else snap["moref"] == snapshot["moref"]):
            return {int(d["key"]): d["sha256"] for d in snap["disks"]}
    raise AssertionError(f"the lab has no snapshot {snapshot} in its history")


def mover_snapshots(lab: Lab, vm: str) -> list[str]:
    return [s["name"] for s in lab.snapshots(vm) if s["name"].startswith("mover-")]


def committed(repo: Path) -> list[str]:
    """IDs of the committed backups, as ``mover list`` shows them ([] before a repository)."""
    if not (repo / "config.json").exists():
        return []
    run = mover("list", "--repo", repo, "--json")
    assert run.code == 0, run.stderr
    return [b["id"] for b in run.result["backups"]]


def proved_clean(lab: Lab, vm: str, repo: Path) -> None:
    """What every fault must leave: no mover snapshot, a repository that verifies."""
    assert mover_snapshots(lab, vm) == []
    assert mover("verify", "--repo", repo, "--read-data").code == 0


def journaled_blocks(repo: Path) -> set[tuple[str, int, int]]:
    """(backup id, disk key, block) of every block the pending backups' journals name."""
    from mover.repo import LocalStore, layout
    from mover.repo.journal import Journal

    store, found = LocalStore(repo), set()
    journals = {(p[0], p[1], p[2].split("/")[0]) for n in store.list(layout.BACKUPS)
                if (p := layout.split_backup(n)) and p[2].startswith("journal-")}
    for vm, backup_id, name in journals:
        key = int(name[len("journal-"):])
        found.update((backup_id, key, b) for b, _ in Journal(store, vm, backup_id, key).read())
    return found
