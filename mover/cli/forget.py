"""``mover forget``: remove backups by keep rules (their data goes at the next gc)."""

from __future__ import annotations

import argparse
import json

from mover.cli.runner import Commands
from mover.jobs import maintenance
from mover.repo.s3url import REPO, repo_location
from mover.retention import RULES, KeepPolicy

KEEP_HELP = {"last": "keep the N newest backups"} | {
    rule: f"keep the newest backup of each of the N newest {period}s that have one"
    for rule, period in (("hourly", "hour"), ("daily", "day"), ("weekly", "ISO week"),
                         ("monthly", "month"), ("yearly", "year"))}


EXAMPLE = """example:
  mover forget --repo /backups/repo --keep-last 7 --keep-daily 14 --dry-run
"""

def declare(sub: Commands,
            common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    f = sub.add_parser("forget", parents=[common], epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="remove backups by keep rules (their data goes at the next gc)")
    f.add_argument("--repo", required=True, type=repo_location, metavar=REPO)
    f.add_argument("--vm", help="only this VM's backups (name or instance UUID)")
    for rule in RULES:
        f.add_argument(f"--keep-{rule}", type=int, metavar="N", help=KEEP_HELP[rule])
    f.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    f.add_argument("--json", action="store_true")
    f.set_defaults(run=run)
    return f


def policy(args: argparse.Namespace) -> KeepPolicy:
    return KeepPolicy(**{rule: getattr(args, f"keep_{rule}") for rule in RULES})


def run(args: argparse.Namespace) -> int:
    result = maintenance.forget(args.repo, policy(args), args.vm, args.dry_run)
    if args.json:
        print(json.dumps({"status": "ok", **result.to_json()}, sort_keys=True))
        return 0
    verb = "would forget" if args.dry_run else "forgot"
    for kept in result.kept:
        print(f"keep    {kept['id']}  {kept['vm']:<20} {', '.join(kept['reasons'])}")
    for gone in result.forgotten:
        print(f"forget  {gone['id']}  {gone['vm']}")
    print(f"policy {result.policy}: kept {len(result.kept)}, {verb} {len(result.forgotten)}"
          f"{'' if args.dry_run else '; run `mover gc` to free their space'}")
    return 0
