"""The results of one run: a Markdown table on stdout, JSON, and PNG plots."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from bench import s3, scale

MB = 1e6
MiB = 1 << 20


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _f(x: Any, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def markdown(r: dict[str, Any]) -> str:
    s = r["summary"]
    lines = [f"# mover benchmark ({r['started']}, {r['machine']['cores']} cores, "
             f"{r['machine']['python']})", ""]
    img = r["images"]["realistic"]
    lines += [f"Realistic disk: {img['capacity'] / (1 << 30):.0f} GiB thin, "
              f"{img['allocated'] / (1 << 30):.2f} GiB allocated (ext4 of "
              f"{len(img['sources'])} directories of /usr); mover reads "
              f"{s['full_bytes_read'] / (1 << 30):.2f} GiB. Medians of {r['runs']} runs.", ""]
    lim = r["limits"]
    b = r["bound"]
    lines += ["## Limits (same blocks, same run)", "", "| limit | MB/s | note |",
              "| --- | ---: | --- |"]
    for c, v in lim["fetch"]["aiohttp"].items():
        cpu = lim["fetch"]["cpu_s_per_gib"][c]
        lines.append(f"| fetch aiohttp x{c} | {_f(v)} | CPU s/GiB client {cpu['client']:.2f}, "
                     f"lab {cpu['lab']:.2f} |")
    lines.append(f"| fetch curl x1 | {_f(lim['curl_mb_s'])} | one stream |")
    for name in ("sha256", "zstd", "block_work"):
        for t, v in lim["cpu"][name].items():
            note = {"sha256": "SHA-256, 1 MiB blocks", "zstd": f"zstd level "
                    f"{lim['cpu']['level']}, 1 MiB blocks",
                    "block_work": "zero check + SHA-256 + zstd, as mover"}[name]
            lines.append(f"| {name} {t} thread{'s' if t != '1' else ''} | {_f(v)} | {note} |")
    lines.append(f"| repo fs sequential write | {_f(lim['write']['mb_s'])} | 1 MiB writes + "
                 "fsync |")
    parts = b["parts"]
    lines += [f"| **bound** | **{_f(b['mb_s'])}** | limited by {b['limited_by']}: fetch "
              f"{parts['fetch']:.0f}, CPU {parts['cpu']:.0f}, write/ratio {parts['write']:.0f}, "
              f"shared cores {parts['shared_cores']:.0f} |", ""]
    lines += ["## Backups of the realistic disk", "",
              "| tool | run | wall s | MB/s read | MB/s logical | read MiB | stored/repo MiB "
              "| peak RSS MiB | CPU s |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: "
              "| ---: |"]
    for name, runs in r["backups"].items():
        for run in runs:
            read = run.get("bytes_read", run.get("capacity", 0))
            stored = run.get("repo_growth", 0)
            lines.append(f"| {name} | {run['label']} | {run['wall']:.2f} | "
                         f"{_f(run.get('mb_s'))} | {_f(run.get('logical_mb_s'))} | "
                         f"{read / MiB:,.0f} | {stored / MiB:,.1f} | {run['maxrss_mib']:.0f} | "
                         f"{run['cpu']:.1f} |")
    for name, why in r["peers_missing"].items():
        lines.append(f"| {name} | not run | | | | | | | {why} |")
    lines.append("")
    if r.get("cases"):
        lines += ["## Other disks (mover full, once)", "",
                  "| case | capacity GiB | read GiB | wall s | MB/s read | MB/s logical | "
                  "stored MiB | peak RSS MiB |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: "
                  "| ---: |"]
        for name, c in r["cases"].items():
            lines.append(f"| {name} | {c['capacity'] / (1 << 30):.0f} | "
                         f"{c['bytes_read'] / (1 << 30):.2f} | {c['wall']:.1f} | {c['mb_s']:.0f} "
                         f"| {c['logical_mb_s']:.0f} | {c['bytes_stored'] / MiB:,.0f} | "
                         f"{c['maxrss_mib']:.0f} |")
        lines.append("")
    sc = r["scaling"]
    lines += ["## Scaling (in-process pipeline, about 512 MiB of the same reads)", "",
              "| fetchers | " + " | ".join(sc["fetchers"]) + " |",
              "| --- |" + " ---: |" * len(sc["fetchers"]),
              "| MB/s | " + " | ".join(f"{v:.0f}" for v in sc["fetchers"].values()) + " |", "",
              "| block size KiB | " + " | ".join(sc["block_size"]) + " |",
              "| --- |" + " ---: |" * len(sc["block_size"]),
              "| MB/s | " + " | ".join(f"{v:.0f}" for v in sc["block_size"].values()) + " |", ""]
    lines += ["## Ratios and targets", "", "| measure | value | target |", "| --- | ---: | --- |",
              f"| mover full, MB/s read (bytes read / wall) | {s['full_mb_s']:.0f} | |",
              f"| mover full, MB/s logical (disk size / wall) | {s['full_logical_mb_s']:.0f} | |",
              f"| mover full, copy stage only MB/s | {s['full_copy_mb_s']:.0f} | |",
              f"| pipeline bound MB/s | {s['bound_mb_s']:.0f} | |",
              f"| full / bound | {s['full_vs_bound']:.2f} | >= 0.9 |",
              f"| best peer ({s['best_peer']}) full wall / mover full wall | "
              f"{_f(s['full_vs_best_peer'], 2)} | >= 2.0 |",
              f"| incremental 1%: wall / full wall | {s['incr_1pct_time_ratio']:.3f} | <= 0.05 |",
              f"| incremental 1%: bytes read / changed blocks | "
              f"{s['incr_1pct_read_amplification']:.3f} | <= 1.1 |",
              f"| incremental 1%: bytes fetched for changes / CBT's changed bytes | "
              f"{s['incr_1pct_fetch_amplification']:.3f} | <= 1.25 |",
              f"| the same with the canary's reads | "
              f"{s['incr_1pct_fetch_amplification_with_canary']:.3f} | |",
              f"| canary ({s['canary_blocks']:.0f} blocks) extra wall s on the 1% incremental | "
              f"{s['canary_cost_s']:.3f} | |",
              *([f"| ESXi-like ({s['esxi_like_link_mb_s']:.0f} MB/s link): full MB/s / link | "
                 f"{s['esxi_like_full_vs_link']:.2f} | >= 0.9 |",
                 f"| ESXi-like: incremental 1% wall / full wall | "
                 f"{s['esxi_like_incr_1pct_time_ratio']:.3f} | <= 0.04 |",
                 f"| ESXi-like: canary extra wall s | {s['esxi_like_canary_cost_s']:.3f} | |"]
                if "esxi_like_full_vs_link" in s else []),
              f"| incremental 1%: repo growth / (compressed changed blocks + index) | "
              f"{s['incr_1pct_repo_growth_ratio']:.3f} | <= 1.0 |",
              f"| peak RSS 8 GiB MiB | {s['peak_rss_mib_8g']:.0f} | < 300 |",
              f"| peak RSS 64 GiB MiB | {_f(s['peak_rss_mib_64g'], 0)} | < 300 |",
              f"| mover CPU s per GiB read / per GiB stored | {s['cpu_s_per_gib_read']:.2f} / "
              f"{s['cpu_s_per_gib_stored']:.2f} | |",
              f"| format 1 (one file per chunk): CPU s per GiB stored | "
              f"{_f(s.get('format1_cpu_s_per_gib_stored'), 2)} | more than packs |",
              f"| files in the repository after a full: packs / format 1 (chunks) | "
              f"{s.get('full_repo_files')} / {_f(s.get('format1_full_repo_files'), 0)} "
              f"({s.get('full_chunks')}) | far fewer than chunks |",
              f"| gc after forget --keep-last 1: wall s / peak RSS MiB | "
              f"{_f(s.get('gc_wall_s'), 2)} / {_f(s.get('gc_peak_rss_mib'), 0)} | |", ""]
    if "s3" in r:
        lines += s3.markdown(r["s3"])
    if "scale" in r:
        lines += scale.markdown(r["scale"])
    lines.append(f"Total bench time {r['seconds'] / 60:.1f} min.")
    return "\n".join(lines)


def plots(r: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    tl = r.get("timeline")
    if tl:
        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.5
        for stage, events in tl.items():
            if not events:
                continue
            end = max(t for t, _ in events)
            bins = [0.0] * (int(end / width) + 1)
            for t, n in events:
                bins[int(t / width)] += n
            ax.plot([i * width for i in range(len(bins))], [v / width / MB for v in bins],
                    label=stage, drawstyle="steps-post")
        ax.set_xlabel("seconds")
        ax.set_ylabel("MB/s (store: compressed bytes)")
        ax.set_title("mover full backup: throughput per stage")
        ax.axhline(r["bound"]["mb_s"], color="grey", linestyle=":", label="bound")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "stages.png", dpi=110)
        plt.close(fig)
        made.append("stages.png")
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, runs in r["backups"].items():
        pts = [(run["fraction"] * 100, run["wall"]) for run in runs if "fraction" in run]
        if pts:
            pts.sort()
            ax.plot(*zip(*pts, strict=True), marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("changed fraction of the disk (%), 100 = full")
    ax.set_ylabel("wall seconds")
    ax.set_title("backup time against changed fraction")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "changed_fraction.png", dpi=110)
    plt.close(fig)
    made.append("changed_fraction.png")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    sc = r["scaling"]
    a1.plot([int(k) for k in sc["fetchers"]], list(sc["fetchers"].values()), marker="o")
    a1.set_xscale("log", base=2)
    a1.set_xlabel("fetchers")
    a1.set_ylabel("MB/s")
    a2.plot([int(k) for k in sc["block_size"]], list(sc["block_size"].values()), marker="o")
    a2.set_xscale("log", base=2)
    a2.set_xlabel("block size KiB")
    fig.suptitle("pipeline throughput scaling")
    fig.tight_layout()
    fig.savefig(out / "scaling.png", dpi=110)
    plt.close(fig)
    made.append("scaling.png")
    return made


def write(r: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(r)
    (out / "latest.md").write_text(text + "\n")
    r["plots"] = plots(r, out)
    slim = {k: v for k, v in r.items() if k != "timeline"}
    doc = {**r["summary"], "details": slim}
    (out / "latest.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / f"{r['started'].replace(':', '')}.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(text)
    print(f"\nwrote {out / 'latest.json'}, {out / 'latest.md'}, "
          + ", ".join(str(out / p) for p in r["plots"]))
