"""``mover run JOB``: every VM of a job file (JSON or TOML, ``-`` for standard input) in one
process, for schedulers; the schema is in ``mover.jobs.jobspec``, the events in
``mover.jobs.events``."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path

from mover.cli.runner import Commands, run_async
from mover.errors import UsageError

STOPPED = ("every snapshot of the job was removed and nothing more was committed; run the "
           "same job again to resume where it stopped")
EXAMPLE = """example:
  mover run nightly.toml --json > events.ndjson
  mover run --schema                  # the job file's JSON Schema
"""


def declare(sub: Commands, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    r = sub.add_parser("run", parents=[common], epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="back up every VM of a job file (JSON or TOML) in one process")
    r.add_argument("job", nargs="?", help="the job file (.json or .toml), or - for standard "
                   "input (JSON)")
    r.add_argument("--schema", action="store_true",
                   help="print the job file's JSON Schema and exit")
    r.add_argument("--json", action="store_true",
                   help="events as JSON lines on stdout (job_finished last); logs on stderr")
    r.add_argument("-q", "--quiet", action="store_true",
                   help="no progress and no summary; only failures on stderr")
    r.set_defaults(run=run)
    return r


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: every command's parser is built at start-up, and only
    # this one needs pydantic, rich and the worker (docs/performance.md, start-up).
    from rich.console import Console

    from mover.jobs import jobspec
    from mover.jobs.stream import EventSink, EventStream
    from mover.jobs.worker import run_job
    from mover.sinks import LogSink, NdjsonSink, RichSink, summary

    if args.schema:
        print(json.dumps(jobspec.schema(), indent=2, sort_keys=True))
        return 0
    if args.job is None:
        raise UsageError("mover run needs a job file (or - for standard input); see "
                         "`mover run --schema` and the README")
    source = "<stdin>" if args.job == "-" else args.job
    try:
        text = sys.stdin.read() if args.job == "-" else Path(args.job).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read job file {source}: {exc.strerror}") from exc
    job = jobspec.settings(jobspec.parse(text, source), source)
    stderr = Console(file=sys.stderr)
    bars = (RichSink(stderr) if stderr.is_terminal and not args.json and not args.quiet
            else None)
    sinks: list[EventSink] = [NdjsonSink(sys.stdout)] if args.json else []
    sinks.append(bars if bars is not None else LogSink(sys.stderr, quiet=args.quiet))
    stream = EventStream(uuid.uuid4().hex[:16], sinks)
    try:
        result = run_async(run_job(job, stream), STOPPED)
    finally:
        if bars is not None:
            bars.close()
    if not args.json and not args.quiet:
        summary(result.results, Console(file=sys.stdout))
    return result.exit_code
