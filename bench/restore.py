"""Restore throughput, against limits measured in the same run (``--no-restore`` skips it).

On the realistic disk: a full backup and a 1% incremental into their own repository, then,
``runs`` times each, interleaved so that machine noise falls on all alike:

- ``file``: ``mover restore --output FILE`` (a new sparse file);
- ``stdout``: ``mover restore --output - | cat > /dev/null`` (every byte, zeros included);
- ``nbd``: ``nbdcopy`` of a ``mover serve`` export to ``null:`` (zeros as holes, skipped);
- ``differential``: ``mover restore --base FULL`` of the incremental onto the full's image.

The limits are the disk's read limit, what restoring cannot beat on this machine: the
repository's (every stored block of the disk read, decoded and checked in-process on the
restore's 4 threads, no target) and the target's (the suite's sequential write limit). Each
restore is given as logical MB/s (disk capacity / wall), as a ratio to the read limit, and
as a ratio to its bound: the read limit, and for a new file also the write limit (the
differential writes 1% of the disk: the read limit alone bounds it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import images, report
from bench.runs import mover_backup, run_child
from mover.repo import Repository

if TYPE_CHECKING:
    from bench.suite import Suite

KEY = 2000
WORKERS = 4  # mover restore's default


def run(suite: Suite) -> None:
    from bench.suite import log
    if shutil.which("nbdkit") is None or shutil.which("nbdcopy") is None:
        log("restore: nbdkit/nbdcopy missing (scripts/lib/setup.sh ensure_restore_tools)")
        return
    work = suite.work / "restore"
    work.mkdir()
    repo = work / "repo"
    vm = "bench-real"
    log("restore: a full and a 1% incremental into their own repository")
    full = mover_backup(suite.lab, vm, repo, "--full")
    writes = images.change_set(suite.image, suite.capacity, 0.01, 91)
    for w in writes:
        suite.lab.write(vm, KEY, w.offset, w.data)
    images.apply_local(suite.image, writes)
    incr = mover_backup(suite.lab, vm, repo)
    capacity = full["capacity"]

    log("restore: the repository's read limit (decode and check every stored block)")
    read_limit = _read_limit(repo, incr["backup_id"])
    write_limit = suite.r["limits"]["write"]["mb_s"]
    base = work / "base.img"
    _restore(repo, full["backup_id"], base)
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in
                                             ("file", "stdout", "nbd", "differential")}
    for i in range(suite.runs):
        log(f"restore round {i + 1}/{suite.runs}")
        out = work / "out.img"
        out.unlink(missing_ok=True)
        rows["file"].append(_measure(_restore(repo, incr["backup_id"], out), capacity))
        out.unlink()
        rows["stdout"].append(_measure(_stdout(repo, incr["backup_id"]), capacity))
        rows["nbd"].append(_measure(_nbd(repo, incr["backup_id"], work), capacity))
        target = work / "target.img"
        subprocess.run(["cp", "--sparse=always", str(base), str(target)], check=True)
        rows["differential"].append(
            _measure(_restore(repo, incr["backup_id"], target, "--base", full["backup_id"]),
                     capacity))
        target.unlink()
    med = report.median
    summary: dict[str, Any] = {"restore_read_limit_mb_s": read_limit["logical_mb_s"],
                               "restore_write_limit_mb_s": write_limit}
    for kind, runs in rows.items():
        mb_s = med([r["logical_mb_s"] for r in runs])
        # A file target also has the machine's write limit; a pipe and nbdcopy to null: not.
        bound = (min(read_limit["logical_mb_s"], write_limit) if kind in ("file",)
                 else read_limit["logical_mb_s"])
        summary[f"restore_{kind}_mb_s"] = mb_s
        summary[f"restore_{kind}_vs_read_limit"] = mb_s / read_limit["logical_mb_s"]
        summary[f"restore_{kind}_vs_bound"] = mb_s / bound
        summary[f"restore_{kind}_peak_rss_mib"] = max(r["maxrss_mib"] for r in runs)
        summary[f"restore_{kind}_cpu_s"] = med([r["cpu"] for r in runs])
        log(f"  {kind}: {mb_s:.0f} MB/s logical, {mb_s / read_limit['logical_mb_s']:.2f} of "
            f"the read limit, {mb_s / bound:.2f} of its bound")
    diff = rows["differential"][0]["result"]
    summary["restore_differential_bytes_written"] = diff["bytes_written"]
    summary["restore_differential_blocks_written"] = diff["blocks_written"]
    summary["restore_differential_wall_s"] = med([r["wall"] for r in rows["differential"]])
    summary["restore_file_wall_s"] = med([r["wall"] for r in rows["file"]])
    suite.r["restore"] = {"full": full, "incremental": incr, "read_limit": read_limit,
                          "runs": rows, "summary": summary}


def _read_limit(repo: Path, backup_id: str) -> dict[str, float]:
    r = Repository.open(repo, create=False)
    index = r.read_index(r.get_backup(backup_id), KEY)
    digests = [d for b in range(len(index)) if (d := index.get(b)) is not None]
    t0 = time.monotonic()
    with ThreadPoolExecutor(WORKERS) as pool:
        stored = sum(len(x) for x in pool.map(r.read_block, digests))
    seconds = time.monotonic() - t0
    return {"seconds": seconds, "stored_mb_s": stored / seconds / 1e6,
            "logical_mb_s": index.capacity / seconds / 1e6}


def _mover(*args: str) -> list[str]:
    return [sys.executable, "-m", "mover.cli", *args]


def _restore(repo: Path, backup_id: str, out: Path, *extra: str) -> dict[str, Any]:
    run = run_child(_mover("restore", "--repo", str(repo), "--backup", backup_id, "--disk",
                           str(KEY), "--output", str(out), "--json", *extra))
    if run.returncode != 0:
        raise RuntimeError(f"mover restore failed ({run.returncode}): {run.stderr[-2000:]}")
    return {"wall": run.wall, "maxrss_mib": run.maxrss_mib, "cpu": run.cpu,
            "result": json.loads(run.stdout.strip().splitlines()[-1])}


def _stdout(repo: Path, backup_id: str) -> dict[str, Any]:
    cmd = " ".join(_mover("restore", "--repo", str(repo), "--backup", backup_id, "--disk",
                          str(KEY), "--output", "-", "--json"))
    run = run_child(["sh", "-c", f"{cmd} | cat > /dev/null"])
    if run.returncode != 0:
        raise RuntimeError(f"restore to stdout failed: {run.stderr[-2000:]}")
    return {"wall": run.wall, "maxrss_mib": run.maxrss_mib, "cpu": run.cpu,
            "result": json.loads(run.stderr.strip().splitlines()[-1])}


def _nbd(repo: Path, backup_id: str, work: Path) -> dict[str, Any]:
    sock = work / "nbd.sock"
    proc = subprocess.Popen(_mover("serve", "--repo", str(repo), "--backup", backup_id,
                                   "--disk", str(KEY), "--socket", str(sock), "--json"),
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        uri = json.loads(proc.stdout.readline())["uri"]
        run = run_child(["nbdcopy", uri, "null:"])
        if run.returncode != 0:
            raise RuntimeError(f"nbdcopy failed: {run.stderr[-2000:]}")
        # nbdkit's CPU is not in nbdcopy's figures: the export's process tree is reported
        return {"wall": run.wall, "maxrss_mib": run.maxrss_mib, "cpu": run.cpu,
                "result": {}}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        if os.path.lexists(sock):
            sock.unlink()


def _measure(run: dict[str, Any], capacity: int) -> dict[str, Any]:
    return {**run, "logical_mb_s": capacity / run["wall"] / 1e6}
