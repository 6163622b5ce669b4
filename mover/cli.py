"""``mover``: the command line. A stable contract, documented in the README.

Exit status is the ``exit_code`` of the error class (see ``mover.errors``); 0 on success.
With ``--json`` the last line of stdout is one JSON object: the result, or the error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from mover import __version__, jobfile
from mover.canary import DEFAULT_BLOCKS as DEFAULT_CANARY
from mover.errors import Interrupted, MoverError, UsageError
from mover.jobs import maintenance
from mover.jobs.backup import run_backup
from mover.jobs.reporting import BackupResult
from mover.jobs.restore import run_restore
from mover.jobs.settings import BackupSettings, RestoreSettings
from mover.pipeline.copy import PipelineSettings
from mover.progress import BarReporter, JsonReporter, human_bytes
from mover.repo import Repository
from mover.repo.s3url import REPO, repo_location
from mover.retention import RULES, KeepPolicy
from mover.vsphere.address import ServerAddress, TlsPolicy
from mover.vsphere.session import Credentials

T = TypeVar("T")
MiB = 1024 * 1024


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="mover", description="Incremental CBT backups of "
                                  "vSphere virtual disks into a content-addressed repository.")
    top.add_argument("--version", action="version", version=f"mover {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more detail on stderr (-v: info, -vv: debug)")
    sub = top.add_subparsers(dest="command", required=True)

    b = sub.add_parser("backup", parents=[common], help="back up a VM (full or incremental)")
    b.add_argument("--server", required=True, help="vCenter/ESXi host name or URL")
    b.add_argument("--user", required=True)
    b.add_argument("--password-file", type=Path,
                   help="file holding the password (or set MOVER_PASSWORD)")
    tls = b.add_mutually_exclusive_group()
    tls.add_argument("--insecure", action="store_true", help="do not verify the certificate")
    tls.add_argument("--thumbprint", help="pin the server certificate's SHA-256 fingerprint")
    b.add_argument("--vm", required=True, help="name, MoRef, instance UUID or inventory path")
    b.add_argument("--repo", required=True, type=repo_location, metavar=REPO)
    b.add_argument("--full", action="store_true", help="ignore the previous backup")
    b.add_argument("--read-all", action="store_true",
                   help="a full that reads every byte, without asking CBT what is allocated")
    b.add_argument("--orphan-age", type=float, default=24.0, metavar="HOURS",
                   help="mover snapshots of other repositories or hosts older than this are "
                   "removed as orphans; younger ones make the backup refuse")
    b.add_argument("--quiesce", action="store_true", help="quiesce the guest file systems")
    b.add_argument("--no-enable-cbt", action="store_true",
                   help="fail instead of enabling CBT on a VM that has it off")
    b.add_argument("--block-size", type=int, help="block size in MiB of a NEW repository")
    b.add_argument("--fetchers", type=int, default=8, help="concurrent reads per disk")
    b.add_argument("--parallel-disks", type=int, default=2)
    canary = b.add_mutually_exclusive_group()
    canary.add_argument("--canary-blocks", type=int, default=DEFAULT_CANARY, metavar="N",
                        help="blocks per disk that CBT calls unchanged to re-read and check "
                        f"on an incremental (default {DEFAULT_CANARY}; see README)")
    canary.add_argument("--no-canary", action="store_true",
                        help="trust CBT without checking it (same as --canary-blocks 0)")
    knobs = PipelineSettings()
    b.add_argument("--read-timeout", type=float, default=knobs.read_timeout, metavar="SECONDS",
                   help="give up one attempt of a read after this long (then retry)")
    b.add_argument("--idle-timeout", type=float, default=knobs.idle_timeout, metavar="SECONDS",
                   help="give up one attempt of a read when no bytes came for this long")
    b.add_argument("--read-attempts", type=int, default=knobs.read_attempts, metavar="N",
                   help="attempts per read on transient faults (1: no retries)")
    b.add_argument("--retry-budget", type=int, default=knobs.retry_budget, metavar="N",
                   help="retries the whole job may make, all disks together")
    b.add_argument("--keepalive", type=float, default=knobs.keepalive, metavar="SECONDS",
                   help="ping the vSphere session this often while copying (0: never)")
    b.add_argument("--checkpoint-every", type=int, default=knobs.sync_every // MiB,
                   metavar="MiB", help="make stored data durable and resumable after this "
                   "much is read (a crash costs at most this much again)")
    b.add_argument("--json", action="store_true", help="JSON lines on stdout, result last")

    r = sub.add_parser("restore", parents=[common],
                       help="write one disk of a backup to an image file")
    r.add_argument("--repo", required=True, type=repo_location, metavar=REPO)
    r.add_argument("--backup", required=True, help="backup ID (see mover list)")
    r.add_argument("--disk", required=True, type=int, help="disk key, e.g. 2000")
    r.add_argument("--output", required=True, type=Path)
    r.add_argument("--force", action="store_true", help="overwrite an existing output file")
    r.add_argument("--json", action="store_true")

    ls = sub.add_parser("list", parents=[common], help="list the backups in a repository")
    ls.add_argument("--repo", required=True, type=repo_location, metavar=REPO)
    ls.add_argument("--json", action="store_true")

    j = sub.add_parser("job", parents=[common], help="run a job file (JSON) for a scheduler")
    j.add_argument("file", help="the job file, or - for standard input")
    j.set_defaults(json=True)

    v = sub.add_parser("verify", parents=[common], help="check a repository's indexes and chunks")
    v.add_argument("--repo", required=True, type=repo_location, metavar=REPO)
    v.add_argument("--backup", help="check only this backup")
    v.add_argument("--read-data", action="store_true", help="decode and hash every chunk")
    v.add_argument("--read-data-subset", metavar="K/N",
                   help="read only part K of N of the chunks (spread reading over N runs)")
    v.add_argument("--json", action="store_true")

    f = sub.add_parser("forget", parents=[common],
                       help="remove backups by keep rules (their data goes at the next gc)")
    f.add_argument("--repo", required=True, type=repo_location, metavar=REPO)
    f.add_argument("--vm", help="only this VM's backups (name or instance UUID)")
    for rule in RULES:
        f.add_argument(f"--keep-{rule}", type=int, metavar="N", help=_KEEP_HELP[rule])
    f.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    f.add_argument("--json", action="store_true")

    g = sub.add_parser("gc", parents=[common],
                       help="remove data no backup needs; waits for running backups")
    g.add_argument("--repo", required=True, type=repo_location, metavar=REPO)
    g.add_argument("--dry-run", action="store_true", help="count what would be freed")
    g.add_argument("--repack-threshold", type=float, default=0.5, metavar="FRACTION",
                   help="rewrite packs with more than this fraction of garbage (default 0.5)")
    g.add_argument("--wait", type=float, metavar="SECONDS",
                   help="wait at most this long for running backups (default: for ever)")
    g.add_argument("--json", action="store_true")

    rp = sub.add_parser("repair", parents=[common], help="rebuild pack indexes from the packs")
    rp.add_argument("what", choices=["index"])
    rp.add_argument("--repo", required=True, type=repo_location, metavar=REPO)
    rp.add_argument("--json", action="store_true")
    return top


_KEEP_HELP = {"last": "keep the N newest backups"} | {
    rule: f"keep the newest backup of each of the N newest {period}s that have one"
    for rule, period in (("hourly", "hour"), ("daily", "day"), ("weekly", "ISO week"),
                         ("monthly", "month"), ("yearly", "year"))}


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        if args.command == "job":
            args = _job(args)
        if args.command == "backup":
            return _backup(args)
        if args.command == "restore":
            return _restore(args)
        if args.command == "list":
            return _list(args)
        if args.command == "forget":
            return _forget(args)
        if args.command == "gc":
            return _gc(args)
        if args.command == "repair":
            return _repair(args)
        return _verify(args)
    except MoverError as exc:
        return _fail(exc, args.json)


def _job(args: argparse.Namespace) -> argparse.Namespace:
    """The settings of a job file, as if its command had been given these options."""
    source = "<stdin>" if args.file == "-" else args.file
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read job file {source}: {exc.strerror}") from exc
    commands = _subparsers(parser())
    kind, settings = jobfile.load(text, source, {k: commands[k] for k in ("backup", "restore")})
    settings.command, settings.verbose = kind, args.verbose
    return settings


def _subparsers(top: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("mover has subcommands")


def _fail(exc: MoverError, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"status": "failed", "error": {"kind": exc.kind, "message": str(exc),
                                                        "exit_code": exc.exit_code}}))
    print(f"mover: error: {exc}", file=sys.stderr)
    return exc.exit_code


def _password(file: Path | None) -> str:
    if file is not None:
        try:
            return file.read_text().rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"cannot read --password-file {file}: {exc.strerror}") from exc
    password = os.environ.get("MOVER_PASSWORD")
    if password is None:
        raise UsageError("no password: give --password-file FILE or set MOVER_PASSWORD "
                         "(a password is never taken on the command line)")
    return password


def _backup(args: argparse.Namespace) -> int:
    settings = BackupSettings(
        server=ServerAddress.parse(args.server),
        credentials=Credentials(args.user, _password(args.password_file)),
        vm=args.vm, repo=args.repo,
        tls=TlsPolicy(insecure=args.insecure, thumbprint=args.thumbprint),
        full=args.full, read_all=args.read_all, quiesce=args.quiesce,
        enable_cbt=not args.no_enable_cbt, orphan_age=_orphan_age(args.orphan_age),
        block_size=args.block_size * MiB if args.block_size else None,
        parallel_disks=max(1, args.parallel_disks),
        canary_blocks=0 if args.no_canary else max(0, args.canary_blocks),
        pipeline=_pipeline(args))
    reporter = JsonReporter() if args.json else BarReporter()
    result: BackupResult = _run_async(run_backup(settings, reporter))
    if args.json:
        print(json.dumps(result.to_json(), sort_keys=True))
    else:
        print(f"backup {result.backup_id} of {result.vm}: {result.status} in "
              f"{result.seconds:.1f} s")
        for disk in result.disks:
            print(f"  disk {disk.key} {disk.label}: {disk.mode}, changed "
                  f"{human_bytes(disk.changed_bytes)}, read {human_bytes(disk.bytes_read)}, "
                  f"stored {human_bytes(disk.bytes_stored)} ({disk.reason})")
        for warning in result.warnings:
            print(f"mover: warning: {warning}", file=sys.stderr)
    return result.exit_status()


def _orphan_age(hours: float) -> float:
    if not hours >= 0:
        raise UsageError("--orphan-age must be at least 0 hours")
    return hours * 3600.0


def _pipeline(args: argparse.Namespace) -> PipelineSettings:
    for option, ok, rule in (("--read-timeout", args.read_timeout > 0, "above 0"),
                             ("--idle-timeout", args.idle_timeout > 0, "above 0"),
                             ("--read-attempts", args.read_attempts >= 1, "at least 1"),
                             ("--retry-budget", args.retry_budget >= 0, "at least 0"),
                             ("--keepalive", args.keepalive >= 0, "at least 0"),
                             ("--checkpoint-every", args.checkpoint_every >= 1, "at least 1")):
        if not ok:
            raise UsageError(f"{option} must be {rule}")
    return PipelineSettings(fetchers=max(1, args.fetchers), read_timeout=args.read_timeout,
                            idle_timeout=args.idle_timeout, read_attempts=args.read_attempts,
                            retry_budget=args.retry_budget, keepalive=args.keepalive,
                            sync_every=args.checkpoint_every * MiB)


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run the job on uvloop when available; SIGTERM and SIGINT cancel it, which removes the
    snapshot and commits nothing, then exit with Interrupted's status."""
    try:
        import uvloop
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    caught: list[str] = []

    async def guarded() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def stop(sig: signal.Signals) -> None:
            caught.append(sig.name)
            task.cancel()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop, sig)
        return await coro

    with runner:
        try:
            return runner.run(guarded())
        except asyncio.CancelledError as exc:
            if caught:
                raise Interrupted(f"stopped by {caught[0]}: the snapshot was removed and "
                                  "nothing was committed; run the same backup again to resume "
                                  "where it stopped") from exc
            raise


