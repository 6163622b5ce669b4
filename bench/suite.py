"""The whole benchmark, in the order that keeps every comparison on the same bytes:

images -> limits -> mover fulls -> stage timeline -> scaling -> peers' fulls and the curl
baseline -> change sets (each applied to the lab disk and the image file, then mover and
every peer back up again) -> the random and zero-heavy disks -> the 64 GiB disk (--large).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zstandard

from bench import images, limits, nbd, peers, report, restore, s3, scale, worker
from bench.runs import (
    Timeline,
    mover_backup,
    mover_forget,
    mover_gc,
    old_mover,
    pipeline,
    planned_reads,
    spread,
)
from mover import chunk
from mover.extents import Extent, align, total
from mover_lab import Lab

MiB = 1 << 20
GiB = 1 << 30
BLOCK = MiB
MAX_READ = 4 * MiB
FETCHERS = 8  # mover's default
PEER_SEEDS = {11, 21, 31}  # the change sets the peers back up after (one per fraction)
FORMAT1_REV = "0e3d3d7"    # the last commit with repository format 1 (one file per chunk)
# A real host's /folder (docs/performance.md): ~100 MB/s per connection, a 1 Gbit/s link.
ESXI_CONNECTION_BPS = 100_000_000
ESXI_LINK_BPS = 125_000_000


def log(msg: str) -> None:
    print(f"bench {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


class Suite:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.capacity = args.size_gib * GiB
        self.runs = max(1, args.runs)
        self.r: dict[str, Any] = {
            "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform()},
            "runs": self.runs, "images": {}, "backups": {}, "peers_missing": {}, "cases": {}}

    def main(self) -> int:
        t0 = time.monotonic()
        args = self.args
        args.work.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="mover-bench-", dir=args.work))
        log(f"work directory {self.work}")
        self.lab = Lab.start(self.work / "lab")
        try:
            self.realistic()
            if not getattr(args, "no_s3", True):
                self.r["s3"] = s3.run(self.lab, self.image, self.capacity, self.work)
            if not getattr(args, "no_scale", True):
                self.r["scale"] = scale.compare()
            if not args.no_restore:
                restore.run(self)
            if not args.no_cases:
                self.cases()
            if not args.no_esxi:
                self.esxi_like()
            if not args.no_worker:
                self.r["worker"] = worker.run(self.lab, self.work)
            if args.large:
                self.large()
            if not args.no_nbd:
                log("the NBD transport beside /folder (bench/nbd.py)")
                self.r["nbd"] = nbd.run(self.work, min(self.capacity, 2 * GiB), log)
        finally:
            self.lab.stop()
            if not args.keep:
                shutil.rmtree(self.work, ignore_errors=True)
        self.r["seconds"] = time.monotonic() - t0
        self.summarize()
        report.write(self.r, args.out)
        return 0

    # -- the realistic disk -------------------------------------------------------------

    def realistic(self) -> None:
        lab, cap = self.lab, self.capacity
        self.image = self.work / "realistic.img"
        log(f"building a {cap // GiB} GiB realistic disk (mkfs.ext4 -d of real directories)")
        info = images.realistic(self.image, cap, 0.35, self.work)
        self.r["images"]["realistic"] = info
        vm = "bench-real"
        disk = lab.create_vm(vm, [{"capacity": cap, "type": "thin"}])["disks"][0]
        self.flat = disk["flatFile"]
        lab.load(vm, 2000, self.image)
        extents = images.data_extents(self.image)
        self.extents = extents
        reads = planned_reads(extents, cap, BLOCK, MAX_READ)
        self.reads = reads
        log(f"allocated {info['allocated'] / GiB:.2f} GiB, planned reads {total(reads) / GiB:.2f}"
            " GiB")

        url = lab.folder_url(self.flat)
        log("limits: fetch")
        lim: dict[str, Any] = {"fetch": limits.fetch(url, lab.user, lab.password, reads,
                                                     [1, 2, 4, 8, 16], lab.pid)}
        lim["curl_mb_s"] = limits.curl_one_stream(url, lab.user, lab.password, reads, self.work)
        log("limits: CPU")
        blocks = limits.sample_blocks(self.image, reads, BLOCK, 768 * MiB)
        lim["cpu"] = limits.cpu(blocks, 3, [1, 2])
        log("limits: write")
        lim["write"] = limits.write(self.work)
        self.r["limits"] = lim

        # Rounds: the CPU and fetch limits, mover's full and each peer's full, interleaved,
        # so that noise from the rest of the machine falls on all of them alike; the bound
        # of each round comes from that round's limits, and medians are taken over rounds.
        self.setup_peers()
        self.format1 = old_mover(FORMAT1_REV, self.work / "format1")
        self.r["backups"]["mover format 1"] = []
        repo = self.work / "repo-0"
        runs: list[dict[str, Any]] = []
        rounds: list[dict[str, Any]] = []
        for i in range(self.runs):
            log(f"round {i + 1}/{self.runs}: limits")
            lim_i = {"cpu": limits.cpu(blocks, 3, [1, 2], only=["block_work"]),
                     "fetch": limits.fetch(url, lab.user, lab.password, reads, [FETCHERS],
                                           lab.pid),
                     "write": lim["write"]}
            repo = self.work / f"repo-{i}"  # kept: see runs.pipeline on deleting
            log(f"round {i + 1}/{self.runs}: mover full")
            run = mover_backup(lab, vm, repo, "--full")
            run.update(label=f"full {i + 1}", fraction=1.0)
            runs.append(run)
            bound_i = limits.bound(lim_i, FETCHERS, run["bytes_stored"] / run["bytes_read"])
            rounds.append({"limits": lim_i, "bound": bound_i})
            log(f"  {run['wall']:.1f} s, {run['mb_s']:.0f} MB/s read, bound "
                f"{bound_i['mb_s']:.0f} ({bound_i['limited_by']}), RSS "
                f"{run['maxrss_mib']:.0f} MiB, {run['repo_files']} files")
            if self.format1 is not None:
                log(f"round {i + 1}/{self.runs}: mover format 1 full (commit {FORMAT1_REV})")
                old = mover_backup(lab, vm, self.work / f"repo-v1-{i}", "--full",
                                   code=self.format1)
                old.update(label=f"full {i + 1}", fraction=1.0)
                self.r["backups"]["mover format 1"].append(old)
                log(f"  {old['wall']:.1f} s, {old['repo_files']} files")
            self.peers_full_round(i)
        del blocks
        self.r["backups"]["mover"] = runs
        self.r["rounds"] = rounds
        stored_ratio = runs[-1]["bytes_stored"] / runs[-1]["bytes_read"]
        self.r["bound"] = limits.bound(lim, FETCHERS, stored_ratio)
        self.r["bound"]["mb_s"] = report.median([b["bound"]["mb_s"] for b in rounds])
        self.r["bound"]["note"] = ("mb_s: median of the rounds' bounds; parts: from the "
                                   "limits measured once at the start")
        log(f"bound {self.r['bound']['mb_s']:.0f} MB/s (median of rounds)")

        log("pipeline in-process with a per-stage timeline")
        tl = Timeline()
        inproc = pipeline(lab, self.flat, cap, reads, BLOCK, self.work / "repo-inproc",
                          FETCHERS, tl)
        self.r["inprocess"] = inproc
        self.r["timeline"] = {"fetch": tl.fetch, "process": tl.process, "store": tl.store}

        self.scaling()
        self.baseline()
        self.changes(repo, vm)
        self.collect(repo)

    def collect(self, repo: Path) -> None:
        """forget every backup but the newest, then gc (what packs cost to collect)."""
        log("forget --keep-last 1, gc")
        forgot = mover_forget(repo, "--keep-last", "1")
        run = mover_gc(repo, "--repack-threshold", "0.5")
        self.r["gc"] = {"forget_wall": forgot["wall"],
                        "forgotten": len(forgot["result"]["forgotten"]), **run}
        log(f"  gc {run['wall']:.1f} s, RSS {run['maxrss_mib']:.0f} MiB, freed "
            f"{run['report']['bytes_freed'] / MiB:.0f} MiB")

    def scaling(self) -> None:
        log("scaling: fetchers and block sizes")
        sample_gib = GiB // 2
        sc: dict[str, dict[str, float]] = {"fetchers": {}, "block_size": {}}
        sample = spread(self.reads, sample_gib)
        for f in [1, 2, 4, 8, 16, 32]:
            res = pipeline(self.lab, self.flat, self.capacity, sample, BLOCK,
                           self.work / f"repo-scale-f{f}", f)
            sc["fetchers"][str(f)] = res["mb_s"]
        for bs in [256 * 1024, 512 * 1024, MiB, 2 * MiB, 4 * MiB, 8 * MiB]:
            max_read = max(MAX_READ, bs)
            reads = spread(planned_reads(self.extents, self.capacity, bs, max_read), sample_gib)
            res = pipeline(self.lab, self.flat, self.capacity, reads, bs,
                           self.work / f"repo-scale-b{bs}", FETCHERS, max_read=max_read)
            sc["block_size"][str(bs // 1024)] = res["mb_s"]
        self.r["scaling"] = sc

    # -- peers ---------------------------------------------------------------------------

    def setup_peers(self) -> None:
        self.peers: list[tuple[peers.Peer, Path]] = []
        if self.args.no_peers:
            return
        for cls in peers.PEERS:
            if not cls.available():
                self.r["peers_missing"][cls.name] = peers.WHY_MISSING.get(
                    cls.name, f"{cls.binary} is not installed")
                continue
            peer = cls(self.work)
            self.peers.append((peer, self.work / f"repo-{peer.name}"))
            self.r["backups"][peer.name] = []
            self.r.setdefault("peer_settings", {})[peer.name] = {
                "version": peer.version(), "settings": peer.settings}

    def peers_full_round(self, i: int) -> None:
        for n, (peer, _) in enumerate(self.peers):
            repo = self.work / f"repo-{peer.name}-{i}"
            self.peers[n] = (peer, repo)  # the last round's repository takes the increments
            peer.init(repo)
            log(f"round {i + 1}/{self.runs}: {peer.name} full")
            run = peer.backup(repo, self.image, f"full{i}")
            run.update(label=f"full {i + 1}", fraction=1.0, capacity=self.capacity,
                       logical_mb_s=self.capacity / run["wall"] / 1e6)
            run["mb_s"] = run["logical_mb_s"]
            run["repo_growth"] = run["repo_bytes"]
            self.r["backups"][peer.name].append(run)
            log(f"  {run['wall']:.1f} s")

    def baseline(self) -> None:
        log("baseline: curl | tee >(sha256sum) | zstd")
        lab = self.lab
        config = limits.curl_config(lab.folder_url(self.flat), lab.user, lab.password,
                                    self.reads, self.work / "curl-stdout.cfg", False)
        runs = []
        for i in range(1):  # a reference point, not a target: once is enough
            res = peers.curl_zstd_sha(config, self.work / "baseline.zst", 3)
            read = total(self.reads)
            runs.append({"label": f"full {i + 1}", "wall": res["wall"], "bytes_read": read,
                         "mb_s": read / res["wall"] / 1e6, "fraction": 1.0,
                         "logical_mb_s": self.capacity / res["wall"] / 1e6,
                         "repo_growth": res["bytes"], "maxrss_mib": 0.0, "cpu": res["cpu"]})
            log(f"  {res['wall']:.1f} s")
        self.r["backups"]["curl|zstd|sha256sum"] = runs

    # -- change sets ---------------------------------------------------------------------

    def changes(self, repo: Path, vm: str) -> None:
        # 1% rounds with the default canary and, interleaved, without it (canary_cost_s)
        plan: list[tuple[float, int, tuple[str, ...]]] = [(0.001, 11, ())]
        for i in range(self.runs):
            plan += [(0.01, 21 + i, ()), (0.01, 51 + i, ("--no-canary",))]
        plan.append((0.1, 31, ()))
        comp = zstandard.ZstdCompressor(level=3)
        for fraction, seed, extra in plan:
            writes = images.change_set(self.image, self.capacity, fraction, seed)
            log(f"change set {fraction * 100:g}% ({len(writes)} writes)")
            for w in writes:
                self.lab.write(vm, 2000, w.offset, w.data)
            images.apply_local(self.image, writes)
            changed = [Extent(s, e - s) for s, e in images.changed_extents(writes)]
            blocks = align(changed, BLOCK, self.capacity)
            expected = 0
            with self.image.open("rb") as f:
                for ext in blocks:
                    for off in range(ext.start, ext.end, BLOCK):
                        f.seek(off)
                        data = f.read(BLOCK)
                        if not chunk.is_zero(data):
                            expected += len(chunk.encode(data, comp))
            run = mover_backup(self.lab, vm, repo, *extra)
            meta = sum(p.stat().st_size for p in repo.glob(f"backups/*/{run['backup_id']}/*"))
            fetched = run["bytes_read"] - run["canary_bytes"]
            run.update(label=f"incr {fraction * 100:g}%" + (" no canary" if extra else ""),
                       fraction=fraction,
                       changed_blocks_bytes=total(blocks), expected_growth=expected + meta,
                       read_amplification=run["bytes_read"] / max(1, total(blocks)),
                       # bytes fetched for the changes (not the canary) / CBT's changed bytes
                       fetch_amplification=fetched / max(1, run["changed_bytes"]),
                       fetch_amplification_with_canary=run["bytes_read"]
                       / max(1, run["changed_bytes"]))
            run["growth_ratio"] = run["repo_growth"] / max(1, run["expected_growth"])
            self.r["backups"]["mover"].append(run)
            log(f"  mover {run['wall']:.2f} s, read {run['bytes_read'] / MiB:.0f} MiB of "
                f"{total(blocks) / MiB:.0f} MiB changed blocks")
            if seed not in PEER_SEEDS:
                continue  # peers read the whole image each time: once per fraction is enough
            for peer, prepo in self.peers:
                res = peer.backup(prepo, self.image, f"incr-{seed}")
                res.update(label=f"incr {fraction * 100:g}%", fraction=fraction,
                           capacity=self.capacity,
                           logical_mb_s=self.capacity / res["wall"] / 1e6)
                res["mb_s"] = res["logical_mb_s"]
                self.r["backups"][peer.name].append(res)
                log(f"  {peer.name} {res['wall']:.1f} s")

    # -- a network-bound host ------------------------------------------------------------

    def esxi_like(self) -> None:
        """The realistic disk behind /folder throttled like a real ESXi host: a full, then
        1% incrementals (medians of the rounds), where the link, not the CPU, is the limit."""
        lab, vm = self.lab, "bench-real"
        lab.configure(folderConnectionBps=ESXI_CONNECTION_BPS, folderTotalBps=ESXI_LINK_BPS)
        try:
            repo = self.work / "repo-esxi"
            log("ESXi-like: mover full behind a 100 MB/s-per-connection, 1 Gbit/s /folder")
            full = mover_backup(lab, vm, repo, "--full")
            full.update(label="full", link_mb_s=ESXI_LINK_BPS / 1e6)
            log(f"  {full['wall']:.1f} s, {full['mb_s']:.0f} MB/s")
            runs = [full]
            for i in range(self.runs):
                writes = images.change_set(self.image, self.capacity, 0.01, 41 + i)
                for w in writes:
                    lab.write(vm, 2000, w.offset, w.data)
                images.apply_local(self.image, writes)
                run = mover_backup(lab, vm, repo)
                run.update(label="incr 1%", fraction=0.01)
                runs.append(run)
                log(f"  incr 1%: {run['wall']:.2f} s (canary {run['canary_seconds']:.2f} s)")
            self.r["esxi_like"] = runs
        finally:
            lab.configure(folderConnectionBps=0, folderTotalBps=0)

    # -- other disks ---------------------------------------------------------------------

    def case(self, name: str, image: Path, capacity: int, kind: str) -> None:
        vm = f"bench-{name}"
        self.lab.create_vm(vm, [{"capacity": capacity, "type": kind}])
        self.lab.load(vm, 2000, image)
        image.unlink()
        repo = self.work / f"repo-{name}"
        log(f"mover full of the {name} disk")
        run = mover_backup(self.lab, vm, repo)
        log(f"  {run['wall']:.1f} s, {run['mb_s']:.0f} MB/s read, RSS {run['maxrss_mib']:.0f}")
        self.r["cases"][name] = run
        self.lab.delete_vm(vm)

    def cases(self) -> None:
        cap = self.capacity
        log("building the all-random disk")
        img = self.work / "random.img"
        self.r["images"]["random"] = images.all_random(img, cap)
        self.case("random", img, cap, "thin")
        img = self.work / "zero.img"
        self.r["images"]["zero-heavy"] = images.zero_heavy(img, cap, self.image)
        self.case("zero-heavy", img, cap, "eagerZeroedThick")

    def large(self) -> None:
        cap = 64 * GiB
        img = self.work / "large.img"
        log("building the 64 GiB disk (about 10% allocated)")
        self.r["images"]["large"] = images.realistic(img, cap, 0.10, self.work)
        self.case("large-64g", img, cap, "thin")

    # -- summary -------------------------------------------------------------------------

    def summarize(self) -> None:
        r = self.r
        med = report.median
        mover = r["backups"]["mover"]
        fulls = [x for x in mover if x["label"].startswith("full")]
        incr1 = [x for x in mover if x["label"] == "incr 1%"]
        full_wall = med([x["wall"] for x in fulls])
        full_read = med([x["bytes_read"] for x in fulls])
        peer_walls = {name: med([x["wall"] for x in runs if x["label"].startswith("full")])
                      for name, runs in r["backups"].items()
                      if name not in ("mover", "mover format 1", "curl|zstd|sha256sum")}
        best = min(peer_walls, key=lambda k: peer_walls[k]) if peer_walls else None
        full_mb_s = full_read / full_wall / 1e6
        large = r["cases"].get("large-64g")
        v1 = [x for x in r["backups"].get("mover format 1", []) if x["label"].startswith("full")]
        gc = r.get("gc")
        r["summary"] = {
            "full_mb_s": full_mb_s,
            "full_logical_mb_s": self.capacity / full_wall / 1e6,
            "full_copy_mb_s": med([x["bytes_read"] / x["copy_seconds"] / 1e6 for x in fulls]),
            "full_wall_s": full_wall,
            "full_bytes_read": full_read,
            "bound_mb_s": r["bound"]["mb_s"],
            "bound_limited_by": r["bound"]["limited_by"],
            "full_vs_bound": full_mb_s / r["bound"]["mb_s"],
            "best_peer": best,
            "best_peer_mb_s": self.capacity / peer_walls[best] / 1e6 if best else None,
            "best_peer_wall_s": peer_walls[best] if best else None,
            "full_vs_best_peer": peer_walls[best] / full_wall if best else None,
            "incr_1pct_time_ratio": med([x["wall"] for x in incr1]) / full_wall,
            "incr_1pct_read_amplification": med([x["read_amplification"] for x in incr1]),
            "incr_1pct_fetch_amplification": med([x["fetch_amplification"] for x in incr1]),
            "incr_1pct_fetch_amplification_with_canary": med(
                [x["fetch_amplification_with_canary"] for x in incr1]),
            # the extra wall time of the default canary: 1% incrementals with it against
            # those without it, interleaved (it reads beside the copy, so its own duration,
            # canary_read_s, overstates what it adds)
            "canary_cost_s": med([x["wall"] for x in incr1]) - med(
                [x["wall"] for x in mover if x["label"] == "incr 1% no canary"]),
            "canary_read_s": med([x["canary_seconds"] for x in incr1]),
            "canary_blocks": med([x["canary_blocks"] for x in incr1]),
            "incr_1pct_wall_s": med([x["wall"] for x in incr1]),
            "incr_1pct_repo_growth_ratio": med([x["growth_ratio"] for x in incr1]),
            "peak_rss_mib_8g": max(x["maxrss_mib"] for x in mover),
            "peak_rss_mib_64g": large["maxrss_mib"] if large else None,
            "cpu_s_per_gib_read": med([x["cpu"] / (x["bytes_read"] / GiB) for x in fulls]),
            "cpu_s_per_gib_stored": med([x["cpu"] / (x["bytes_stored"] / GiB) for x in fulls]),
            "format1_cpu_s_per_gib_stored": med([x["cpu"] / (x["bytes_stored"] / GiB)
                                                 for x in v1]) if v1 else None,
            "format1_full_wall_s": med([x["wall"] for x in v1]) if v1 else None,
            "full_repo_files": fulls[0]["repo_files"],
            "full_chunks": fulls[0]["new_chunks"],
            "format1_full_repo_files": v1[0]["repo_files"] if v1 else None,
            "gc_wall_s": gc["wall"] if gc else None,
            "gc_peak_rss_mib": gc["maxrss_mib"] if gc else None,
        }
        r["summary"].update(r.get("restore", {}).get("summary", {}))
        esxi = r.get("esxi_like")
        if esxi:
            full, incrs = esxi[0], esxi[1:]
            r["summary"].update({
                "esxi_like_link_mb_s": ESXI_LINK_BPS / 1e6,
                "esxi_like_full_mb_s": full["mb_s"],
                "esxi_like_full_vs_link": full["bytes_read"] / full["wall"] / ESXI_LINK_BPS,
                "esxi_like_incr_1pct_time_ratio": med([x["wall"] for x in incrs])
                / full["wall"],
                "esxi_like_incr_1pct_wall_s": med([x["wall"] for x in incrs]),
                "esxi_like_canary_cost_s": med([x["canary_seconds"] for x in incrs]),
            })
        if r.get("worker"):
            r["summary"].update(worker.summary(r["worker"]))
        if self.capacity != 8 * GiB:
            r["summary"]["note"] = f"disk size {self.capacity // GiB} GiB, not the default 8"
        json.dumps(r["summary"])  # fail early on anything that is not JSON
