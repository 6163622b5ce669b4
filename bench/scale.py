"""The scale model of docs/scale.md, and a small simulation that checks it.

``model(p)`` predicts, from a handful of parameters, what a fleet of backups asks of an
object store: objects, requests, bytes, index and cache sizes, gc's work. ``simulate(p)``
runs the same fleet scaled down through mover's real repository code (``Repository``,
packs, journals, leased locks, gc) on an in-memory store that counts every request, and
reports the same quantities; ``python -m bench.scale`` prints both side by side (scaled
blocks, packs and checkpoints keep the real ratios: 16 blocks a pack, 64 blocks a sync).
Then it prints the model at 500 VMs x 2 TiB.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40


@dataclass(frozen=True)
class Fleet:
    vms: int = 500
    capacity: int = 2 * TiB
    allocated: float = 0.5          # of the capacity, at the first full
    change: float = 0.03            # of the capacity, per day, in whole changed blocks
    compression: float = 0.5        # stored bytes / block bytes
    block: int = MiB
    pack: int = 16 * MiB            # PACK_TARGET
    sync: int = 64 * MiB            # --checkpoint-every
    keep_days: int = 30             # backups kept per VM (forget --keep-daily 30)
    workers: int = 12
    window_h: float = 8.0           # the nightly backup window
    request_s: float = 0.02         # one small request's latency (lab RGW: 19 ms PUT)
    list_s_per_1000: float = 0.26   # LIST of 1,000 keys (lab RGW)


def model(f: Fleet) -> dict[str, float]:
    """Per day unless named otherwise; sizes in bytes."""
    blocks = f.capacity // f.block
    changed = math.ceil(blocks * f.change)                 # changed blocks per VM per day
    read = changed * f.block                               # per VM per day
    stored = read * f.compression
    syncs = max(1, math.ceil(read / f.sync))
    # a sync writes the open pack however small, so packs per backup: the larger of the two
    packs = max(math.ceil(stored / f.pack), syncs)
    disk_index = 4096 + 32 * blocks
    backup_s = f.window_h * 3600 * f.workers / f.vms      # each worker's share of the window
    renewals = 2 * backup_s / 60                           # two locks, renewed every minute
    # pack + index per pack, a journal segment per sync, checkpoint, disk index, record,
    # two lock objects (renewals counted apart: HEAD + PUT each)
    puts = packs * 2 + syncs + 3 + 2
    heads = syncs + 2 * 2                                  # checks, acquires
    first_full_chunks = blocks * f.allocated
    total_chunks = first_full_chunks + changed * f.keep_days
    total_packs = (first_full_chunks * f.block * f.compression / f.pack
                   + packs * f.keep_days) * f.vms
    day_requests = (puts + heads + 2 * renewals + 4) * f.vms        # + LISTs, DeleteObjects
    gc_requests = gc_work(total_packs, f.vms * f.keep_days)
    return {
        "read_per_day": read * f.vms,
        "stored_per_day": stored * f.vms,
        "new_chunks_per_day": changed * f.vms,
        "packs_per_day": packs * f.vms,
        "objects_per_day": (packs * 2 + 2) * f.vms,          # packs, indexes, disk index, record
        "puts_per_day": puts * f.vms,
        "requests_per_day": day_requests,
        "requests_per_s_in_window": day_requests / (f.window_h * 3600),
        "read_mb_s_in_window": read * f.vms / (f.window_h * 3600) / 1e6,
        "per_worker_mb_s": read * f.vms / (f.window_h * 3600) / 1e6 / f.workers,
        "disk_index_bytes_per_day": disk_index * f.vms,
        "chunks_total": total_chunks * f.vms,
        "packs_total": total_packs,
        "index_objects_total": total_packs,
        "pack_index_bytes_total": 44 * total_chunks * f.vms + 56 * total_packs,
        "chunk_table_rss": 64 * total_chunks * f.vms,    # per worker, every index in memory
        "list_index_s": total_packs / 1000 * f.list_s_per_1000,   # every start
        "gc_disk_index_bytes": disk_index * f.vms * f.keep_days,
        "gc_requests": gc_requests,
        "gc_seconds": gc_requests * f.request_s + total_packs / 1000 * f.list_s_per_1000 * 2,
    }


def gc_work(packs: float, backups: float) -> float:
    """Requests of one gc: per pack its index (GET), a HEAD when listing, and its trailer
    (HEAD + 2 GETs); per kept backup its record and disk index (2 GETs)."""
    return packs * 5 + backups * 2


class CountingStore:
    """A MemoryStore that counts requests (by method) and bytes put."""

    def __init__(self) -> None:
        from mover.repo import MemoryStore
        self.inner = MemoryStore()
        self.calls: Counter[str] = Counter()
        self.put_bytes = 0

    def describe(self) -> str:
        return "counting memory store"

    def put(self, name: str, data: bytes | bytearray | memoryview, *,
            replace: bool = False) -> bool:
        self.calls["put"] += 1
        self.put_bytes += len(data)
        return self.inner.put(name, data, replace=replace)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        self.calls["get"] += 1
        return self.inner.get(name, offset, length)

    def stat(self, name: str) -> Any:
        self.calls["head"] += 1
        return self.inner.stat(name)

    def list(self, prefix: str) -> Iterator[str]:
        self.calls["list"] += 1
        return self.inner.list(prefix)

    def delete(self, name: str) -> None:
        self.calls["delete"] += 1
        self.inner.delete(name)

    def delete_many(self, names: Iterable[str]) -> None:
        self.calls["delete_many"] += 1
        self.inner.delete_many(names)


def simulate(f: Fleet, days: int) -> dict[str, Any]:
    """The fleet through mover's repository: a first full, then ``days`` incrementals a VM
    (each block changed at most once a day), then forget to ``keep_days`` and gc."""
    from mover.index import FixedIndex
    from mover.repo import BackupRecord, DiskRecord, Repository, layout
    from mover.repo.gc import collect
    from mover.repo.leases import LeasedLocks, LeaseTimes
    from mover.repo.packs import PackedChunks

    store = CountingStore()
    repo = Repository.on(store, LeasedLocks(store, LeaseTimes(), refresh_thread=False),
                         block_size=f.block, pack_target=f.pack)
    rng = random.Random(1)
    blocks = f.capacity // f.block
    half = int(f.block * f.compression)

    def block_data() -> bytes:       # compresses to about ``compression``
        return rng.randbytes(half) + bytes(f.block - half)

    parents: dict[str, FixedIndex] = {}
    per_day: list[dict[str, int]] = []
    for day in range(days + 1):
        before, put_before = Counter(store.calls), store.put_bytes
        for v in range(f.vms):
            vm = f"vm-{v:04d}"
            index = parents.get(vm)
            if index is None:
                index = FixedIndex(f.capacity, f.block)
                changed = range(int(blocks * f.allocated))
            else:
                index = index.copy()
                changed = sorted(rng.sample(range(blocks), math.ceil(blocks * f.change)))
            backup_id = f"2026{1 + day // 28:02d}{1 + day % 28:02d}T000000Z-{v:06x}"
            with repo.begin(vm, backup_id) as pending:
                pending.write_checkpoint({"format": 1, "backup_id": backup_id})
                journal, entries = pending.journal(2000), []
                for n, b in enumerate(changed, 1):
                    data = block_data()
                    digest = repo.chunks.digest(data)
                    repo.chunks.put(digest, data)
                    index.set(b, digest)
                    entries.append((b, digest))
                    if n % (f.sync // f.block) == 0:
                        repo.chunks.sync()
                        journal.append(entries)
                        entries = []
                repo.chunks.sync()
                pending.write_index(2000, index)
                pending.commit(BackupRecord(
                    id=backup_id, vm_name=vm, vm_instance_uuid=vm, vm_moref="vm-1",
                    created=f"2026-01-01T00:00:{day % 60:02d}Z", finished="2026-01-01T00:00:00Z",
                    parent=None, snapshot={}, disks=[DiskRecord(
                        key=2000, label="Hard disk 1", uuid="u", capacity=f.capacity,
                        file="[ds] f.vmdk", change_id="*", mode="full", reason="sim",
                        block_size=f.block, changed_bytes=0, bytes_read=0, bytes_stored=0,
                        blocks=blocks, zero_blocks=0, new_chunks=0, dedup_chunks=0,
                        seconds=0.0)]))
            parents[vm] = index
        calls = store.calls - before
        per_day.append({**calls, "requests": sum(calls.values()),
                        "put_bytes": store.put_bytes - put_before})
    objects = list(store.inner.list(""))
    packs = sum(1 for n in objects if n.startswith(layout.PACKS))
    index_bytes = sum(len(store.inner.get(n)) for n in objects if n.startswith(layout.INDEX))
    chunks = len(PackedChunks(store.inner, repo.codec))
    for v in range(f.vms):           # keep the newest keep_days backups of each VM
        vm = f"vm-{v:04d}"
        for record in repo.list_backups(vm)[:-f.keep_days]:
            repo.remove_backup(record)
    before = Counter(store.calls)
    t0 = time.perf_counter()
    report = collect(repo)
    gc_calls = store.calls - before
    return {"incremental_day": per_day[-1], "first_full": per_day[0], "packs": packs,
            "index_objects": sum(1 for n in objects if n.startswith(layout.INDEX)),
            "chunks": chunks, "pack_index_bytes": index_bytes,
            "gc": {**gc_calls, "requests": sum(gc_calls.values()),
                   "seconds_in_memory": time.perf_counter() - t0,
                   "packs_deleted": report.packs_deleted}}


def small() -> Fleet:
    """The simulated fleet: 16 blocks a pack and 64 a sync, as in production."""
    return Fleet(vms=20, capacity=4096 * 64 * 1024, block=64 * 1024, pack=1 * MiB,
                 sync=4 * MiB, keep_days=3)


def compare(days: int = 4) -> dict[str, Any]:
    f = small()
    predicted, measured = model(f), simulate(f, days)
    day = measured["incremental_day"]
    kept = min(days, f.keep_days)
    rows = {
        "PUTs per incremental day": (predicted["puts_per_day"], day.get("put", 0)),
        "bytes put per incremental day": (predicted["stored_per_day"]
                                          + predicted["disk_index_bytes_per_day"],
                                          day["put_bytes"]),
        "packs per incremental day": (predicted["packs_per_day"], None),
        "chunks in the repository (before gc)": (
            model(replace(f, keep_days=days))["chunks_total"], measured["chunks"]),
        "packs in the repository (before gc)": (
            model(replace(f, keep_days=days))["packs_total"], measured["packs"]),
        "pack index bytes (before gc)": (
            model(replace(f, keep_days=days))["pack_index_bytes_total"],
            measured["pack_index_bytes"]),
        f"gc requests (keeping {kept} days)": (
            gc_work(model(replace(f, keep_days=days))["packs_total"], f.vms * kept),
            measured["gc"]["requests"]),
    }
    return {"fleet": asdict(f), "days": days, "rows": rows, "measured": measured}


def markdown(result: dict[str, Any]) -> list[str]:
    """The model against the simulation, for the report."""
    lines = ["## Scale model against its simulation (docs/scale.md)", "",
             "| quantity | model | simulation | ratio |", "| --- | ---: | ---: | ---: |"]
    for name, (want, got) in result["rows"].items():
        ratio = f"{got / want:.2f}" if got and want else "-"
        lines.append(f"| {name} | {want:,.0f} | {'-' if got is None else f'{got:,.0f}'} "
                     f"| {ratio} |")
    return [*lines, ""]


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    ap.add_argument("--days", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = compare(args.days)
    result["at_scale"] = {str(w): model(Fleet(workers=w)) for w in (4, 12, 24)}
    if args.json:
        print(json.dumps(result, indent=1, default=str))
        return 0
    print(f"simulated fleet: {result['fleet']}, {args.days} incremental days")
    print("\n".join(markdown(result)))
    print(json.dumps(result["measured"], indent=1))
    print(json.dumps(result["at_scale"]["12"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