def _restore(args: argparse.Namespace) -> int:
    def stop(signum: int, frame: object) -> None:
        raise Interrupted(f"stopped by {signal.Signals(signum).name}: the partial image was "
                          "removed; run the restore again")

    for sig in (signal.SIGTERM, signal.SIGINT):  # the restore removes its partial image
        signal.signal(sig, stop)
    result = run_restore(RestoreSettings(args.repo, args.backup, args.disk, args.output,
                                         force=args.force))
    if args.json:
        print(json.dumps({"status": "restored", **asdict(result)}, sort_keys=True))
    else:
        print(f"restored disk {result.disk_key} of backup {result.backup_id} to {result.output}:"
              f" {human_bytes(result.capacity)}, {human_bytes(result.bytes_written)} written, "
              f"{result.seconds:.1f} s, every chunk verified")
    return 0


def _list(args: argparse.Namespace) -> int:
    repo = Repository.open(args.repo, create=False)
    backups = repo.list_backups()
    if args.json:
        print(json.dumps({"status": "ok", "backups": [b.to_json() for b in backups]},
                         sort_keys=True))
        return 0
    print(f"{'backup':<26} {'vm':<20} {'created':<21} {'disks':<24} {'stored':>10}")
    for b in backups:
        disks = ", ".join(f"{d.key}:{d.mode[0]}" for d in b.disks)
        stored = human_bytes(sum(d.bytes_stored for d in b.disks))
        print(f"{b.id:<26} {b.vm_name:<20} {b.created:<21} {disks:<24} {stored:>10}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    subset = (1, 1)
    if args.read_data_subset is not None:
        k, _, n = args.read_data_subset.partition("/")
        if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
            raise UsageError(f"--read-data-subset {args.read_data_subset!r} must be K/N with "
                             "1 <= K <= N, e.g. 1/7")
        subset = (int(k), int(n))
    problems = maintenance.check(args.repo, args.read_data or args.read_data_subset is not None,
                                 subset, args.backup)
    if args.json:
        print(json.dumps({"status": "ok" if not problems else "damaged",
                          "problems": [p.to_json() for p in problems]}))
    else:
        for p in problems:
            print(f"problem: {p.message}")
        print("repository OK" if not problems else f"{len(problems)} problems found; "
              "restoring an affected disk fails: restore the others, take a new full "
              "backup of the affected VMs (--full), then `mover gc`")
    return 0 if not problems else 10


def _forget(args: argparse.Namespace) -> int:
    policy = KeepPolicy(**{rule: getattr(args, f"keep_{rule}") for rule in RULES})
    result = maintenance.forget(args.repo, policy, args.vm, args.dry_run)
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


def _gc(args: argparse.Namespace) -> int:
    if not 0.0 <= args.repack_threshold <= 1.0:
        raise UsageError("--repack-threshold must be between 0 and 1")
    if args.wait is not None and args.wait < 0:
        raise UsageError("--wait must be at least 0 seconds")
    report = maintenance.gc(args.repo, args.dry_run, args.repack_threshold,
                            lambda m: print(f"mover: {m}", file=sys.stderr), wait=args.wait)
    if args.json:
        print(json.dumps({"status": "ok", **report.to_json()}, sort_keys=True))
        return 0
    verb = "would free" if args.dry_run else "freed"
    print(f"gc: {report.live_chunks} chunks in use; {report.packs_deleted} of "
          f"{report.packs_before} packs removed ({report.packs_repacked} repacked into "
          f"{report.packs_written}, {report.orphan_packs} unindexed), "
          f"{report.chunks_removed} chunks removed, {verb} {human_bytes(report.bytes_freed)}"
          f" of {human_bytes(report.bytes_before)}")
    return 0


def _repair(args: argparse.Namespace) -> int:
    done = maintenance.repair(args.repo)
    if args.json:
        print(json.dumps({"status": "ok", "done": done}))
    else:
        for line in done or ["every pack is indexed; nothing to repair"]:
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
