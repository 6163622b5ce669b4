"""``mover restore``: write one disk of a backup to a new image file, a block device or an
existing image in place (also differentially, ``--base``), or standard output."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from mover.cli.runner import Commands, run_sync
from mover.errors import UsageError
from mover.jobs.restore import run_restore
from mover.jobs.settings import RestoreSettings
from mover.progress import human_bytes
from mover.repo.s3url import REPO, repo_location

# The job adds what the target holds (removed, unchanged, partly written, incomplete stream).
STOPPED = "nothing more is written"


EXAMPLE = """example:
  mover restore --repo /backups/repo --backup 20261125T021500Z-3f9a1c --disk 2000 \\
    --output /tmp/web01-disk0.img
"""

def declare(sub: Commands,
            common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    r = sub.add_parser("restore", parents=[common], epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="write one disk of a backup to an image file, a device or stdout")
    r.add_argument("--repo", required=True, type=repo_location, metavar=REPO)
    r.add_argument("--backup", required=True, help="backup ID (see mover list)")
    r.add_argument("--disk", required=True, type=int, help="disk key, e.g. 2000")
    r.add_argument("--output", required=True, type=Path,
                   help="a new image file, a block device, an existing image with --base, or "
                   "- for standard output (the result line then goes to stderr)")
    r.add_argument("--force", action="store_true", help="replace an existing output file")
    r.add_argument("--base", metavar="BASE_ID", help="differential: --output holds backup "
                   "BASE_ID today; write only the blocks that differ")
    r.add_argument("--verify-base", type=int, nargs="?", const=16, default=0, metavar="N",
                   help="with --base: first check N blocks (default 16) of --output against "
                   "BASE_ID")
    r.add_argument("--json", action="store_true")
    r.set_defaults(run=run)
    return r


def to_stdout(args: argparse.Namespace) -> bool:
    return str(args.output) == "-"


def settings(args: argparse.Namespace) -> RestoreSettings:
    if args.verify_base and not args.base:
        raise UsageError("--verify-base checks the target against --base BASE_ID: add --base")
    return RestoreSettings(args.repo, args.backup, args.disk,
                           None if to_stdout(args) else args.output, force=args.force,
                           base_id=args.base, verify_base=args.verify_base)


def run(args: argparse.Namespace) -> int:
    wanted = settings(args)
    result = run_sync(lambda: run_restore(wanted), STOPPED)
    out = sys.stderr if to_stdout(args) else sys.stdout  # stdout carries the image
    if args.json:
        print(json.dumps({"status": "restored", **asdict(result)}, sort_keys=True), file=out)
    else:
        print(f"restored disk {result.disk_key} of backup {result.backup_id} to {result.output}:"
              f" {human_bytes(result.capacity)}, {human_bytes(result.bytes_written)} written, "
              f"{result.seconds:.1f} s, every chunk verified", file=out)
    return 0
