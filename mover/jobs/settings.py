"""Typed settings of a job, built by the CLI or from a job file; never an argparse Namespace."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mover.canary import DEFAULT_BLOCKS
from mover.errors import UsageError
from mover.pipeline.copy import PipelineSettings
from mover.repo.s3url import RepoLocation
from mover.retention import KeepPolicy
from mover.vsphere.address import ServerAddress, TlsPolicy
from mover.vsphere.session import Credentials

#: nbdkit-vddk-plugin(1)'s parameters: never taken from --nbdkit-option.
VDDK_KEYS = frozenset({"compression", "config", "cookie", "file", "libdir", "nfchostport",
                       "noreexec", "password", "port", "reexeccmd", "server", "single-link",
                       "snapshot", "thumbprint", "transports", "unbuffered", "user", "vm"})


@dataclass(frozen=True, slots=True)
class NbdSettings:
    """How disks are read (``mover.jobs.routes``) and how nbdkit's vddk plugin is run
    (nbdkit-vddk-plugin(1); README "Reading disks through VDDK")."""

    transport: str = "auto"             # folder | nbd | auto
    plugin: str = "vddk"                # an nbdkit plugin name, or the path of one
    libdir: str | None = None           # VDDK's directory (holding lib64/)
    transports: str | None = None       # VDDK transport modes, e.g. "nbdssl:nbd"
    compression: str | None = None      # VDDK NBD compression: none, zlib, fastlz, skipz
    filters: tuple[str, ...] = ()       # nbdkit filters in front of the plugin
    filter_args: tuple[str, ...] = ()   # their key=value parameters

    def __post_init__(self) -> None:
        if self.transport not in ("folder", "nbd", "auto"):
            raise UsageError(f"--transport {self.transport!r}: give folder, nbd or auto")
        for arg in self.filter_args:
            key = arg.split("=", 1)[0]
            if "=" not in arg or key in VDDK_KEYS:
                raise UsageError(f"--nbdkit-option {arg.split('=', 1)[0]!r}: give a filter's "
                                 "KEY=VALUE; the plugin's own parameters (server, user, "
                                 "password, vm, snapshot, file, ...) are mover's to set")


@dataclass(frozen=True, slots=True)
class BackupSettings:
    server: ServerAddress
    credentials: Credentials
    vm: str
    repo: RepoLocation                  # a directory or s3://BUCKET/PREFIX
    tls: TlsPolicy = field(default_factory=TlsPolicy)
    full: bool = False                  # ignore the previous backup even when usable
    read_all: bool = False              # a full reading every byte, not asking CBT ("*")
    quiesce: bool = False
    quiesce_fallback: bool = False      # quiescing failed 3 times: a crash-consistent snapshot
    busy_wait: float = 300.0            # seconds to wait for a VM busy with another task
    consolidate: bool = True            # ConsolidateVMDisks_Task when vSphere says it is needed
    enable_cbt: bool = True             # may the job switch CBT on (with a stun/unstun cycle)
    block_size: int | None = None       # only for a new repository
    parallel_disks: int = 2
    orphan_age: float = 24 * 3600.0     # seconds: older foreign mover snapshots are orphans
    canary_blocks: int = DEFAULT_BLOCKS   # per incremental disk (mover.canary); 0: none
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    nbd: NbdSettings = field(default_factory=NbdSettings)


@dataclass(frozen=True, slots=True)
class RestoreSettings:
    repo: RepoLocation                  # a directory or s3://BUCKET/PREFIX
    backup_id: str
    disk_key: int
    output: Path | None                 # None: standard output
    force: bool = False                 # replace an existing output file
    workers: int = 4                    # threads reading and checking chunks
    base_id: str | None = None          # differential: the backup the output holds today
    verify_base: int = 0                # blocks of the output to check against base_id


@dataclass(frozen=True, slots=True)
class JobSettings:
    """A job of ``mover run``: the backup settings every VM shares (``backup.vm`` unused),
    the VMs, and the job's limits, hooks and retention."""

    backup: BackupSettings
    vms: tuple[str, ...]
    parallel_vms: int = 1
    max_disks: int | None = None            # disks copied at once, all VMs together
    host_reads: int | None = None           # reads in flight per ESXi host, all VMs together
    bandwidth: float | None = None          # bytes a second over the whole job
    host_bandwidth: float | None = None     # bytes a second per ESXi host
    keep: KeepPolicy | None = None          # retention after success
    pre_hook: tuple[str, ...] = ()          # argv, before the snapshot; failing skips the VM
    post_hook: tuple[str, ...] = ()         # argv, after the snapshot is removed
    hook_timeout: float = 600.0
    metrics_file: Path | None = None
    secret_variables: tuple[str, ...] = ("MOVER_PASSWORD",)  # never passed on to a hook
