"""The job file of ``mover run``: JSON or TOML, validated by one pydantic model.

The model is the schema (``mover run --schema`` prints its JSON Schema; the README documents
every key). Values are taken strictly as written: ``"yes"`` is not a boolean and ``2.5`` not a
whole number. Every refusal is a ``UsageError`` naming the key path (``keep.daily``,
``vms[2]``) and what was expected. A password is never in a job file: ``password_file``
(readable by its owner only) or ``password_env`` (the name of an environment variable).
"""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mover.canary import DEFAULT_BLOCKS
from mover.errors import UsageError
from mover.jobs.settings import BackupSettings, JobSettings, NbdSettings
from mover.pipeline.copy import PipelineSettings
from mover.repo.s3url import is_s3_url, parse_s3_url
from mover.retention import KeepPolicy
from mover.vsphere.address import ServerAddress, TlsPolicy
from mover.vsphere.session import Credentials

MiB = 1024 * 1024
_KNOBS = PipelineSettings()
Positive = Annotated[int, Field(ge=1)]


class Keep(BaseModel):
    """Retention applied after success to each VM that committed (see ``mover forget``)."""

    model_config = ConfigDict(strict=True, extra="forbid")
    last: int | None = Field(None, ge=0, description="keep the N newest backups")
    hourly: int | None = Field(None, ge=0)
    daily: int | None = Field(None, ge=0)
    weekly: int | None = Field(None, ge=0)
    monthly: int | None = Field(None, ge=0)
    yearly: int | None = Field(None, ge=0)


class Job(BaseModel):
    """One job of ``mover run``: the VMs to back up into one repository, and how."""

    model_config = ConfigDict(strict=True, extra="forbid", title="mover run job")

    server: str = Field(description="vCenter/ESXi host name or URL")
    user: str
    password_file: str | None = Field(None, description="file holding the password; must "
                                      "not be readable by group or others (chmod 600)")
    password_env: str | None = Field(None, description="name of the environment variable "
                                     "holding the password")
    insecure: bool = Field(False, description="do not verify the server certificate")
    thumbprint: str | None = Field(None, description="pin the server certificate's SHA-256 "
                                   "fingerprint")
    vms: list[str] = Field(min_length=1, description="names, MoRefs, instance UUIDs or "
                           "inventory paths; each at most once")
    repo: str = Field(description="the repository: a directory, or s3://BUCKET/PREFIX "
                      "(endpoint and credentials from the AWS_* environment)")
    full: bool = False
    read_all: bool = False
    quiesce: bool = False
    quiesce_fallback: bool = Field(False, description="quiescing failed 3 times: take a "
                                   "crash-consistent snapshot with a warning")
    busy_wait: float = Field(300.0, ge=0, description="seconds to wait for a VM busy with "
                             "another tool's snapshot or consolidation")
    consolidate: bool = Field(True, description="run ConsolidateVMDisks_Task when vSphere "
                              "says the VM needs it")
    enable_cbt: bool = True
    orphan_age: float = Field(24.0, ge=0, description="hours (see mover backup --orphan-age)")
    block_size: Positive | None = Field(None, description="MiB, for a NEW repository")
    fetchers: Positive = 8
    parallel_disks: Positive = Field(2, description="disks of one VM copied at once")
    canary_blocks: int = Field(DEFAULT_BLOCKS, ge=0)
    read_timeout: float = Field(_KNOBS.read_timeout, gt=0, description="seconds")
    idle_timeout: float = Field(_KNOBS.idle_timeout, gt=0, description="seconds")
    read_attempts: Positive = _KNOBS.read_attempts
    retry_budget: int = Field(_KNOBS.retry_budget, ge=0)
    keepalive: float = Field(_KNOBS.keepalive, ge=0, description="seconds; 0: never")
    host_wait: float = Field(_KNOBS.host_wait, ge=0, description="seconds a disk may wait on "
                             "a busy (503) or locking (500) host, plus 10 s per GiB")
    transport: Literal["folder", "nbd", "auto"] = Field(
        "auto", description="how disks are read (see mover backup --transport)")
    nbdkit_plugin: str = Field("vddk", description="nbdkit plugin name or path")
    vddk_libdir: str | None = Field(None, description="VDDK's directory (holding lib64/)")
    vddk_transports: str | None = Field(None, description="VDDK modes, e.g. nbdssl:nbd")
    checkpoint_every: Positive = Field(_KNOBS.sync_every // MiB, description="MiB")
    parallel_vms: Positive = Field(1, description="VMs backed up at once")
    max_disks: Positive | None = Field(None, description="disks copied at once, all VMs "
                                       "together")
    host_reads: Positive | None = Field(None, description="reads in flight per ESXi host, all "
                                        "VMs together")
    bandwidth: float | None = Field(None, gt=0, description="MiB/s over the whole job")
    host_bandwidth: float | None = Field(None, gt=0, description="MiB/s per ESXi host")
    keep: Keep | None = None
    pre_hook: list[str] | None = Field(None, min_length=1, description="command (argv, no "
                                       "shell) run before a VM's snapshot; failing skips the "
                                       "VM; env MOVER_JOB_ID, MOVER_VM")
    post_hook: list[str] | None = Field(None, min_length=1, description="command run after "
                                        "the snapshot is removed; env adds MOVER_BACKUP_ID, "
                                        "MOVER_STATUS")
    hook_timeout: float = Field(600.0, gt=0, description="seconds")
    metrics_file: str | None = Field(None, description="Prometheus textfile written at the "
                                     "end (node-exporter textfile collector)")

    @field_validator("repo")
    @classmethod
    def _repo(cls, value: str) -> str:
        if is_s3_url(value):
            parse_s3_url(value)   # ValueError naming what is wrong
        elif not value:
            raise ValueError("give a directory or s3://BUCKET/PREFIX")
        return value

    @model_validator(mode="before")
    @classmethod
    def _no_password(cls, data: Any) -> Any:
        if isinstance(data, dict) and "password" in data:
            raise ValueError("key 'password' is not allowed: a password is never in a job "
                             "file; put it in a file named by \"password_file\" (chmod 600), "
                             "or name an environment variable in \"password_env\"")
        return data

    @model_validator(mode="after")
    def _one_password_source(self) -> Job:
        if (self.password_file is None) == (self.password_env is None):
            raise ValueError("give exactly one of \"password_file\" and \"password_env\"")
        if self.insecure and self.thumbprint is not None:
            raise ValueError("\"insecure\" and \"thumbprint\" exclude each other")
        return self

    @field_validator("vms")
    @classmethod
    def _each_vm_once(cls, vms: list[str]) -> list[str]:
        seen: set[str] = set()
        for vm in vms:
            if not vm:
                raise ValueError("a VM name is empty")
            if vm in seen:
                raise ValueError(f"VM {vm!r} is listed twice")
            seen.add(vm)
        return vms


def schema() -> dict[str, Any]:
    return Job.model_json_schema()


def parse(text: str, source: str) -> Job:
    """The job in ``text`` (TOML when ``source`` ends in .toml, else JSON)."""
    try:
        data = (tomllib.loads(text) if source.endswith(".toml") else json.loads(text))
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "TOML" if source.endswith(".toml") else "JSON"
        raise UsageError(f"job file {source} is not valid {kind}: {exc}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"job file {source} must hold one object (a table)")
    try:
        return Job.model_validate(data)
    except ValidationError as exc:
        raise UsageError(f"job file {source}: " + "; ".join(
            _message(e) for e in exc.errors(include_url=False))) from None


def _message(error: Any) -> str:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]).lstrip(".")
    kind, msg = error["type"], error["msg"]
    if kind == "extra_forbidden":
        known = ", ".join(sorted(Keep.model_fields if where.startswith("keep.")
                                 else Job.model_fields))
        return f"unknown key {where!r} (known keys: {known})"
    if kind == "missing":
        return f"missing required key {where!r}"
    if kind == "value_error":
        text = msg.removeprefix("Value error, ")
        return f"{where!r}: {text}" if where else text
    return f"{where!r}: {msg}, not {json.dumps(error.get('input'), default=str)}"


