"""Running mover: the real CLI as a child process (wall time, peak RSS, CPU seconds), and the
pipeline in-process with instrumented stages (throughput per stage over time, scaling)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.limits import proc_cpu
from mover.extents import Extent, align, plan_reads
from mover_lab import Lab

MiB = 1 << 20
GNU_TIME = "/usr/bin/time"


def tree_bytes(path: Path) -> int:
    """Apparent size of every file under ``path``."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


@dataclass
class ChildRun:
    """One child process: wall seconds, its peak RSS and CPU, the lab's CPU meanwhile."""

    wall: float
    maxrss_mib: float
    cpu_user: float
    cpu_sys: float
    lab_cpu: float
    returncode: int
    stdout: str
    stderr: str

    @property
    def cpu(self) -> float:
        return self.cpu_user + self.cpu_sys


def run_child(cmd: list[str], env: dict[str, str] | None = None, lab_pid: int | None = None,
              cwd: Path | None = None) -> ChildRun:
    """Run ``cmd`` under GNU time and read its peak RSS and CPU seconds.

    Not ``wait4`` on our own child: Linux records the forked (pre-exec) image's high-water
    RSS in the child's ``ru_maxrss``, so a child of this big process would report at least
    our own RSS. GNU time is small, so its child's figure is the program's own."""
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    err_path = tmp / f"bench-stderr-{os.getpid()}.txt"
    time_path = tmp / f"bench-time-{os.getpid()}.txt"
    lab0 = proc_cpu(lab_pid) if lab_pid else 0.0
    with err_path.open("w+") as err:
        t0 = time.monotonic()
        proc = subprocess.run([GNU_TIME, "-f", "%M %U %S", "-o", str(time_path), *cmd],
                              stdout=subprocess.PIPE, stderr=err, env=env, cwd=cwd)
        wall = time.monotonic() - t0
        err.seek(0)
        stderr = err.read()
    err_path.unlink(missing_ok=True)
    last = time_path.read_text().strip().splitlines()[-1].split()
    time_path.unlink(missing_ok=True)
    lab_cpu = proc_cpu(lab_pid) - lab0 if lab_pid else 0.0
    return ChildRun(wall, int(last[0]) / 1024, float(last[1]), float(last[2]), lab_cpu,
                    proc.returncode, proc.stdout.decode(errors="replace"), stderr)


def tree_files(path: Path) -> int:
    return sum(len(files) for _root, _dirs, files in os.walk(path))


def old_mover(rev: str, dest: Path) -> Path | None:
    """The ``mover`` package of commit ``rev`` of this repository, extracted under ``dest``
    (for measuring an earlier format in the same run); None without git or the commit."""
    root = Path(__file__).resolve().parent.parent
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(root), "archive", rev, "mover"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    if archive.returncode != 0:
        return None
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def mover_backup(lab: Lab, vm: str, repo: Path, *extra: str,
                 code: Path | None = None) -> dict[str, Any]:
    """``mover backup --json`` of ``vm`` into ``repo``; the result line plus measurements.
    ``code``: a directory holding another version's ``mover`` package to run instead."""
    env = {**os.environ, "MOVER_PASSWORD": lab.password}
    if code is not None:
        env["PYTHONPATH"] = str(code)
    before = tree_bytes(repo) if repo.exists() else 0
    run = run_child([sys.executable, "-m", "mover.cli", "backup", "--server", lab.url,
                     "--user", lab.user, "--vm", vm, "--repo", str(repo), "--json", *extra],
                    env=env, lab_pid=lab.pid, cwd=code)
    if run.returncode not in (0, 11):   # 11: committed, the CBT canary fired
        raise RuntimeError(f"mover backup failed ({run.returncode}): {run.stderr[-2000:]}"
                           f"{run.stdout[-2000:]}")
    result = json.loads(run.stdout.strip().splitlines()[-1])
    disk = result["disks"][0]
    growth = tree_bytes(repo) - before
    return {"backup_id": result["backup_id"], "wall": run.wall, "maxrss_mib": run.maxrss_mib,
            "cpu": run.cpu,
            "cpu_user": run.cpu_user, "cpu_sys": run.cpu_sys, "lab_cpu": run.lab_cpu,
            "mode": disk["mode"], "bytes_read": disk["bytes_read"],
            "bytes_stored": disk["bytes_stored"], "changed_bytes": disk["changed_bytes"],
            "copy_seconds": disk["seconds"], "capacity": disk["capacity"],
            "zero_blocks": disk["zero_blocks"], "new_chunks": disk["new_chunks"],
            "dedup_chunks": disk["dedup_chunks"], "repo_growth": growth,
            "repo_files": tree_files(repo),
            "canary_blocks": disk.get("canary_blocks"), "canary_bytes": disk.get("canary_bytes"),
            "canary_seconds": disk.get("canary_seconds"), "cbt_suspect": disk.get("cbt_suspect"),
            "merged_blocks": disk.get("merged_blocks"), "base_seconds": disk.get("base_seconds"),
            "snapshot_create_s": result["snapshot"].get("create_seconds"),
            "snapshot_remove_s": result["snapshot"].get("remove_seconds"),
            "mb_s": disk["bytes_read"] / run.wall / 1e6,
            "logical_mb_s": disk["capacity"] / run.wall / 1e6}


