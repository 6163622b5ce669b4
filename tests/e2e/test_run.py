"""``mover run``: jobs of several VMs against the lab, as a scheduler runs them.

The event stream is parsed with the published models (``mover.jobs.events``); every backup is
restored and compared with the image the lab froze for its snapshot; the per-host cap of reads
in flight is checked with the lab's own gauge of concurrent ``/folder`` reads per host.
"""

from __future__ import annotations

import itertools
import json
import random
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from mover.jobs import events
from mover_lab import Lab

from .runner import mover, mover_snapshots, restore_sha256, snapshot_digests

MiB = 1 << 20
KEY = 2000


def make_vms(lab: Lab, unique_name: Callable[[str], str], count: int,
             size: int = 16 * MiB) -> list[str]:
    rng = random.Random(11)
    names = []
    for _ in range(count):
        name = unique_name("run")
        lab.create_vm(name, [{"capacity": size, "type": "thin"}], cbt=True)
        for offset in range(0, size, 4 * MiB):
            lab.write(name, KEY, offset, rng.randbytes(MiB))
        names.append(name)
    return names


def job(lab: Lab, vms: list[str], repo: Path, **extra: Any) -> dict[str, Any]:
    return {"server": lab.url, "user": lab.user, "password_env": "MOVER_PASSWORD",
            "vms": vms, "repo": str(repo), "fetchers": 4, **extra}


def parse(stdout: str) -> list[events.Event]:
    return [events.parse(line) for line in stdout.splitlines()]


def when(event: events.Event) -> float:
    return datetime.fromisoformat(event.time.replace("Z", "+00:00")).timestamp()


def check_stream(stream: list[events.Event], vms: list[str]) -> None:
    """seq 1, 2, ...; job_started first, job_finished last and equal to the VMs' results;
    each VM's events in the documented order; progress at most once a second per disk."""
    assert [e.seq for e in stream] == list(range(1, len(stream) + 1))
    assert len({e.job_id for e in stream}) == 1
    first, last = stream[0], stream[-1]
    assert isinstance(first, events.JobStarted) and first.vms == vms
    assert isinstance(last, events.JobFinished)
    finished = {e.vm: e for e in stream if isinstance(e, events.VmFinished)}
    assert last.results == [finished[vm].result for vm in vms]
    for vm in vms:
        kinds = [e.event for e in stream if getattr(e, "vm", None) == vm and e.event != "note"]
        if finished[vm].status != "committed":
            continue
        collapsed = [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]]
        assert collapsed[:3] == ["vm_started", "snapshot_created", "disk_started"], collapsed
        assert collapsed[-3:] == ["disk_finished", "snapshot_removed", "vm_finished"], collapsed
        assert set(collapsed[3:-3]) <= {"progress"}, collapsed
        ticks = [when(e) for e in stream if isinstance(e, events.Progress) and e.vm == vm]
        assert all(b - a >= 0.99 for a, b in itertools.pairwise(ticks)), ticks


def test_a_json_job_of_three_vms(lab: Lab, unique_name: Callable[[str], str],
                                 tmp_path: Path) -> None:
    lab.configure(snapshotDigests=True, folderConnectionBps=4 * MiB)  # reads that overlap
    vms = make_vms(lab, unique_name, 3, size=64 * MiB)
    repo = tmp_path / "repo"
    path = tmp_path / "job.json"
    # 3 x 16 MiB written at 12 MiB/s: long enough for progress events; 2 reads per host
    prom = tmp_path / "textfile" / "mover.prom"
    prom.parent.mkdir()
    path.write_text(json.dumps(job(lab, vms, repo, parallel_vms=3, host_reads=2,
                                   bandwidth=12, metrics_file=str(prom))))
    run = mover("run", path, "--json", lab=lab)
    assert run.code == 0, run.stderr
    stream = parse(run.stdout)
    check_stream(stream, vms)
    assert any(isinstance(e, events.Progress) for e in stream)
    last = stream[-1]
    assert isinstance(last, events.JobFinished) and last.status == "committed"
    for result in last.results:
        assert result["status"] == "committed"
        frozen = snapshot_digests(lab, result["vm"], result["snapshot"])
        assert restore_sha256(repo, result["backup_id"], KEY, tmp_path / "o.img") == frozen[KEY]
        assert mover_snapshots(lab, result["vm"]) == []
    peaks = lab.reads()["peak"]
    assert peaks["*"] >= 1
    assert all(n <= 2 for host, n in peaks.items() if host != "*"), peaks
    # one process, one session: one login for the three VMs
    assert lab.counters()["soap"].get("Login", 0) == 1
    check_metrics(prom.read_text(), last.results)
    assert [p.name for p in prom.parent.iterdir()] == ["mover.prom"]  # no temporary left
    repo_series = samples(mover("metrics", "--repo", repo).stdout)
    for result in last.results:
        assert repo_series["mover_repo_backups", result["vm"]] == 1
        assert 0 <= repo_series["mover_repo_newest_backup_age_seconds", result["vm"]] < 600
        assert repo_series["mover_repo_stored_bytes", result["vm"]] == sum(
            d["bytes_stored"] for d in result["disks"])


