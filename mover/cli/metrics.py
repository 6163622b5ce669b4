"""``mover metrics --repo R``: the repository's series in Prometheus text format."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mover.cli.runner import Commands

EXAMPLE = """example:
  mover metrics --repo /backups/repo > /var/lib/node_exporter/textfile/mover_repo.prom.tmp \\
    && mv /var/lib/node_exporter/textfile/mover_repo.prom.tmp \\
          /var/lib/node_exporter/textfile/mover_repo.prom
"""


def declare(sub: Commands, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    m = sub.add_parser("metrics", parents=[common], epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="print the repository's Prometheus series (backups and age per VM)")
    m.add_argument("--repo", required=True, type=Path)
    m.set_defaults(run=run, json=False)
    return m


def run(args: argparse.Namespace) -> int:
    from mover.jobs import metrics  # here: prometheus_client only for this command
    from mover.repo import Repository

    repo_path: Path = args.repo
    sys.stdout.write(metrics.repository_text(Repository.open(repo_path, create=False)))
    return 0
