"""``mover list``: the backups in a repository."""

from __future__ import annotations

import argparse
import json

from mover import clock
from mover.cli.runner import Commands
from mover.progress import human_bytes
from mover.repo import Repository
from mover.repo.s3url import REPO, repo_location

EXAMPLE = """example:
  mover list --repo /backups/repo
  MOVER_REPO=/backups/repo mover list --json
"""

def declare(sub: Commands,
            common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    ls = sub.add_parser("list", parents=[common], epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="list the backups in a repository")
    ls.add_argument("--repo", required=True, type=repo_location, metavar=REPO)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=run)
    return ls


def run(args: argparse.Namespace) -> int:
    backups = Repository.open(args.repo, create=False).list_backups()
    if args.json:
        print(json.dumps({"status": "ok", "backups": [b.listing() for b in backups]},
                         sort_keys=True))
        return 0
    print(f"{'backup':<26} {'vm':<20} {'created':<21} {'disks':<24} {'stored':>10}")
    for b in backups:
        disks = ", ".join(f"{d.key}:{d.mode[0]}" for d in b.disks)
        stored = human_bytes(sum(d.bytes_stored for d in b.disks))
        print(f"{b.id:<26} {b.vm_name:<20} {clock.iso(b.created_at):<21} {disks:<24} {stored:>10}")
    return 0
