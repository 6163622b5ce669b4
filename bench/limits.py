"""The limits of each stage, measured on the blocks mover reads, and the pipeline's bound.

- fetch: raw ``/folder`` Range GETs of the planned reads (aiohttp at several concurrencies,
  bodies discarded; ``curl`` for one stream), with the CPU seconds they cost the client and
  the lab (both run on this machine, so that CPU is not available to the other stages);
- CPU: SHA-256, zstd (the repository's level) and the whole per-block work (zero check,
  digest, compress) on 1 MiB blocks sampled evenly from the planned reads, 1 and 2 threads;
- write: sequential write throughput of the repository's file system (1 MiB writes, fsync).

The bound is the slowest of: best fetch rate, the CPU stage with every core, the write rate
scaled by the compression ratio, and the *shared-core* bound ``cores / (CPU seconds per byte
of fetch + CPU work + write)``: the stages share this machine's cores with each other and
with the lab, so they cannot each run at their isolated rate at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import zstandard

from mover import chunk
from mover.extents import Extent

MiB = 1 << 20


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def _fetch(url: str, auth: aiohttp.BasicAuth, reads: list[Extent], concurrency: int) -> int:
    connector = aiohttp.TCPConnector(limit=concurrency)
    got = 0
    async with aiohttp.ClientSession(connector=connector, auth=auth) as http:
        pending = iter(reads)

        async def worker() -> None:
            nonlocal got
            for r in pending:
                headers = {"Range": f"bytes={r.start}-{r.end - 1}"}
                async with http.get(url, headers=headers) as resp:
                    if resp.status != 206:
                        raise RuntimeError(f"GET {r}: HTTP {resp.status}")
                    async for piece in resp.content.iter_any():
                        got += len(piece)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return got


def fetch(url: str, user: str, password: str, reads: list[Extent], concurrencies: list[int],
          lab_pid: int) -> dict[str, Any]:
    """MB/s of raw Range GETs at each concurrency, and CPU seconds per GiB (client, lab)."""
    import uvloop

    out: dict[str, Any] = {"aiohttp": {}, "cpu_s_per_gib": {}}
    auth = aiohttp.BasicAuth(user, password)
    for c in concurrencies:
        cpu0, lab0, t0 = self_cpu(), proc_cpu(lab_pid), time.monotonic()
        got = uvloop.run(_fetch(url, auth, reads, c))
        seconds = time.monotonic() - t0
        out["aiohttp"][str(c)] = got / seconds / 1e6
        gib = got / (1 << 30)
        out["cpu_s_per_gib"][str(c)] = {"client": (self_cpu() - cpu0) / gib,
                                        "lab": (proc_cpu(lab_pid) - lab0) / gib}
    out["bytes"] = sum(r.length for r in reads)
    return out


def curl_config(url: str, user: str, password: str, reads: list[Extent], path: Path,
                discard: bool) -> Path:
    """A curl config reading every planned range, one operation per range (curl reuses the
    connection), each body to /dev/null (``discard``) or all of them to stdout."""
    with path.open("w") as f:
        f.write("silent\nshow-error\n")
        for i, r in enumerate(reads):
            if i:
                f.write("next\n")
            f.write(f'fail\nuser = "{user}:{password}"\nurl = "{url}"\n'
                    f"range = {r.start}-{r.end - 1}\n")
            if discard:
                f.write('output = "/dev/null"\n')
    return path


def curl_one_stream(url: str, user: str, password: str, reads: list[Extent],
                    work: Path) -> float:
    """MB/s of one curl process reading every planned range over one kept-alive connection."""
    config = curl_config(url, user, password, reads, work / "curl-ranges.cfg", True)
    t0 = time.monotonic()
    subprocess.run(["curl", "-K", str(config)], check=True)
    return sum(r.length for r in reads) / (time.monotonic() - t0) / 1e6


def sample_blocks(image: Path, reads: list[Extent], block_size: int, limit: int) -> list[bytes]:
    """Up to ``limit`` bytes of blocks taken evenly from the planned reads of ``image``."""
    offsets = [b for r in reads for b in range(r.start, r.end, block_size)]
    step = max(1, len(offsets) * block_size // limit)
    out = []
    with image.open("rb") as f:
        for off in offsets[::step]:
            f.seek(off)
            out.append(f.read(block_size))
    return out


def _rate(blocks: list[bytes], threads: int, work: Any) -> float:
    """MB/s of ``work(block)`` over ``blocks`` split between ``threads`` threads."""
    def run(part: list[bytes]) -> None:
        for b in part:
            work(b)

    parts = [blocks[i::threads] for i in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        t0 = time.monotonic()
        list(pool.map(run, parts))
        seconds = time.monotonic() - t0
    return sum(len(b) for b in blocks) / seconds / 1e6


def cpu(blocks: list[bytes], level: int, threads: list[int],
        only: list[str] | None = None) -> dict[str, Any]:
    """Per-block CPU work rates (MB/s of input) at each thread count."""
    local: dict[int, zstandard.ZstdCompressor] = {}

    def compressor() -> zstandard.ZstdCompressor:
        key = os_thread()
        if key not in local:
            local[key] = zstandard.ZstdCompressor(level=level)
        return local[key]

    def sha(b: bytes) -> None:
        hashlib.sha256(b).digest()

    def zstd(b: bytes) -> None:
        compressor().compress(b)

    def whole(b: bytes) -> None:  # what BlockProcessor does per block, minus the store
        if not chunk.is_zero(b):
            chunk.digest(b)
            chunk.encode(b, compressor())

    out: dict[str, Any] = {"level": level, "sample_bytes": sum(len(b) for b in blocks)}
    nonzero = [b for b in blocks if not chunk.is_zero(b)]
    out["nonzero_fraction"] = len(nonzero) / max(1, len(blocks))
    comp = zstandard.ZstdCompressor(level=level)
    out["ratio"] = sum(len(comp.compress(b)) for b in nonzero) / max(1, sum(map(len, nonzero)))
    for name, fn, data in (("sha256", sha, nonzero), ("zstd", zstd, nonzero),
                           ("block_work", whole, blocks)):
        if only is not None and name not in only:
            continue
        out[name] = {str(t): _rate(data, t, fn) for t in threads}
    return out


def os_thread() -> int:
    import threading

    return threading.get_ident()


def write(directory: Path, size: int = 1 << 30) -> dict[str, float]:
    """Sequential write of ``size`` bytes in 1 MiB writes, then fsync: MB/s and CPU s/GiB."""
    path = directory / "write-test.bin"
    block = os.urandom(MiB)
    cpu0, t0 = self_cpu(), time.monotonic()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(size // MiB):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    seconds = time.monotonic() - t0
    cpu_used = self_cpu() - cpu0
    path.unlink()
    return {"mb_s": size / seconds / 1e6, "cpu_s_per_gib": cpu_used / (size / (1 << 30))}


def bound(limits: dict[str, Any], fetchers: int, stored_ratio: float) -> dict[str, Any]:
    """The pipeline's bound in MB/s of bytes read, and which limit sets it.

    ``stored_ratio`` is bytes written to the repository per byte read (measured by mover's
    own full backup of the same disk)."""
    cores = os.cpu_count() or 1
    fetch_rates = limits["fetch"]["aiohttp"]
    best_fetch = max(fetch_rates.values())
    cpu_stage = limits["cpu"]["block_work"]
    cpu_all = cpu_stage[str(max(int(t) for t in cpu_stage))]
    cpu_one = cpu_stage["1"]
    write_rate = limits["write"]["mb_s"] / max(stored_ratio, 1e-9)
    cpu_fetch = limits["fetch"]["cpu_s_per_gib"][str(fetchers)]
    fetch_s = (cpu_fetch["client"] + cpu_fetch["lab"]) / (1 << 30) * 1e6   # CPU s per MB
    work_s = 1 / cpu_one                                                   # CPU s per MB
    write_s = limits["write"]["cpu_s_per_gib"] * stored_ratio / (1 << 30) * 1e6
    shared = cores / (fetch_s + work_s + write_s)
    parts = {"fetch": best_fetch, "cpu": cpu_all, "write": write_rate, "shared_cores": shared}
    limit = min(parts, key=lambda k: parts[k])
    return {"mb_s": parts[limit], "limited_by": limit, "parts": parts,
            "cpu_s_per_mb": {"fetch": fetch_s, "work": work_s, "write": write_s},
            "cores": cores}
