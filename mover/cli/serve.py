"""``mover serve``: export one disk of a backup read-only over NBD until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from mover.cli.runner import Commands
from mover.jobs.serve import ServeSettings, listen_address, run_serve
from mover.repo.s3url import REPO, repo_location


def declare(sub: Commands,
            common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sv = sub.add_parser("serve", parents=[common], help="export one disk of a backup "
                        "read-only over NBD until SIGTERM/SIGINT (single-file restore)")
    sv.add_argument("--repo", required=True, type=repo_location, metavar=REPO)
    sv.add_argument("--backup", required=True, help="backup ID (see mover list)")
    sv.add_argument("--disk", required=True, type=int, help="disk key, e.g. 2000")
    where = sv.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", type=Path, help="listen on this Unix socket")
    where.add_argument("--listen", metavar="HOST:PORT",
                       help="listen on TCP (no authentication: loopback or a trusted network)")
    sv.add_argument("--json", action="store_true")
    sv.set_defaults(run=run)
    return sv


def run(args: argparse.Namespace) -> int:
    # run_serve handles SIGTERM/SIGINT itself: they are how a serve ends, not an error.
    host, port = (None, 0) if args.listen is None else listen_address(args.listen)
    settings = ServeSettings(args.repo, args.backup, args.disk, args.socket, host, port)

    def ready(uri: str) -> None:
        if args.json:
            print(json.dumps({"status": "serving", "uri": uri}), flush=True)
        else:
            print(f"serving disk {args.disk} of backup {args.backup} read-only at {uri} "
                  "(Ctrl-C or SIGTERM stops)", flush=True)

    result = run_serve(settings, ready)
    if args.json:
        print(json.dumps({"status": "stopped", **asdict(result)}, sort_keys=True))
    else:
        print(f"stopped by {result.stopped_by} after {result.seconds:.0f} s")
    return 0
