"""nbdkit as mover's NBD server: one process per disk, on a private Unix socket.

``VddkParams`` are the parameters of nbdkit-vddk-plugin(1), exactly: ``server``, ``port``,
``user``, ``password=+FILE`` (the password is written to a 0600 file in a private 0700
directory and never appears in argv), ``thumbprint`` (SHA-1, as VDDK wants it),
``vm=moref=``, ``snapshot=`` (the backup snapshot's MoRef), ``file=`` (the snapshot's disk,
``[datastore] path.vmdk``), ``libdir``, ``transports``, ``compression``. The plugin is the
vddk plugin by name, or a path: a shared object, or a script whose ``#!`` line runs nbdkit
with a language plugin (``#!/usr/bin/env -S nbdkit python``, as ``scripts/vddk-standin``).

``NbdkitServer`` starts nbdkit with ``--exit-with-parent`` (the kernel ends it if mover dies,
even by SIGKILL), ``--readonly`` and ``-f`` (it stays mover's child), sends every line of its
stderr to mover's log, waits until the socket answers and ``stop`` ends it (SIGTERM, then
SIGKILL) and removes the directory. A plugin that is missing or fails to start is a
``TransportError`` (permanent) that names what to install.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mover import clock
from mover.errors import TransportError
from mover.pipeline.nbd import NbdTransport, unix
from mover.pipeline.nbdproto import Extent

log = logging.getLogger(__name__)

INSTALL_NBDKIT = ("install nbdkit (Debian/Ubuntu: apt-get install nbdkit nbdkit-plugin-python; "
                  "RHEL/Fedora: dnf install nbdkit nbdkit-python-plugin)")
INSTALL_VDDK = ("install nbdkit's vddk plugin (RHEL/Fedora: nbdkit-vddk-plugin; Debian 13+, "
                "Ubuntu 25.04+: nbdkit-plugin-vddk) and VMware's VDDK, and give "
                "--vddk-libdir the VDDK directory (the one holding lib64/); see docs/vsphere.md")


@dataclass(frozen=True, slots=True)
class VddkParams:
    server: str
    user: str
    vm_moref: str
    snapshot_moref: str
    file: str                           # "[datastore] folder/name.vmdk" of the snapshot
    thumbprint: str | None = None       # SHA-1, colon-separated hex
    port: int | None = None             # None: VDDK's default (443)
    libdir: str | None = None
    transports: str | None = None       # e.g. "nbdssl:nbd"
    compression: str | None = None      # none, zlib, fastlz, skipz

    def arguments(self, password_file: Path) -> list[str]:
        """The plugin's ``key=value`` arguments, in nbdkit-vddk-plugin(1)'s terms."""
        args = [f"server={self.server}", f"user={self.user}", f"password=+{password_file}"]
        if self.port is not None:
            args.append(f"port={self.port}")
        if self.thumbprint is not None:
            args.append(f"thumbprint={self.thumbprint}")
        args += [f"vm=moref={self.vm_moref}", f"snapshot={self.snapshot_moref}",
                 f"file={self.file}"]
        for key, value in (("libdir", self.libdir), ("transports", self.transports),
                           ("compression", self.compression)):
            if value is not None:
                args.append(f"{key}={value}")
        return args


def plugin_argv(plugin: str) -> list[str]:
    """How nbdkit is told the plugin: a name, a shared object, or a script run by the
    language plugin its ``#!`` line names. Raises TransportError if it cannot be found."""
    nbdkit = shutil.which("nbdkit")
    if nbdkit is None:
        raise TransportError(f"nbdkit is not installed: {INSTALL_NBDKIT}", transient=False)
    if "/" not in plugin:
        if not _plugin_installed(nbdkit, plugin):
            fix = INSTALL_VDDK if plugin == "vddk" else f"install nbdkit's {plugin} plugin"
            raise TransportError(f"nbdkit has no plugin {plugin!r}: {fix}", transient=False)
        return [plugin]
    path = Path(plugin)
    try:
        head = path.read_bytes()[:256]
    except OSError as exc:
        raise TransportError(f"--nbdkit-plugin {plugin}: {exc.strerror}", transient=False
                             ) from exc
    if head.startswith(b"#!"):
        words = head[2:].split(b"\n", 1)[0].decode(errors="replace").split()
        if "nbdkit" in [Path(w).name for w in words] and words[-1] != "nbdkit":
            return [words[-1], str(path.resolve())]
        raise TransportError(f"--nbdkit-plugin {plugin}: a script must start with "
                             "'#!/usr/bin/env -S nbdkit LANGUAGE' (e.g. python)",
                             transient=False)
    return [str(path.resolve())]


