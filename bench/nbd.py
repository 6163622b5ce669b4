"""The NBD transport beside ``/folder``, in the same run (``--no-nbd`` skips it).

Measured, on one HTTPS lab (VDDK pins certificates, so NBD runs against TLS):

- fetch limits (1, 4 and 8 reads in flight): mover's NBD client reading a local image from
  nbdkit's file plugin (the client and nbdkit alone: no VDDK, no network), and ``/folder``
  read by mover's ``FolderTransport`` from the lab;
- ``mover backup`` full and incremental through ``--transport folder`` and ``nbd`` (the
  stand-in: nbdkit's Python plugin re-reading ``/folder``, the lab's path and not a
  production figure): wall time and CPU seconds (mover and its nbdkit: GNU time counts
  reaped children) per GiB read.

``python -m bench.nbd --size-mib 512`` runs this part alone.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from bench.runs import mover_backup
from mover.pipeline.folder import FolderTransport
from mover.pipeline.nbd import NbdTransport, unix
from mover.pipeline.transport import Transport
from mover_lab import Lab
from mover_lab.nbdkit import nbdkit

MiB, GiB = 1 << 20, 1 << 30
STANDIN = Path(__file__).resolve().parent.parent / "scripts" / "vddk-standin"
READ = 4 * MiB


async def _drain(transport: Transport, size: int, concurrency: int) -> float:
    """GiB/s reading the first ``size`` bytes in 4 MiB reads, ``concurrency`` at once."""
    offsets = list(range(0, size - READ + 1, READ))
    t0 = time.perf_counter()

    async def worker(start: int) -> None:
        buf = memoryview(bytearray(READ))
        for offset in offsets[start::concurrency]:
            await transport.read_into(offset, buf)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return len(offsets) * READ / (time.perf_counter() - t0) / GiB


async def _nbd_limit(sock: Path, size: int, concurrency: int) -> float:
    t = await NbdTransport(unix(str(sock)), "bench", max_readers=concurrency).open()
    try:
        return await _drain(t, size, concurrency)
    finally:
        await t.close()


async def _folder_limit(lab: Lab, flat: str, size: int, concurrency: int) -> float:
    class Basic:
        value = ""

        async def refresh(self, stale: str) -> str:
            return ""

    basic = base64.b64encode(f"{lab.user}:{lab.password}".encode()).decode()
    url = URL(lab.folder_url(flat).replace("http://", "https://"), encoded=True)
    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {basic}"},
                                     connector=aiohttp.TCPConnector(ssl=False)) as http:
        t = FolderTransport(http, url, size, concurrency, Basic(), "unused", False)
        return await _drain(t, size, concurrency)


def run(work: Path, size: int, log: Any = print) -> dict[str, Any]:
    out: dict[str, Any] = {"size": size, "read": READ}
    lab = Lab.start(work / "nbd-lab", tls=True)
    try:
        vm = "bench-nbd"
        disk = lab.create_vm(vm, [{"capacity": size, "type": "thin"}])["disks"][0]
        rng = random.Random(9)
        image = work / "nbd.img"
        with image.open("wb") as f:   # half random, half text: some of it compresses
            for offset in range(0, size, 8 * MiB):
                piece = rng.randbytes(4 * MiB) + (b"log line %d\n" % offset) * (4 * MiB // 10)
                f.write(piece[:8 * MiB])
        lab.load(vm, 2000, image)
        log(f"nbd: fetch limits on a {size // MiB} MiB disk")
        for c in (1, 4, 8):
            sock = work / f"nbd-{c}.sock"
            with nbdkit(sock, "--readonly", "file", image):
                out[f"nbd_client_file_plugin_gib_s_c{c}"] = asyncio.run(
                    _nbd_limit(sock, size, c))
            out[f"folder_gib_s_c{c}"] = asyncio.run(
                _folder_limit(lab, disk["flatFile"], size, c))
        nbd_args = ("--thumbprint", str(lab.thumbprint), "--nbdkit-plugin", str(STANDIN))
        for transport in ("folder", "nbd"):
            repo = work / f"repo-{transport}"
            extra = (*nbd_args, "--transport", transport)
            log(f"nbd: full and incremental through --transport {transport}")
            full = mover_backup(lab, vm, repo, *extra)
            for _ in range(8):    # 8 scattered 1 MiB writes, as a day of a small VM
                lab.write(vm, 2000, rng.randrange(0, size // MiB) * MiB, rng.randbytes(MiB))
            incr = mover_backup(lab, vm, repo, *extra)
            for name, r in (("full", full), ("incremental", incr)):
                gib = max(r["bytes_read"], 1) / GiB
                out[f"{transport}_{name}"] = {
                    "wall": r["wall"], "cpu": r["cpu"], "bytes_read": r["bytes_read"],
                    "cpu_s_per_gib": r["cpu"] / gib, "mb_s": r["mb_s"], "mode": r["mode"]}
    finally:
        lab.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.nbd", description=__doc__)
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--work", type=Path, default=Path("/var/tmp"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mover-bench-nbd-", dir=args.work))
    try:
        result = run(work, args.size_mib * MiB,
                     lambda m: print(f"bench {m}", file=sys.stderr, flush=True))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
