"""The parser of every command and the dispatch to the command's module."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from mover import __version__
from mover.cli import (
    backup,
    completion,
    forget,
    gc,
    job,
    listing,
    metrics,
    repair,
    restore,
    run,
    serve,
    verify,
)
from mover.cli.options import Parser
from mover.cli.runner import fail, setup_logging
from mover.errors import MoverError


def parser() -> argparse.ArgumentParser:
    top = Parser(prog="mover", description="Incremental CBT backups of vSphere virtual disks "
                 "into a content-addressed repository. Every option falls back to a MOVER_* "
                 "environment variable (see each command's --help).")
    top.add_argument("--version", action="version", version=f"mover {__version__}")
    common = Parser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more detail on stderr (-v: info, -vv: debug)")
    sub = top.add_subparsers(dest="command", required=True, parser_class=Parser)
    commands = {"backup": backup.declare(sub, common), "restore": restore.declare(sub, common)}
    serve.declare(sub, common)
    listing.declare(sub, common)
    job.declare(sub, common, commands)
    run.declare(sub, common)
    verify.declare(sub, common)
    forget.declare(sub, common)
    gc.declare(sub, common)
    repair.declare(sub, common)
    metrics.declare(sub, common)
    completion.declare(sub, common, top)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    try:
        top = parser()
    except MoverError as exc:  # a MOVER_* variable of the wrong form
        return fail(exc, False)
    args = top.parse_args(argv)
    setup_logging(args.verbose, getattr(args, "quiet", False))
    command: Callable[[argparse.Namespace], int] = args.run
    try:
        return command(args)
    except MoverError as exc:
        return fail(exc, args.json)


def job_commands() -> dict[str, argparse.ArgumentParser]:
    """The parsers of the commands a ``mover job`` file may name (their options are its
    keys; ``mover.jobfile``)."""
    commands: dict[str, argparse.ArgumentParser] = parser().parse_args(["job", "-"]).commands
    return dict(commands)