def _plugin_installed(nbdkit: str, name: str) -> bool:
    try:
        out = subprocess.run([nbdkit, "--dump-config"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    plugindir = next((line.split("=", 1)[1] for line in out.splitlines()
                      if line.startswith("plugindir=")), "")
    return any((Path(plugindir) / f"nbdkit-{name}-plugin{ext}").exists() for ext in (".so", ""))


def plugin_environment() -> dict[str, str]:
    """mover's environment without its own Python's: an interpreter embedded in nbdkit (its
    python plugin) finds its standard library by looking for ``python3`` on PATH, and would
    take the virtualenv's (another build of Python: its C modules fail to load)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = path_without_venv(env.get("PATH", ""))
    return env


def path_without_venv(path: str) -> str:
    """``path`` (a PATH value) without this virtualenv's ``bin``, so that an interpreter
    embedded in nbdkit finds the system's ``python3`` and its standard library."""
    if sys.prefix == sys.base_prefix:
        return path
    own = os.path.realpath(os.path.join(sys.prefix, "bin"))
    return os.pathsep.join(d for d in path.split(os.pathsep)
                           if d and os.path.realpath(d) != own)


class NbdkitServer:
    """One nbdkit serving one disk. ``await start()`` returns the socket path."""

    def __init__(self, plugin: str, params: VddkParams, password: str, name: str,
                 filters: tuple[str, ...] = (), filter_args: tuple[str, ...] = (),
                 start_timeout: float = 120.0) -> None:
        self.name = name
        self._plugin = plugin
        self._params = params
        self._password = password
        self._filters = filters
        self._filter_args = filter_args
        self._timeout = start_timeout
        self._dir: Path | None = None
        self.process: asyncio.subprocess.Process | None = None
        self._stderr: asyncio.Task[None] | None = None
        self._last_lines: list[str] = []

    @property
    def exited(self) -> bool:
        return self.process is None or self.process.returncode is not None

    @property
    def socket(self) -> Path:
        assert self._dir is not None
        return self._dir / "nbd.sock"

    async def start(self) -> Path:
        plugin = plugin_argv(self._plugin)
        self._dir = Path(tempfile.mkdtemp(prefix="mover-nbd-"))   # 0700
        secret = self._dir / "password"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self._password)
        argv = ["nbdkit", "--exit-with-parent", "--readonly", "-f", "-U", str(self.socket),
                *(f"--filter={f}" for f in self._filters), *plugin,
                *self._params.arguments(secret), *self._filter_args]
        log.info("starting %s", " ".join(argv))  # no secret in it: the password is a file
        try:
            self.process = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, env=plugin_environment())
        except OSError as exc:
            await self.stop()
            raise TransportError(f"cannot run nbdkit: {exc.strerror}: {INSTALL_NBDKIT}",
                                 transient=False) from exc
        self._stderr = asyncio.ensure_future(self._log_stderr())
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise
        secret.unlink()  # the plugin read it at start-up; nothing of it stays on disk
        return self.socket

    async def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = clock.monotonic() + self._timeout
        while not self.socket.exists():
            if self.process.returncode is not None:
                if self._stderr is not None:
                    await asyncio.wait([self._stderr], timeout=5)
                said = " | ".join(self._last_lines[-5:]) or "nothing on stderr"
                raise TransportError(
                    f"nbdkit for {self.name} exited with status {self.process.returncode} "
                    f"before serving ({said}); check the plugin's parameters, or "
                    f"{INSTALL_VDDK if self._plugin == 'vddk' else INSTALL_NBDKIT}",
                    transient=False)
            if clock.monotonic() > deadline:
                raise TransportError(f"nbdkit for {self.name} did not listen within "
                                     f"{self._timeout:.0f} s", transient=True)
            await asyncio.sleep(0.02)

    async def _log_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        while line := await self.process.stderr.readline():
            text = line.decode("utf-8", "replace").rstrip()
            self._last_lines = [*self._last_lines[-19:], text]
            log.info("nbdkit[%s]: %s", self.name, text)

    async def stop(self) -> None:
        """End nbdkit (SIGTERM, then SIGKILL after 10 s) and remove its directory;
        idempotent, and safe to call while cancelled."""
        proc, self.process = self.process, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.shield(asyncio.wait_for(proc.wait(), 10))
            except (TimeoutError, asyncio.CancelledError):
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.shield(proc.wait())
        if self._stderr is not None:
            await asyncio.wait([self._stderr], timeout=5)
            self._stderr.cancel()
            self._stderr = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class NbdkitTransport:
    """The ``Transport`` of one disk read through its own nbdkit: ``open`` starts the
    server and connects (checking the export is ``size`` bytes); ``close`` disconnects and
    ends the server, and is idempotent. ``extents`` is NBD block status."""

    def __init__(self, server: NbdkitServer, size: int, max_readers: int,
                 connections: int = 2, read_timeout: float | None = None) -> None:
        self.name = server.name
        self.size = size
        self.max_readers = max_readers
        self.server = server
        self._make = functools.partial(NbdTransport, name=server.name,
                                       max_readers=max_readers, connections=connections,
                                       read_timeout=read_timeout)
        self._nbd: NbdTransport | None = None

    async def open(self) -> NbdkitTransport:
        path = await self.server.start()
        try:
            for attempt in range(200):  # the socket file exists a moment before nbdkit listens
                try:
                    self._nbd = await self._make(unix(str(path))).open(self.size)
                    break
                except TransportError as exc:
                    if not exc.transient or attempt == 199 or self.server.exited:
                        raise
                    await asyncio.sleep(0.02)
        except BaseException:
            await self.server.stop()
            raise
        return self

    async def read_into(self, offset: int, buf: memoryview) -> None:
        assert self._nbd is not None, "open the transport first"
        await self._nbd.read_into(offset, buf)

    async def extents(self, offset: int, length: int) -> list[Extent]:
        assert self._nbd is not None, "open the transport first"
        return await self._nbd.extents(offset, length)

    async def close(self) -> None:
        nbd, self._nbd = self._nbd, None
        try:
            if nbd is not None:
                await nbd.close()
        finally:
            await self.server.stop()
