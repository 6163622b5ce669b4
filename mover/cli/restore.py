"""``mover restore``: write one disk of a backup to a new image file, a block device or an
existing image in place (also differentially, ``--base``), or standard output; or the whole
VM into vSphere (``--to-vsphere``), or one disk onto an existing VM's (``--into-vm``)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from mover.cli.credentials import password
from mover.cli.runner import Commands, run_sync
from mover.errors import UsageError
from mover.jobs.restore import run_restore
from mover.jobs.settings import RestoreSettings
from mover.jobs.vmrestore import (
    VSphereRestoreSettings,
    disk_datastores,
    network_map,
    run_disk_into_vm,
    run_vsphere_restore,
)
from mover.progress import human_bytes
from mover.repo.s3url import REPO, repo_location
from mover.vsphere.address import ServerAddress, TlsPolicy
from mover.vsphere.session import Credentials

# The job adds what the target holds (removed, unchanged, partly written, incomplete stream).
STOPPED = "nothing more is written"


EXAMPLE = """example:
  mover restore --repo /backups/repo --backup 20261125T021500Z-3f9a1c --disk 2000 \\
    --output /tmp/web01-disk0.img
"""

def declare(sub: Commands,
            common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    r = sub.add_parser("restore", parents=[common], epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="write one disk of a backup to a file, device or stdout, or the "
                       "whole VM into vSphere (--to-vsphere)")
    r.add_argument("--repo", required=True, type=repo_location, metavar=REPO)
    r.add_argument("--backup", required=True, help="backup ID (see mover list)")
    r.add_argument("--disk", type=int, help="disk key, e.g. 2000 (not with --to-vsphere)")
    r.add_argument("--output", type=Path,
                   help="a new image file, a block device, an existing image with --base, or "
                   "- for standard output (the result line then goes to stderr)")
    r.add_argument("--force", action="store_true", help="replace an existing regular file, "
                   "or overwrite a whole block device")
    r.add_argument("--base", metavar="BASE_ID", help="differential: --output holds backup "
                   "BASE_ID today; write only the blocks that differ")
    r.add_argument("--verify-base", type=int, nargs="?", const=16, default=0, metavar="N",
                   help="with --base: first check N blocks (default 16) of --output against "
                   "BASE_ID")
    vs = r.add_argument_group("into vSphere (a new VM from the backup's saved configuration)")
    vs.add_argument("--to-vsphere", action="store_true", help="create a new VM and write "
                    "every disk of the backup into it")
    vs.add_argument("--server", help="vCenter/ESXi host name or URL")
    vs.add_argument("--user")
    vs.add_argument("--password-file", type=Path,
                    help="file holding the password (or set MOVER_PASSWORD)")
    rtls = vs.add_mutually_exclusive_group()
    rtls.add_argument("--insecure", action="store_true", help="do not verify the certificate")
    rtls.add_argument("--thumbprint", help="pin the server certificate's SHA-256 fingerprint")
    vs.add_argument("--name", help="the new VM's name (default: the backed-up VM's; a name "
                    "in use is refused)")
    vs.add_argument("--datastore", help="datastore for the VM and its disks (default: the "
                    "original one)")
    vs.add_argument("--folder", help="inventory path of the VM folder, e.g. DC0/vm/restored")
    vs.add_argument("--resource-pool", help="resource pool name or inventory path")
    vs.add_argument("--host", help="host to place the VM on")
    vs.add_argument("--network-map", action="append", default=[], metavar="OLD=NEW",
                    help="connect NICs of network OLD to NEW (repeatable)")
    vs.add_argument("--power-on", action="store_true", help="power the new VM on at the end")
    vs.add_argument("--keep-identity", action="store_true", help="keep the backed-up VM's "
                    "instance UUID, BIOS UUID and MAC addresses (refused while a VM has them)")
    vs.add_argument("--disk-datastore", action="append", default=[], metavar="KEY=DATASTORE",
                    help="put disk KEY on this datastore (repeatable; the others go on "
                    "--datastore)")
    vs.add_argument("--into-vm", metavar="VM", help="with --disk: write that disk onto the "
                    "same disk of this existing, powered-off VM (same size) instead")
    r.add_argument("--json", action="store_true")
    r.set_defaults(run=run)
    return r


def to_stdout(args: argparse.Namespace) -> bool:
    return str(args.output) == "-"


def settings(args: argparse.Namespace) -> RestoreSettings:
    if args.verify_base and not args.base:
        raise UsageError("--verify-base checks the target against --base BASE_ID: add --base")
    return RestoreSettings(args.repo, args.backup, args.disk,
                           None if to_stdout(args) else args.output, force=args.force,
                           base_id=args.base, verify_base=args.verify_base)


def run(args: argparse.Namespace) -> int:
    if args.to_vsphere or args.into_vm:
        return run_sync(lambda: _into_vsphere(args), STOPPED)
    if args.disk is None or args.output is None:
        raise UsageError("restore needs --disk KEY and --output (a file, a device or -), or "
                         "--to-vsphere")
    wanted = settings(args)
    result = run_sync(lambda: run_restore(wanted), STOPPED)
    out = sys.stderr if to_stdout(args) else sys.stdout  # stdout carries the image
    if args.json:
        print(json.dumps({"status": "restored", **asdict(result)}, sort_keys=True), file=out)
    else:
        print(f"restored disk {result.disk_key} of backup {result.backup_id} to {result.output}:"
              f" {human_bytes(result.capacity)}, {human_bytes(result.bytes_written)} written, "
              f"{result.seconds:.1f} s, every chunk verified", file=out)
    return 0


def _into_vsphere(args: argparse.Namespace) -> int:
    if not (args.server and args.user):
        raise UsageError("--to-vsphere needs --server and --user (and --password-file or "
                         "MOVER_PASSWORD)")
    settings = VSphereRestoreSettings(
        server=ServerAddress.parse(args.server),
        credentials=Credentials(args.user, password(args.password_file)),
        repo=args.repo, backup_id=args.backup,
        tls=TlsPolicy(insecure=args.insecure, thumbprint=args.thumbprint), name=args.name,
        datastore=args.datastore, folder=args.folder, resource_pool=args.resource_pool,
        host=args.host, network_map=network_map(args.network_map), power_on=args.power_on,
        keep_identity=args.keep_identity,
        disk_datastores=disk_datastores(args.disk_datastore))
    if args.into_vm:
        if args.disk is None or args.to_vsphere:
            raise UsageError("--into-vm VM writes one disk: give --disk KEY, without "
                             "--to-vsphere")
        into = run_disk_into_vm(settings, args.disk, args.into_vm)
        if args.json:
            print(json.dumps({"status": "restored", **asdict(into)}, sort_keys=True))
        else:
            print(f"wrote disk {into.disk_key} of backup {into.backup_id} onto {into.file} of "
                  f"VM {into.vm_name!r}: {human_bytes(into.capacity)}, {into.seconds:.1f} s")
        return 0
    result = run_vsphere_restore(settings)
    if args.json:
        print(json.dumps({"status": "restored", **asdict(result)}, sort_keys=True))
    else:
        print(f"restored backup {result.backup_id} as VM {result.vm_name!r} "
              f"({result.vm_moref}, {result.vmx}): {len(result.disks)} disks by "
              f"{result.method}, {result.seconds:.1f} s"
              f"{', powered on' if result.powered_on else ''}")
    return 0