def mover_gc(repo: Path, *extra: str) -> dict[str, Any]:
    """``mover gc --json``: wall, peak RSS, CPU and its report."""
    run = run_child([sys.executable, "-m", "mover.cli", "gc", "--repo", str(repo), "--json",
                     *extra])
    if run.returncode != 0:
        raise RuntimeError(f"mover gc failed ({run.returncode}): {run.stderr[-2000:]}")
    return {"wall": run.wall, "maxrss_mib": run.maxrss_mib, "cpu": run.cpu,
            "report": json.loads(run.stdout.strip().splitlines()[-1])}


def mover_forget(repo: Path, *rules: str) -> dict[str, Any]:
    run = run_child([sys.executable, "-m", "mover.cli", "forget", "--repo", str(repo),
                     "--json", *rules])
    if run.returncode != 0:
        raise RuntimeError(f"mover forget failed ({run.returncode}): {run.stderr[-2000:]}")
    return {"wall": run.wall, "result": json.loads(run.stdout.strip().splitlines()[-1])}


def planned_reads(extents: Iterable[tuple[int, int]], capacity: int, block_size: int,
                  max_read: int, grain: int = 64 * 1024) -> list[Extent]:
    """What mover reads for these allocated extents: rounded out to the CBT grain (as the
    host reports them), then to blocks, split into reads."""
    areas = [Extent(s // grain * grain, -(-e // grain) * grain - s // grain * grain)
             for s, e in extents]
    return plan_reads(align(areas, block_size, capacity), block_size, max_read)


def spread(reads: list[Extent], limit: int) -> list[Extent]:
    """About ``limit`` bytes of reads taken evenly from ``reads``."""
    total = sum(r.length for r in reads)
    step = max(1, total // max(limit, 1))
    return reads[::step] if step > 1 else reads


@dataclass
class Timeline:
    fetch: list[tuple[float, int]] = field(default_factory=list)
    process: list[tuple[float, int]] = field(default_factory=list)
    store: list[tuple[float, int]] = field(default_factory=list)


async def _pipeline(lab: Lab, flat: str, capacity: int, reads: list[Extent], block_size: int,
                    repo_dir: Path, fetchers: int, timeline: Timeline | None,
                    max_read: int) -> dict[str, Any]:
    import aiohttp

    from mover.index import FixedIndex
    from mover.pipeline.copy import PipelineSettings, copy_disk
    from mover.pipeline.folder import FolderTransport, folder_url
    from mover.pipeline.process import BlockProcessor
    from mover.repo import Repository

    repo = Repository.open(repo_dir, True, block_size)
    settings = PipelineSettings(fetchers=fetchers, max_read=max_read)
    t0 = time.monotonic()
    sink: Any = repo.chunks
    if timeline is not None:
        sink = _TimedSink(repo.chunks, timeline.store, t0)
    processor: Any = BlockProcessor(sink, block_size)
    if timeline is not None:
        processor = _TimedProcessor(processor, timeline.process, t0)
    connector = aiohttp.TCPConnector(limit=fetchers)
    async with aiohttp.ClientSession(connector=connector,
                                     auth=aiohttp.BasicAuth(lab.user, lab.password)) as http:
        url = folder_url(f"http://{lab.host}:{lab.port}", "LocalDS_0", flat, "DC0")
        transport: Any = _folder_transport(FolderTransport, http, url, capacity, fetchers)
        if timeline is not None:
            transport = _TimedTransport(transport, timeline.fetch, t0)
        with ThreadPoolExecutor(settings.workers, thread_name_prefix="mover-cpu") as executor:
            started = time.monotonic()
            stats = await copy_disk(transport, reads, FixedIndex(capacity, block_size),
                                    processor, executor, settings)
            seconds = time.monotonic() - started
    return {"seconds": seconds, "bytes_read": stats.bytes_read,
            "bytes_stored": stats.bytes_stored, "mb_s": stats.bytes_read / seconds / 1e6}


def pipeline(lab: Lab, flat: str, capacity: int, reads: list[Extent], block_size: int,
             repo_dir: Path, fetchers: int = 8, timeline: Timeline | None = None,
             max_read: int = 4 * MiB) -> dict[str, Any]:
    """copy_disk in this process (uvloop, like the CLI) into a new repository ``repo_dir``.

    Repositories are not deleted between runs (the work directory goes at the end): ext4
    avoids reusing inodes deleted moments ago, and its search past thousands of them would
    be charged to the next run's chunk writes."""
    import uvloop

    return uvloop.run(_pipeline(lab, flat, capacity, reads, block_size, repo_dir,
                                fetchers, timeline, max(max_read, block_size)))


class _BasicAuthCookie:
    """A cookie source for a session that authenticates with Basic auth (the lab accepts
    it on /folder), so the bench needs no SOAP login of its own."""

    value = "bench"

    async def refresh(self, stale: str) -> str:
        return stale


def _folder_transport(cls: Any, http: Any, url: Any, size: int, fetchers: int) -> Any:
    """mover's FolderTransport, built from whichever of its parameters exist (the data plane
    is being extended in parallel; the bench must not depend on the exact signature)."""
    import inspect

    from mover.pipeline.copy import PipelineSettings

    defaults = PipelineSettings()
    params = inspect.signature(cls).parameters
    offered = {"http": http, "url": url, "size": size, "max_readers": fetchers,
               "cookie": _BasicAuthCookie(), "cookie_name": "vmware_soap_session",
               "ssl_": False,  # as the CLI: the same timeouts on every read
               "read_timeout": getattr(defaults, "read_timeout", None),
               "idle_timeout": getattr(defaults, "idle_timeout", None)}
    return cls(**{k: v for k, v in offered.items() if k in params})


class _TimedTransport:
    def __init__(self, inner: Any, events: list[tuple[float, int]], t0: float) -> None:
        self._inner, self._events, self._t0 = inner, events, t0
        self.name, self.size, self.max_readers = inner.name, inner.size, inner.max_readers

    async def read_into(self, offset: int, buf: memoryview) -> None:
        await self._inner.read_into(offset, buf)
        self._events.append((time.monotonic() - self._t0, len(buf)))

    async def close(self) -> None:
        await self._inner.close()


class _TimedProcessor:
    def __init__(self, inner: Any, events: list[tuple[float, int]], t0: float) -> None:
        self._inner, self._events, self._t0 = inner, events, t0

    def __getattr__(self, name: str) -> Any:  # sync() and whatever else mover adds
        return getattr(self._inner, name)

    def __call__(self, offset: int, data: Any) -> Any:
        results = self._inner(offset, data)
        self._events.append((time.monotonic() - self._t0, len(data)))
        return results


class _TimedSink:
    def __init__(self, inner: Any, events: list[tuple[float, int]], t0: float) -> None:
        self._inner, self._events, self._t0 = inner, events, t0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def has(self, digest: bytes) -> bool:
        return bool(self._inner.has(digest))

    def put(self, digest: bytes, block: Any) -> int:
        stored = int(self._inner.put(digest, block))
        if stored:
            self._events.append((time.monotonic() - self._t0, stored))
        return stored
