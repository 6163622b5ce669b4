"""``mover repair index``: rebuild pack indexes from the packs."""

from __future__ import annotations

import argparse
import json

from mover.cli.runner import Commands
from mover.jobs import maintenance
from mover.repo.s3url import REPO, repo_location

EXAMPLE = """example:
  mover repair index --repo /backups/repo
"""

def declare(sub: Commands,
            common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    rp = sub.add_parser("repair", parents=[common], epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="rebuild pack indexes from the packs")
    rp.add_argument("what", choices=["index"])
    rp.add_argument("--repo", required=True, type=repo_location, metavar=REPO)
    rp.add_argument("--json", action="store_true")
    rp.set_defaults(run=run)
    return rp


def run(args: argparse.Namespace) -> int:
    done = maintenance.repair(args.repo)
    if args.json:
        print(json.dumps({"status": "ok", "done": done}))
    else:
        for line in done or ["every pack is indexed; nothing to repair"]:
            print(line)
    return 0
