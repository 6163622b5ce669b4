"""Many workers, one ``s3://`` repository: the real CLI in separate processes, each through
its own RGW gateway of the lab's object store (two machines, as it were), against the
vSphere lab. Leases are 10 s here (``MOVER_LOCK_LEASE``; stale after 14 s)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mover.repo import Repository, layout
from mover.repo.packfile import decode_index
from mover_lab import Lab, ObjectStore

from .runner import Run, snapshot_digests

pytestmark = pytest.mark.slow

MiB = 1 << 20
KEY = 2000
LEASE = 10.0
STALE = LEASE * 1.4


def worker_env(lab: Lab, store: ObjectStore, gateway: int = 0) -> dict[str, str]:
    """A worker's environment: only the AWS SDK's variables name the store; each gateway
    ("machine") has its own index cache."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    cache = Path(os.environ["XDG_CACHE_HOME"]) / f"machine-{gateway}"
    return {**base, **store.environment(gateway=gateway), "MOVER_PASSWORD": lab.password,
            "XDG_CACHE_HOME": str(cache),
            "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "MOVER_LOCK_LEASE": str(LEASE)}


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mover.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(env: dict[str, str], *args: str, timeout: float = 300) -> Run:
    proc = subprocess.run([sys.executable, "-m", "mover.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    return Run(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(autouse=True)
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Index caches under the test's directory, not this machine's ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def backup_args(lab: Lab, vm: str, url: str, *extra: str) -> list[str]:
    return ["backup", "--server", lab.url, "--user", lab.user, "--vm", vm, "--repo", url,
            "--json", *extra]


def finished(proc: subprocess.Popen[str], what: str, timeout: float = 240) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{out}\n{err}"
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def wait_for(proc: subprocess.Popen[str], event: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line)["event"] == event:
            return
    raise AssertionError(f"no {event} event: {proc.communicate()}")


def restored_sha256(env: dict[str, str], url: str, backup_id: str, out: Path) -> str:
    done = run(env, "restore", "--repo", url, "--backup", backup_id, "--disk", str(KEY),
               "--output", str(out), "--force")
    assert done.code == 0, done.stderr
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    out.unlink()
    return digest


def stored_copies(url: str) -> Counter[bytes]:
    """How many times the repository's pack indexes list each chunk."""
    repo = Repository.open(url, create=False)
    copies: Counter[bytes] = Counter()
    for name in repo.store.list(layout.INDEX):
        _, rows = decode_index(repo.store.get(name))
        copies.update(row[0] for row in rows)
    return copies


def blocks(seed: int, count: int) -> list[bytes]:
    return [random.Random(seed * 1000 + i).randbytes(MiB) for i in range(count)]


def test_two_workers_share_blocks_then_gc_runs_while_another_backup_does(
        lab: Lab, s3_env: ObjectStore, unique_name: Callable[[str], str],
        tmp_path: Path) -> None:
    """A and B back up at once through two gateways; B reads slowly and meets A's blocks
    at the end of its disk, after A committed them: they are stored once. Then forget and gc
    (a third process) while a fourth backup runs: everything kept restores, verify is clean."""
    url = f"s3://mover-e2e/{unique_name('two')}"
    gw0, gw1 = worker_env(lab, s3_env, 0), worker_env(lab, s3_env, 1)
    lab.configure(snapshotDigests=True)
    shared, only_a, only_b = blocks(1, 8), blocks(2, 8), blocks(3, 24)
    vm_a, vm_b = unique_name("a"), unique_name("b")
    lab.create_vm(vm_a, [{"capacity": 16 * MiB, "type": "thin"}])
    lab.create_vm(vm_b, [{"capacity": 32 * MiB, "type": "thin"}])
    for n, data in enumerate(shared + only_a):
        lab.write(vm_a, KEY, n * MiB, data)
    for n, data in enumerate(only_b + shared):
        lab.write(vm_b, KEY, n * MiB, data)
    # B: 8 reads of 4 MiB at 2 s each; its shared blocks come after 12 s, past the 10 s
    # after which a sync reloads the other writers' indexes (mover.repo.packs).
    lab.inject("folder", "delay", rate=1.0, delay_ms=2000, match=vm_b)
    b = start(gw1, *backup_args(lab, vm_b, url, "--fetchers", "1", "--checkpoint-every", "4"))
    a = start(gw0, *backup_args(lab, vm_a, url))
    first_a, first_b = finished(a, "backup A"), finished(b, "backup B")
    lab.clear_faults()
    copies = stored_copies(url)
    digests = {hashlib.sha256(d).digest() for d in shared}
    assert {copies[d] for d in digests} == {1}                  # shared blocks stored once
    assert len(copies) == 8 + 8 + 24 and sum(copies.values()) == len(copies)
    assert first_b["disks"][0]["dedup_chunks"] >= 8
    frozen = {r["backup_id"]: snapshot_digests(lab, vm, r["snapshot"])[KEY]
              for vm, r in ((vm_a, first_a), (vm_b, first_b))}
    for backup_id, digest in frozen.items():
        assert restored_sha256(gw0, url, backup_id, tmp_path / "o.img") == digest

    # B again (B's first backup is then forgotten); A again, slowly, while forget + gc run.
    lab.write(vm_b, KEY, 0, blocks(4, 1)[0])
    second_b = finished(start(gw1, *backup_args(lab, vm_b, url)), "backup B2")
    frozen[second_b["backup_id"]] = snapshot_digests(lab, vm_b, second_b["snapshot"])[KEY]
    for n in range(8, 16, 2):
        lab.write(vm_a, KEY, n * MiB, blocks(5 + n, 1)[0])
    lab.inject("folder", "delay", rate=1.0, delay_ms=1500, match=vm_a)
    fourth = start(gw0, *backup_args(lab, vm_a, url, "--fetchers", "1"))
    wait_for(fourth, "disk_started")
    forget = run(gw1, "forget", "--repo", url, "--keep-last", "1", "--json")
    assert forget.code == 0, forget.stderr
    assert [f["id"] for f in forget.result["forgotten"]] == [first_b["backup_id"]]
    gc = start(gw1, "gc", "--repo", url, "--repack-threshold", "0", "--json")
    time.sleep(2.0)
    assert gc.poll() is None                                    # waits for the backup
    second_a = finished(fourth, "backup A2")
    lab.clear_faults()
    gc_report = finished(gc, "gc")
    assert gc_report["chunks_removed"] >= 1
    del frozen[first_b["backup_id"]]
    frozen[second_a["backup_id"]] = snapshot_digests(lab, vm_a, second_a["snapshot"])[KEY]
    for backup_id, digest in frozen.items():
        assert restored_sha256(gw1, url, backup_id, tmp_path / "o.img") == digest
    verify = run(gw0, "verify", "--repo", url, "--read-data")
    assert verify.code == 0, verify.stdout + verify.stderr
    assert list(Repository.open(url, create=False).store.list(layout.LOCKS)) == []


def test_a_second_worker_on_a_vm_refuses_and_a_killed_one_is_resumed_after_its_lease(
        lab: Lab, s3_env: ObjectStore, unique_name: Callable[[str], str],
        tmp_path: Path) -> None:
    """While a backup of a VM runs, a second worker on that VM refuses (exit 7, as with a
    local repository). SIGKILL then leaves its lock objects; once they are stale (lease +
    margin) the next run resumes the pending backup."""
    url = f"s3://mover-e2e/{unique_name('kill')}"
    env = worker_env(lab, s3_env, 0)
    vm = unique_name("k")
    lab.configure(snapshotDigests=True)
    lab.create_vm(vm, [{"capacity": 64 * MiB, "type": "thin"}])
    lab.write(vm, KEY, 0, random.Random(9).randbytes(48 * MiB))
    # 12 reads at 2 s: the first run is still copying while the second one starts up
    lab.inject("folder", "delay", rate=1.0, delay_ms=2000, match=vm)
    proc = start(env, *backup_args(lab, vm, url, "--fetchers", "1", "--checkpoint-every", "4"))
    wait_for(proc, "disk_started")
    second = run(worker_env(lab, s3_env, 1), *backup_args(lab, vm, url))
    assert second.code == 7, second.stdout + second.stderr
    assert "may be running" in second.stdout + second.stderr
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = time.monotonic()
    lab.clear_faults()
    repo = Repository.open(url, create=False)
    assert len(list(repo.store.list(layout.LOCKS))) == 2        # repository, backup-<id>
    assert repo.list_backups() == []
    time.sleep(max(0.0, STALE + 1.0 - (time.monotonic() - killed)))
    resumed = run(env, *backup_args(lab, vm, url))
    assert resumed.code == 0, resumed.stdout + resumed.stderr
    result = resumed.result
    assert result["resumed_from"] == result["backup_id"]
    assert result["disks"][0]["bytes_read"] < 48 * MiB
    frozen = snapshot_digests(lab, vm, result["snapshot"])[KEY]
    assert restored_sha256(env, url, result["backup_id"], tmp_path / "o.img") == frozen
    assert list(repo.store.list(layout.LOCKS)) == []


def test_a_gateway_stopped_mid_backup_fails_it_cleanly_and_the_next_run_resumes(
        lab: Lab, s3_env: ObjectStore, unique_name: Callable[[str], str],
        tmp_path: Path) -> None:
    """Gateway 1 is killed while a backup writes through it: the backup fails with exit 9
    and a message naming the endpoint; with the gateway back and the failed run's lock
    objects stale, the next run resumes from its checkpoint."""
    url = f"s3://mover-e2e/{unique_name('rgw')}"
    env = worker_env(lab, s3_env, 1)
    vm = unique_name("g")
    lab.configure(snapshotDigests=True)
    lab.create_vm(vm, [{"capacity": 64 * MiB, "type": "thin"}])
    lab.write(vm, KEY, 0, random.Random(11).randbytes(48 * MiB))
    lab.inject("folder", "delay", rate=1.0, delay_ms=1000, match=vm)
    proc = start(env, *backup_args(lab, vm, url, "--fetchers", "1", "--checkpoint-every", "4"))
    wait_for(proc, "disk_started")
    time.sleep(2.0)
    pid_file = s3_env.dir / "pids" / "rgw.b"
    try:
        os.kill(int(pid_file.read_text()), signal.SIGKILL)       # gateway 1, ours alone
        stopped = time.monotonic()
        out, err = proc.communicate(timeout=180)
    finally:
        lab.clear_faults()
        ObjectStore.start(s3_env.dir, gateways=2)                # starts what is missing
    assert proc.returncode == 9, out + err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["status"] == "failed" and result["error"]["kind"] == "RepositoryError"
    message = result["error"]["message"]
    assert s3_env.endpoints[1] in message and "cannot be reached" in message, message
    time.sleep(max(0.0, STALE + 1.0 - (time.monotonic() - stopped)))
    resumed = run(env, *backup_args(lab, vm, url))
    assert resumed.code == 0, resumed.stdout + resumed.stderr
    again = resumed.result
    assert again["resumed_from"] == again["backup_id"] is not None
    assert again["disks"][0]["bytes_read"] < 48 * MiB
    frozen = snapshot_digests(lab, vm, again["snapshot"])[KEY]
    assert restored_sha256(env, url, again["backup_id"], tmp_path / "o.img") == frozen
    assert run(env, "verify", "--repo", url).code == 0
