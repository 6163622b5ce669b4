"""``mover backup``: back up one VM (full or incremental)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mover.canary import DEFAULT_BLOCKS as DEFAULT_CANARY
from mover.cli.credentials import password
from mover.cli.runner import Commands, run_async
from mover.errors import UsageError
from mover.jobs.backup import run_backup
from mover.jobs.reporting import BackupResult
from mover.jobs.routes import CHOICES
from mover.jobs.settings import BackupSettings, NbdSettings
from mover.pipeline.copy import PipelineSettings
from mover.progress import BarReporter, JsonReporter, human_bytes
from mover.repo.s3url import REPO, repo_location
from mover.vsphere.address import ServerAddress, TlsPolicy
from mover.vsphere.session import Credentials

MiB = 1024 * 1024
STOPPED = ("the snapshot was removed and nothing was committed; run the same backup again to "
           "resume where it stopped")


EXAMPLE = """example:
  MOVER_PASSWORD_FILE=/etc/mover/vc.password mover backup --server vc.example.com \\
    --user backup@vsphere.local --vm web01 --repo /backups/repo
  mover backup ... --full --json      # a full, JSON lines on stdout (result last)
"""

def declare(sub: Commands,
            common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    b = sub.add_parser("backup", parents=[common], epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="back up a VM (full or incremental)")
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
    b.add_argument("--quiesce-fallback", action="store_true",
                   help="when quiescing fails 3 times, take a crash-consistent snapshot "
                   "(with a warning) instead of failing")
    b.add_argument("--busy-wait", type=float, default=300.0, metavar="SECONDS",
                   help="wait this long for a VM busy with another tool's snapshot or "
                   "consolidation (default 300)")
    b.add_argument("--no-consolidate", action="store_true",
                   help="only warn when vSphere says the VM needs disk consolidation")
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
    b.add_argument("--host-wait", type=float, default=knobs.host_wait, metavar="SECONDS",
                   help="how long a disk may wait in all on a host answering 503 (busy) or "
                   "500 (disk locked by another reader), plus 10 s per GiB of the disk")
    b.add_argument("--keepalive", type=float, default=knobs.keepalive, metavar="SECONDS",
                   help="ping the vSphere session this often while copying (0: never)")
    b.add_argument("--checkpoint-every", type=int, default=knobs.sync_every // MiB,
                   metavar="MiB", help="make stored data durable and resumable after this "
                   "much is read (a crash costs at most this much again)")
    nbd = NbdSettings()
    b.add_argument("--transport", choices=CHOICES, default=nbd.transport,
                   help="how disks are read: folder (datastore HTTPS), nbd (VDDK through "
                   "nbdkit), auto (folder where it can, nbd for the rest; default)")
    b.add_argument("--nbdkit-plugin", default=nbd.plugin, metavar="NAME|PATH",
                   help="nbdkit plugin serving the snapshot's disks (default vddk)")
    b.add_argument("--vddk-libdir", metavar="DIR", help="VDDK's directory (holding lib64/)")
    b.add_argument("--vddk-transports", metavar="MODES",
                   help="VDDK transport modes in order, e.g. nbdssl:nbd")
    b.add_argument("--nbdkit-filter", action="append", default=[], metavar="NAME",
                   help="an nbdkit filter in front of the plugin (repeatable), e.g. retry")
    b.add_argument("--nbdkit-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a parameter for the filters (repeatable), e.g. retries=5")
    b.add_argument("--json", action="store_true", help="JSON lines on stdout, result last")
    b.set_defaults(run=run)
    return b


def settings(args: argparse.Namespace) -> BackupSettings:
    """The typed settings of the parsed options; UsageError naming a bad one."""
    return BackupSettings(
        server=ServerAddress.parse(args.server),
        credentials=Credentials(args.user, password(args.password_file)),
        vm=args.vm, repo=args.repo,
        tls=TlsPolicy(insecure=args.insecure, thumbprint=args.thumbprint),
        full=args.full, read_all=args.read_all, quiesce=args.quiesce,
        quiesce_fallback=args.quiesce_fallback, busy_wait=_busy_wait(args.busy_wait),
        consolidate=not args.no_consolidate,
        enable_cbt=not args.no_enable_cbt, orphan_age=_orphan_age(args.orphan_age),
        block_size=args.block_size * MiB if args.block_size else None,
        parallel_disks=max(1, args.parallel_disks),
        canary_blocks=0 if args.no_canary else max(0, args.canary_blocks),
        pipeline=_pipeline(args),
        nbd=NbdSettings(transport=args.transport, plugin=args.nbdkit_plugin,
                        libdir=args.vddk_libdir, transports=args.vddk_transports,
                        filters=tuple(args.nbdkit_filter),
                        filter_args=tuple(args.nbdkit_option)))


def run(args: argparse.Namespace) -> int:
    backup = settings(args)
    reporter = JsonReporter() if args.json else BarReporter()
    result: BackupResult = run_async(run_backup(backup, reporter), STOPPED)
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


def _busy_wait(seconds: float) -> float:
    if not seconds >= 0:
        raise UsageError("--busy-wait must be at least 0 seconds")
    return seconds


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
                             ("--host-wait", args.host_wait >= 0, "at least 0"),
                             ("--checkpoint-every", args.checkpoint_every >= 1, "at least 1")):
        if not ok:
            raise UsageError(f"{option} must be {rule}")
    return PipelineSettings(fetchers=max(1, args.fetchers), read_timeout=args.read_timeout,
                            idle_timeout=args.idle_timeout, read_attempts=args.read_attempts,
                            retry_budget=args.retry_budget, keepalive=args.keepalive,
                            host_wait=args.host_wait,
                            sync_every=args.checkpoint_every * MiB)
