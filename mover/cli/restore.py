"""``mover restore``: write one disk of a backup to an image file."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from mover.cli.runner import Commands, run_sync
from mover.jobs.restore import run_restore
from mover.jobs.settings import RestoreSettings
from mover.progress import human_bytes

STOPPED = "the partial image was removed; run the restore again"


EXAMPLE = """example:
  mover restore --repo /backups/repo --backup 20261125T021500Z-3f9a1c --disk 2000 \\
    --output /tmp/web01-disk0.img
"""

def declare(sub: Commands,
            common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    r = sub.add_parser("restore", parents=[common], epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="write one disk of a backup to an image file")
    r.add_argument("--repo", required=True, type=Path)
    r.add_argument("--backup", required=True, help="backup ID (see mover list)")
    r.add_argument("--disk", required=True, type=int, help="disk key, e.g. 2000")
    r.add_argument("--output", required=True, type=Path)
    r.add_argument("--force", action="store_true", help="overwrite an existing output file")
    r.add_argument("--json", action="store_true")
    r.set_defaults(run=run)
    return r


def settings(args: argparse.Namespace) -> RestoreSettings:
    return RestoreSettings(args.repo, args.backup, args.disk, args.output, force=args.force)


def run(args: argparse.Namespace) -> int:
    wanted = settings(args)
    result = run_sync(lambda: run_restore(wanted), STOPPED)
    if args.json:
        print(json.dumps({"status": "restored", **asdict(result)}, sort_keys=True))
    else:
        print(f"restored disk {result.disk_key} of backup {result.backup_id} to {result.output}:"
              f" {human_bytes(result.capacity)}, {human_bytes(result.bytes_written)} written, "
              f"{result.seconds:.1f} s, every chunk verified")
    return 0
