"""``mover gc``: remove data no backup needs; waits for running backups."""

from __future__ import annotations

import argparse
import json
import sys

from mover.cli.runner import Commands
from mover.errors import UsageError
from mover.jobs import maintenance
from mover.progress import human_bytes
from mover.repo.s3url import REPO, repo_location

EXAMPLE = """example:
  mover gc --repo /backups/repo --dry-run
"""

def declare(sub: Commands,
            common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = sub.add_parser("gc", parents=[common], epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="remove data no backup needs; waits for running backups")
    g.add_argument("--repo", required=True, type=repo_location, metavar=REPO)
    g.add_argument("--dry-run", action="store_true", help="count what would be freed")
    g.add_argument("--repack-threshold", type=float, default=0.5, metavar="FRACTION",
                   help="rewrite packs with more than this fraction of garbage (default 0.5)")
    g.add_argument("--wait", type=float, metavar="SECONDS",
                   help="wait at most this long for running backups (default: for ever)")
    g.add_argument("--json", action="store_true")
    g.set_defaults(run=run)
    return g


def run(args: argparse.Namespace) -> int:
    threshold: float = args.repack_threshold
    if not 0.0 <= threshold <= 1.0:
        raise UsageError("--repack-threshold must be between 0 and 1")
    if args.wait is not None and args.wait < 0:
        raise UsageError("--wait must be at least 0 seconds")
    report = maintenance.gc(args.repo, args.dry_run, threshold,
                            lambda m: print(f"mover: {m}", file=sys.stderr), wait=args.wait)
    if args.json:
        print(json.dumps({"status": "ok", **report.to_json()}, sort_keys=True))
        return 0
    verb = "would free" if args.dry_run else "freed"
    print(f"gc: {report.live_chunks} chunks in use; {report.packs_deleted} of "
          f"{report.packs_before} packs removed ({report.packs_repacked} repacked into "
          f"{report.packs_written}, {report.orphan_packs} unindexed), "
          f"{report.chunks_removed} chunks removed, {verb} {human_bytes(report.bytes_freed)}"
          f" of {human_bytes(report.bytes_before)}")
    return 0
