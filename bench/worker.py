"""The worker (``mover run``): the bandwidth limit over 1 GiB, and three VMs in one job
against three VMs in three processes (wall time, CPU, memory).

Called by the suite (``scripts/bench``, skipped with ``--no-worker``) or alone:
``python -m bench.worker [--work DIR] [--vm-mib N]`` starts its own lab and prints the results.
Ratios are against limits set or measured in the same run: the configured bandwidth, and the
same job without a limit (which must be faster, or the limit did not bind).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import images
from bench.runs import GNU_TIME
from mover_lab import Lab

MiB, GiB = 1 << 20, 1 << 30


def log(msg: str) -> None:
    print(f"bench {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def timed(cmd: list[str], env: dict[str, str], tag: str, work: Path) -> dict[str, Any]:
    """``cmd`` under GNU time (its own peak RSS and CPU, as bench.runs.run_child) with files
    of its own, so several may run at once."""
    times = work / f"time-{tag}.txt"
    t0 = time.monotonic()
    proc = subprocess.run([GNU_TIME, "-f", "%M %U %S", "-o", str(times), *cmd], env=env,
                          capture_output=True, text=True)
    wall = time.monotonic() - t0
    rss, user, sys_ = times.read_text().strip().splitlines()[-1].split()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed ({proc.returncode}): "
                           f"{proc.stderr[-2000:]}")
    return {"wall": wall, "maxrss_mib": int(rss) / 1024, "cpu": float(user) + float(sys_),
            "stdout": proc.stdout}


def job_file(lab: Lab, vms: list[str], repo: Path, path: Path, **extra: Any) -> Path:
    path.write_text(json.dumps({"server": lab.url, "user": lab.user,
                                "password_env": "MOVER_PASSWORD", "vms": vms,
                                "repo": str(repo), "full": True, **extra}))
    return path


def mover_run(lab: Lab, job: Path, tag: str, work: Path) -> dict[str, Any]:
    env = {**os.environ, "MOVER_PASSWORD": lab.password}
    run = timed([sys.executable, "-m", "mover.cli", "run", str(job), "--json"], env, tag, work)
    last = json.loads(run.pop("stdout").strip().splitlines()[-1])
    assert last["event"] == "job_finished" and last["exit_code"] == 0, last
    disks = [d for r in last["results"] for d in r["disks"]]
    run["bytes_read"] = sum(d["bytes_read"] for d in disks)
    run["copy_seconds"] = max(d["seconds"] for d in disks)
    run["copy_mib_s"] = run["bytes_read"] / run["copy_seconds"] / MiB
    return run


def bandwidth(lab: Lab, work: Path) -> dict[str, Any]:
    """A 1 GiB disk of random bytes (every byte read, nothing to compress away): its full
    without a limit, then with a limit of half that rate (at most 200 MiB/s)."""
    vm, image = "bench-bw", work / "bw.img"
    images.all_random(image, GiB)
    lab.create_vm(vm, [{"capacity": GiB, "type": "thin"}])
    lab.load(vm, 2000, image)
    image.unlink()
    log("worker: 1 GiB full without a bandwidth limit")
    free = mover_run(lab, job_file(lab, [vm], work / "repo-bw0", work / "bw0.json"),
                     "bw0", work)
    limit = min(200.0, round(free["copy_mib_s"] / 2))
    log(f"  {free['copy_mib_s']:.0f} MiB/s; now limited to {limit:.0f} MiB/s")
    held = mover_run(lab, job_file(lab, [vm], work / "repo-bw1", work / "bw1.json",
                                   bandwidth=limit), "bw1", work)
    log(f"  {held['copy_mib_s']:.1f} MiB/s ({held['copy_mib_s'] / limit:.3f} of the limit)")
    lab.delete_vm(vm)
    return {"unlimited": free, "limited": held, "limit_mib_s": limit,
            "ratio": held["copy_mib_s"] / limit, "bytes": GiB}


def three_vms(lab: Lab, work: Path, vm_mib: int) -> dict[str, Any]:
    """Three VMs of ``vm_mib`` MiB of random bytes: one ``mover run`` job (parallel_vms 3)
    against three ``mover backup`` processes started together, each a full into a repository
    of its own kind (one shared by the job, one shared by the three processes)."""
    vms = [f"bench-w{i}" for i in range(3)]
    for vm in vms:
        image = work / f"{vm}.img"
        images.all_random(image, vm_mib * MiB)   # a fresh key each: nothing deduplicates
        lab.create_vm(vm, [{"capacity": vm_mib * MiB, "type": "thin"}])
        lab.load(vm, 2000, image)
        image.unlink()
    log(f"worker: three VMs of {vm_mib} MiB in one job")
    job = mover_run(lab, job_file(lab, vms, work / "repo-job", work / "three.json",
                                  parallel_vms=3), "job", work)
    log(f"  {job['wall']:.1f} s, CPU {job['cpu']:.1f} s, RSS {job['maxrss_mib']:.0f} MiB")
    env = {**os.environ, "MOVER_PASSWORD": lab.password}
    runs: list[dict[str, Any]] = [{} for _ in vms]

    def one(i: int) -> None:
        runs[i] = timed([sys.executable, "-m", "mover.cli", "backup", "--server", lab.url,
                         "--user", lab.user, "--vm", vms[i], "--repo",
                         str(work / "repo-procs"), "--full", "--json"], env, f"p{i}", work)

    log("worker: the same three VMs in three processes at once")
    t0 = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    procs = {"wall": wall, "cpu": sum(r["cpu"] for r in runs),
             "maxrss_mib_sum": sum(r["maxrss_mib"] for r in runs)}
    log(f"  {wall:.1f} s, CPU {procs['cpu']:.1f} s, RSS {procs['maxrss_mib_sum']:.0f} MiB "
        "(sum)")
    for vm in vms:
        lab.delete_vm(vm)
    return {"vm_mib": vm_mib, "job": job, "processes": procs,
            "wall_ratio": job["wall"] / wall, "cpu_ratio": job["cpu"] / procs["cpu"],
            "rss_ratio": job["maxrss_mib"] / procs["maxrss_mib_sum"]}


def run(lab: Lab, work: Path, vm_mib: int = 512) -> dict[str, Any]:
    return {"bandwidth": bandwidth(lab, work), "three_vms": three_vms(lab, work, vm_mib)}


def summary(r: dict[str, Any]) -> dict[str, float]:
    return {"worker_bandwidth_ratio": r["bandwidth"]["ratio"],
            "worker_bandwidth_limit_mib_s": r["bandwidth"]["limit_mib_s"],
            "worker_one_job_vs_three_processes_wall": r["three_vms"]["wall_ratio"],
            "worker_one_job_vs_three_processes_cpu": r["three_vms"]["cpu_ratio"],
            "worker_one_job_vs_three_processes_rss": r["three_vms"]["rss_ratio"]}


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.worker", description=__doc__)
    ap.add_argument("--work", type=Path, default=Path("/var/tmp"))
    ap.add_argument("--vm-mib", type=int, default=512, help="size of each of the three VMs")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mover-bench-worker-", dir=args.work) as tmp:
        work = Path(tmp)
        lab = Lab.start(work / "lab")
        try:
            r = run(lab, work, args.vm_mib)
        finally:
            lab.stop()
    print(json.dumps({"summary": summary(r), **r}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
