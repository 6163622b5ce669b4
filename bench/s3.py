"""The S3 rows of the benchmark, all measured in one run against the lab's object store
(Ceph RGW, two gateways on one cluster):

* the store's own PUT and GET throughput of pack-sized objects (the limit);
* a full and an incremental (3% changed) backup of the same disk into an ``s3://``
  repository and into a local directory (the ratio);
* requests per GiB stored (``S3Store`` counts them);
* starts (``Repository.open``) with and without the local cache of pack indexes;
* two workers through two gateways backing up two VMs at once (aggregate rate).

``scripts/bench`` runs it after the realistic disk (``--no-s3`` skips it); on its own:
``python -m bench.s3 --size-gib 2`` (through the venv; it starts its own lab).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import images
from bench.runs import run_child, tree_bytes
from mover_lab import Lab, ObjectStore

MiB = 1 << 20
GiB = 1 << 30
OBJECT = 16 * MiB         # a pack
OBJECTS = 24
THREADS = 4


def log(msg: str) -> None:
    print(f"bench {time.strftime('%H:%M:%S')} s3: {msg}", file=sys.stderr, flush=True)


def aws_env(store: ObjectStore, gateway: int, cache: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**base, **store.environment(gateway=gateway), "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "XDG_CACHE_HOME": str(cache)}


def store_limits(store: Any) -> dict[str, float]:
    """PUT then GET of ``OBJECTS`` pack-sized objects with ``THREADS`` threads."""
    blob = os.urandom(OBJECT)
    names = [f"bench/{i:04d}" for i in range(OBJECTS)]
    with ThreadPoolExecutor(THREADS) as pool:
        t0 = time.perf_counter()
        list(pool.map(lambda n: store.put(n, blob, replace=True), names))
        put = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = sum(len(b) for b in pool.map(store.get, names))
        get = time.perf_counter() - t0
    assert got == OBJECT * OBJECTS
    store.delete_many(names)
    return {"put_mb_s": OBJECT * OBJECTS / put / 1e6, "get_mb_s": OBJECT * OBJECTS / get / 1e6}


def _argv(lab: Lab, vm: str, repo: str, counts: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bench.s3", "--child", str(counts), "backup", "--server",
            lab.url, "--user", lab.user, "--vm", vm, "--repo", repo, "--json", *extra]


def _result(stdout: str, counts: Path, wall: float) -> dict[str, Any]:
    disk = json.loads(stdout.strip().splitlines()[-1])["disks"][0]
    requests = json.loads(counts.read_text()) if counts.exists() else {}
    return {"wall": wall, "mode": disk["mode"], "bytes_read": disk["bytes_read"],
            "bytes_stored": disk["bytes_stored"], "new_chunks": disk["new_chunks"],
            "dedup_chunks": disk["dedup_chunks"], "requests": requests,
            "mb_s": disk["bytes_read"] / wall / 1e6}


def backup(lab: Lab, vm: str, repo: str, env: dict[str, str], work: Path,
           *extra: str) -> dict[str, Any]:
    """``mover backup`` in a child (``--child``) under GNU time, with its request counts."""
    counts = Path(tempfile.mktemp(prefix="s3-requests-", dir=work))
    run = run_child(_argv(lab, vm, repo, counts, *extra),
                    env={**env, "MOVER_PASSWORD": lab.password}, lab_pid=lab.pid)
    if run.returncode != 0:
        raise RuntimeError(f"mover backup failed ({run.returncode}): {run.stderr[-2000:]}")
    return {**_result(run.stdout, counts, run.wall), "cpu": run.cpu,
            "maxrss_mib": run.maxrss_mib}


def concurrent(lab: Lab, jobs: list[tuple[str, str, dict[str, str]]], work: Path,
               *extra: str) -> tuple[float, list[dict[str, Any]]]:
    """Backups started together (plain children: GNU time's files are per bench process)."""
    procs = []
    t0 = time.perf_counter()
    for vm, repo, env in jobs:
        counts = Path(tempfile.mktemp(prefix="s3-requests-", dir=work))
        procs.append((counts, subprocess.Popen(
            _argv(lab, vm, repo, counts, *extra), env={**env, "MOVER_PASSWORD": lab.password},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    results = []
    for counts, proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"mover backup failed ({proc.returncode}): {err[-2000:]}")
        results.append(_result(out, counts, time.perf_counter() - t0))
    return time.perf_counter() - t0, results


def opening(url: str, env: dict[str, str]) -> float:
    """Seconds a fresh process takes to open the repository (and load its indexes)."""
    code = ("import time, sys; from mover.repo import Repository; t = time.perf_counter(); "
            "Repository.open(sys.argv[1], create=False); print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code, url], env=env, check=True,
                         capture_output=True, text=True).stdout
    return float(out)


def run(lab: Lab, image: Path, capacity: int, work: Path) -> dict[str, Any]:
    from mover.repo.s3store import S3Store, client_from_environment

    r: dict[str, Any] = {}
    log("starting the object store (two gateways)")
    store = ObjectStore.start(work / "objectstore", gateways=2)
    try:
        env = [aws_env(store, g, work / f"cache-{g}") for g in (0, 1)]
        saved = dict(os.environ)
        os.environ.update(env[0])
        try:
            s3 = S3Store("bench", "limits", client_from_environment())
            s3.check_bucket(create=True)
            from mover.repo.localstore import LocalStore
            r["limits"] = {"s3": store_limits(s3),
                           "local": store_limits(LocalStore(work / "limits-local"))}
        finally:
            os.environ.clear()
            os.environ.update(saved)
        vms = ["bench-s3-a", "bench-s3-b"]
        for vm in vms:
            lab.create_vm(vm, [{"capacity": capacity, "type": "thin"}])
            lab.load(vm, 2000, image)
        url, local = "s3://bench/repo", work / "repo-s3-local"
        log("full and incremental into a local directory and into s3://bench/repo")
        # A first read of the disk warms the lab's page cache for both measured runs.
        backup(lab, vms[0], str(work / "repo-warm-up"), env[0], work, "--full")
        r["local_full"] = backup(lab, vms[0], str(local), env[0], work, "--full")
        r["local_full"]["repo_bytes"] = tree_bytes(local)
        r["s3_full"] = backup(lab, vms[0], url, env[0], work, "--full")
        for w in images.change_set(image, capacity, 0.03, 77):
            lab.write(vms[0], 2000, w.offset, w.data)
        r["local_incr"] = backup(lab, vms[0], str(local), env[0], work)
        r["s3_incr"] = backup(lab, vms[0], url, env[0], work)
        cold = work / "cache-cold"
        r["open_s"] = {"no_cache": opening(url, aws_env(store, 0, cold)),
                       "warm_cache": opening(url, env[0])}
        log("two workers, two gateways, one repository")
        url2 = "s3://bench/two"
        wall, both = concurrent(lab, [(vms[0], url2, env[0]), (vms[1], url2, env[1])], work,
                                "--full")
        r["two_workers"] = {"wall": wall, "runs": both,
                            "aggregate_mb_s": sum(b["bytes_read"] for b in both) / wall / 1e6}
    finally:
        store.stop()
    summarize(r)
    return r


def summarize(r: dict[str, Any]) -> None:
    s: dict[str, Any] = {}
    for kind in ("full", "incr"):
        s[f"{kind}_ratio"] = r[f"local_{kind}"]["wall"] / r[f"s3_{kind}"]["wall"]
    stored = r["s3_full"]["bytes_stored"] + r["s3_incr"]["bytes_stored"]
    requests: dict[str, int] = {}
    for kind in ("s3_full", "s3_incr"):
        for op, n in r[kind]["requests"].items():
            requests[op] = requests.get(op, 0) + n
    s["requests"] = requests
    s["requests_per_gib"] = sum(requests.values()) / (stored / GiB) if stored else None
    s["put_per_gib"] = requests.get("PutObject", 0) / (stored / GiB) if stored else None
    s["single_mb_s"] = r["s3_full"]["mb_s"]
    s["two_workers_mb_s"] = r["two_workers"]["aggregate_mb_s"]
    r["summary"] = s


def markdown(r: dict[str, Any]) -> list[str]:
    """The S3 section of the report."""
    s, lim = r["summary"], r["limits"]
    rows = [("store PUT, 16 MiB objects, 4 threads", f"{lim['s3']['put_mb_s']:.0f} MB/s",
             f"local directory {lim['local']['put_mb_s']:.0f} MB/s"),
            ("store GET, 16 MiB objects, 4 threads", f"{lim['s3']['get_mb_s']:.0f} MB/s",
             f"local directory {lim['local']['get_mb_s']:.0f} MB/s")]
    for kind, name in (("full", "full"), ("incr", "incremental (3% changed)")):
        s3, loc = r[f"s3_{kind}"], r[f"local_{kind}"]
        rows.append((f"{name} to RGW", f"{s3['wall']:.1f} s ({s3['mb_s']:.0f} MB/s read)",
                     f"local {loc['wall']:.1f} s; local/S3 time ratio "
                     f"{s[f'{kind}_ratio']:.2f}"))
    rows.append(("requests per GiB stored", f"{s['requests_per_gib']:.0f}",
                 f"PUT {s['put_per_gib']:.0f}/GiB; all: "
                 + ", ".join(f"{k} {v}" for k, v in sorted(s["requests"].items()))))
    rows.append(("open (load pack indexes)", f"{r['open_s']['warm_cache']:.2f} s cached",
                 f"{r['open_s']['no_cache']:.2f} s without the cache"))
    rows.append(("two workers, two gateways", f"{s['two_workers_mb_s']:.0f} MB/s aggregate",
                 f"one worker {s['single_mb_s']:.0f} MB/s; {r['two_workers']['wall']:.1f} s"))
    lines = ["## S3 repository (Ceph RGW of the lab)", "", "| row | value | against |",
             "| --- | ---: | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return [*lines, ""]


def child(out: Path, argv: list[str]) -> int:
    """Run the mover CLI in this process, then write its S3 request counts to ``out``."""
    from mover.cli import main as mover_main
    from mover.repo.s3store import REQUESTS
    try:
        return mover_main(argv)
    finally:
        out.write_text(json.dumps(dict(REQUESTS)))


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return child(Path(sys.argv[2]), sys.argv[3:])
    ap = argparse.ArgumentParser(prog="python -m bench.s3", description=__doc__)
    ap.add_argument("--size-gib", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/var/tmp"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mover-bench-s3-", dir=args.work))
    capacity = args.size_gib * GiB
    image = work / "realistic.img"
    log(f"building a {args.size_gib} GiB realistic disk")
    images.realistic(image, capacity, 0.35, work)
    lab = Lab.start(work / "lab")
    try:
        r = run(lab, image, capacity, work)
    finally:
        lab.stop()
    print("\n".join(markdown(r)))
    print(json.dumps(r["summary"], indent=1))
    import shutil
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