def samples(text: str) -> dict[tuple[str, str], float]:
    """(metric, first label value) -> value, parsed by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, next(iter(s.labels.values()), "")): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def check_metrics(text: str, results: list[dict[str, Any]]) -> None:
    series = samples(text)
    for result in results:
        vm, disks = result["vm"], result["disks"]
        for field in ("bytes_read", "bytes_stored", "dedup_chunks", "new_chunks", "retries"):
            assert series[f"mover_vm_{field}", vm] == sum(d[field] for d in disks), field
        assert series["mover_vm_success", vm] == 1
        assert series["mover_vm_stun_seconds", vm] == result["snapshot"]["create_seconds"]
        assert series["mover_vm_last_success_timestamp_seconds", vm] > 0
    assert series["mover_job_bytes_read", ""] == sum(
        d["bytes_read"] for r in results for d in r["disks"])
    assert series["mover_job_vms_committed", ""] == len(results)
    assert series["mover_job_exit_code", ""] == 0


def test_without_a_host_cap_reads_overlap_more(lab: Lab, unique_name: Callable[[str], str],
                                               tmp_path: Path) -> None:
    """The cap above is what held the reads, not the lab: without it they overlap more."""
    lab.configure(folderConnectionBps=4 * MiB)
    vms = make_vms(lab, unique_name, 3, size=64 * MiB)
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job(lab, vms, tmp_path / "repo", parallel_vms=3)))
    run = mover("run", path, "--json", lab=lab)
    assert run.code == 0, run.stderr
    assert lab.reads()["peak"]["*"] > 2


def test_a_toml_job_with_a_missing_vm_is_partial(lab: Lab, unique_name: Callable[[str], str],
                                                 tmp_path: Path) -> None:
    vms = make_vms(lab, unique_name, 2)
    listed = [vms[0], "no-such-vm", vms[1]]
    repo = tmp_path / "repo"
    path = tmp_path / "job.toml"
    path.write_text(f'server = "{lab.url}"\nuser = "{lab.user}"\n'
                    f'password_env = "MOVER_PASSWORD"\nrepo = "{repo}"\n'
                    f'vms = {json.dumps(listed)}\nparallel_vms = 2\n'
                    f'metrics_file = "{tmp_path / "mover.prom"}"\n')
    run = mover("run", path, "--json", lab=lab)
    assert run.code == 12, run.stderr
    stream = parse(run.stdout)
    check_stream(stream, listed)
    last = stream[-1]
    assert isinstance(last, events.JobFinished) and last.status == "partial"
    by_vm = {r["vm"]: r for r in last.results}
    assert by_vm["no-such-vm"]["status"] == "failed"
    assert by_vm["no-such-vm"]["error"]["kind"] == "NotFoundError"
    assert [r["status"] for r in last.results] == ["committed", "failed", "committed"]
    series = samples((tmp_path / "mover.prom").read_text())
    assert series["mover_job_failures", "NotFoundError"] == 1
    assert series["mover_vm_success", "no-such-vm"] == 0
    assert ("mover_vm_last_success_timestamp_seconds", "no-such-vm") not in series
    assert series["mover_job_exit_code", ""] == 12
    listing = mover("list", "--repo", repo, "--json")
    assert sorted(b["vm_name"] for b in listing.result["backups"]) == sorted(vms)


def test_a_failing_pre_hook_skips_only_its_vm(lab: Lab, unique_name: Callable[[str], str],
                                              tmp_path: Path) -> None:
    vms = make_vms(lab, unique_name, 3)
    log = tmp_path / "hooks.log"
    pre = [sys.executable, "-c", "import os, sys; "
           f"sys.exit(3 if os.environ['MOVER_VM'] == {vms[1]!r} else 0)"]
    post = [sys.executable, "-c", "import os; "
            f"open({str(log)!r}, 'a').write(' '.join(os.environ.get(k, '-') for k in "
            "('MOVER_VM', 'MOVER_STATUS', 'MOVER_BACKUP_ID', 'MOVER_PASSWORD')) + '\\n')"]
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job(lab, vms, tmp_path / "repo", pre_hook=pre,
                                   post_hook=post)))
    run = mover("run", path, "--json", lab=lab)
    assert run.code == 12, run.stderr
    last = parse(run.stdout)[-1]
    assert isinstance(last, events.JobFinished)
    assert [r["status"] for r in last.results] == ["committed", "skipped", "committed"]
    assert "pre-hook" in last.results[1]["error"]["message"]
    assert lab.snapshot_history(vms[1]) == []          # skipped before its snapshot
    lines = sorted(log.read_text().splitlines())
    assert lines == sorted(f"{r['vm']} committed {r['backup_id']} -"  # no password
                           for r in last.results if r["status"] == "committed")


def test_sigterm_removes_every_snapshot_and_exits_130(
        lab: Lab, unique_name: Callable[[str], str], tmp_path: Path) -> None:
    import signal
    import subprocess

    from .runner import env

    lab.configure(folderConnectionBps=1 * MiB)           # the copy takes a while
    vms = make_vms(lab, unique_name, 2, size=32 * MiB)
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job(lab, vms, tmp_path / "repo", parallel_vms=2)))
    proc = subprocess.Popen([sys.executable, "-m", "mover.cli", "run", str(path), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env(lab))
    assert proc.stdout is not None
    started: set[str] = set()
    for line in proc.stdout:
        event = events.parse(line)
        if isinstance(event, events.DiskStarted):
            started.add(event.vm)
        if started == set(vms):
            break
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    error = json.loads(rest.strip().splitlines()[-1])["error"]
    assert error["kind"] == "Interrupted" and "SIGTERM" in error["message"]
    for vm in vms:
        assert mover_snapshots(lab, vm) == []
    listing = mover("list", "--repo", tmp_path / "repo", "--json")
    assert listing.result["backups"] == []


def test_retention_after_success_forgets_only_committed_vms_backups(
        lab: Lab, unique_name: Callable[[str], str], tmp_path: Path) -> None:
    """``keep`` runs after the VMs, per VM that committed: after three runs with
    ``keep.last = 2`` each committed VM has its two newest backups; a VM whose run failed
    keeps all of its own (retention never runs for it)."""
    vms = make_vms(lab, unique_name, 2)
    repo = tmp_path / "repo"
    path = tmp_path / "job.json"
    ids: dict[str, list[str]] = {vm: [] for vm in vms}
    for round_ in range(3):
        for i, vm in enumerate(vms):
            lab.write(vm, KEY, i * MiB, random.Random(round_ * 10 + i).randbytes(MiB))
        pre = [sys.executable, "-c", "import os, sys; "
               f"sys.exit(3 if os.environ['MOVER_VM'] == {vms[1]!r} and {round_} == 2 else 0)"]
        path.write_text(json.dumps(job(lab, vms, repo, keep={"last": 2}, pre_hook=pre)))
        run = mover("run", path, "--json", lab=lab)
        assert run.code == (12 if round_ == 2 else 0), run.stderr
        for result in parse(run.stdout)[-1].results:  # type: ignore[union-attr]
            if result["status"] == "committed":
                ids[result["vm"]].append(result["backup_id"])
    listing = mover("list", "--repo", repo, "--json")
    kept = {vm: sorted(b["id"] for b in listing.result["backups"] if b["vm_name"] == vm)
            for vm in vms}
    assert len(ids[vms[0]]) == 3 and kept[vms[0]] == sorted(ids[vms[0]][1:])  # oldest gone
    # vms[1] committed twice (its third run was skipped): after round 2 it kept both
    assert len(ids[vms[1]]) == 2 and kept[vms[1]] == sorted(ids[vms[1]])
    for vm in vms:   # what is kept restores
        newest = max(kept[vm])
        assert len(restore_sha256(repo, newest, KEY, tmp_path / f"{vm}.img")) == 64