def settings(job: Job, source: str) -> JobSettings:
    """The typed settings of a valid job; reads the password (UsageError when it cannot)."""
    return JobSettings(
        backup=BackupSettings(
            server=ServerAddress.parse(job.server),
            credentials=Credentials(job.user, _password(job, source)),
            vm="", repo=job.repo if is_s3_url(job.repo) else Path(job.repo),
            tls=TlsPolicy(insecure=job.insecure, thumbprint=job.thumbprint),
            full=job.full, read_all=job.read_all, quiesce=job.quiesce,
            quiesce_fallback=job.quiesce_fallback, busy_wait=job.busy_wait,
            consolidate=job.consolidate,
            enable_cbt=job.enable_cbt, orphan_age=job.orphan_age * 3600.0,
            block_size=job.block_size * MiB if job.block_size else None,
            parallel_disks=job.parallel_disks, canary_blocks=job.canary_blocks,
            pipeline=PipelineSettings(
                fetchers=job.fetchers, read_timeout=job.read_timeout,
                idle_timeout=job.idle_timeout, read_attempts=job.read_attempts,
                retry_budget=job.retry_budget, keepalive=job.keepalive,
                host_wait=job.host_wait, sync_every=job.checkpoint_every * MiB),
            nbd=NbdSettings(transport=job.transport, plugin=job.nbdkit_plugin,
                            libdir=job.vddk_libdir, transports=job.vddk_transports)),
        vms=tuple(job.vms), parallel_vms=job.parallel_vms, max_disks=job.max_disks,
        host_reads=job.host_reads,
        bandwidth=job.bandwidth * MiB if job.bandwidth is not None else None,
        host_bandwidth=job.host_bandwidth * MiB if job.host_bandwidth is not None else None,
        keep=_keep(job.keep, source) if job.keep is not None else None,
        pre_hook=tuple(job.pre_hook or ()), post_hook=tuple(job.post_hook or ()),
        hook_timeout=job.hook_timeout,
        metrics_file=Path(job.metrics_file) if job.metrics_file else None,
        secret_variables=tuple({"MOVER_PASSWORD", job.password_env or "MOVER_PASSWORD"}))


def _keep(keep: Keep, source: str) -> KeepPolicy:
    try:
        return KeepPolicy(**keep.model_dump())
    except UsageError as exc:
        raise UsageError(f"job file {source}: 'keep': {exc}") from None


def _password(job: Job, source: str) -> str:
    if job.password_env is not None:
        value = os.environ.get(job.password_env)
        if value is None:
            raise UsageError(f"job file {source}: 'password_env': the environment variable "
                             f"{job.password_env} is not set")
        return value
    assert job.password_file is not None
    path = Path(job.password_file)
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise UsageError(f"job file {source}: 'password_file': {path} is readable by "
                             f"group or others (mode {stat.filemode(mode)}): chmod 600 {path}")
        return path.read_text().rstrip("\r\n")
    except OSError as exc:
        raise UsageError(f"job file {source}: 'password_file': cannot read {path}: "
                         f"{exc.strerror}") from exc
