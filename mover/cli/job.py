"""``mover job FILE``: one backup or restore from a JSON job file (see ``mover.jobfile``).

``mover run`` is the multi-VM worker; this stays for job files of one command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from mover import jobfile
from mover.cli import backup, restore
from mover.cli.runner import Commands
from mover.errors import UsageError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"backup": backup.run,
                                                             "restore": restore.run}


EXAMPLE = """example:
  mover job backup-web01.json
  echo '{"type": "backup", ...}' | mover job -
"""

def declare(sub: Commands,
            common: argparse.ArgumentParser,
            commands: dict[str, argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """``commands``: the parsers of the commands a job file may name (their options are the
    job file's keys)."""
    j = sub.add_parser("job", parents=[common], epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="run a job file (JSON) for a scheduler")
    j.add_argument("file", help="the job file, or - for standard input")
    j.set_defaults(json=True, run=run, commands=commands)
    return j


def run(args: argparse.Namespace) -> int:
    source = "<stdin>" if args.file == "-" else args.file
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read job file {source}: {exc.strerror}") from exc
    kind, settings = jobfile.load(text, source, args.commands)
    settings.verbose = args.verbose
    return COMMANDS[kind](settings)
