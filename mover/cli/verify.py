"""``mover verify``: check a repository's indexes and chunks."""

from __future__ import annotations

import argparse
import json

from mover.cli.runner import Commands
from mover.errors import IntegrityError, UsageError
from mover.jobs import maintenance
from mover.repo.s3url import REPO, repo_location

EXAMPLE = """example:
  mover verify --repo /backups/repo
  mover verify --repo /backups/repo --read-data-subset 3/7   # a seventh of the chunks
"""

def declare(sub: Commands,
            common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    v = sub.add_parser("verify", parents=[common], epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="check a repository's indexes and chunks")
    v.add_argument("--repo", required=True, type=repo_location, metavar=REPO)
    v.add_argument("--backup", help="check only this backup")
    v.add_argument("--read-data", action="store_true", help="decode and hash every chunk")
    v.add_argument("--read-data-subset", metavar="K/N",
                   help="read only part K of N of the chunks (spread reading over N runs)")
    v.add_argument("--json", action="store_true")
    v.set_defaults(run=run)
    return v


def subset(text: str | None) -> tuple[int, int]:
    """``K/N`` as (K, N); (1, 1) for all of it."""
    if text is None:
        return (1, 1)
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise UsageError(f"--read-data-subset {text!r} must be K/N with 1 <= K <= N, e.g. 1/7")
    return (int(k), int(n))


def run(args: argparse.Namespace) -> int:
    part = subset(args.read_data_subset)
    problems = maintenance.check(args.repo, args.read_data or args.read_data_subset is not None,
                                 part, args.backup)
    if args.json:
        print(json.dumps({"status": "ok" if not problems else "damaged",
                          "problems": [p.to_json() for p in problems]}))
    else:
        for p in problems:
            print(f"problem: {p.message}")
        print("repository OK" if not problems else f"{len(problems)} problems found; "
              "restoring an affected disk fails: restore the others, take a new full "
              "backup of the affected VMs (--full), then `mover gc`")
    return 0 if not problems else IntegrityError.exit_code
