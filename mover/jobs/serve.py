"""``mover serve``: export one disk of one backup read-only over NBD until SIGTERM/SIGINT.

The server is nbdkit (Debian's ``nbdkit`` and ``nbdkit-plugin-python``) running
``mover.jobs.nbdplugin``; this job checks the backup and disk first (so a typo fails here,
with mover's exit status), holds the repository's shared lock for as long as the export is
up (gc waits instead of removing a pack a client is reading), starts nbdkit with
``--readonly --exit-with-parent`` in a minimal environment (no secret of mover's reaches
it), reports the export's URI once nbdkit listens, and on SIGTERM/SIGINT stops it and
returns. If nbdkit exits by itself, that is an error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import site
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import mover
from mover import clock
from mover.errors import MoverError, NotFoundError, UsageError
from mover.pipeline.nbdkit import path_without_venv
from mover.repo import Repository
from mover.repo.s3url import RepoLocation, is_s3_url

PLUGIN = Path(__file__).with_name("nbdplugin.py")
READY_TIMEOUT = 30.0      # seconds for nbdkit to start listening
STOP_TIMEOUT = 10.0       # seconds nbdkit gets to finish after SIGTERM before SIGKILL


@dataclass(frozen=True, slots=True)
class ServeSettings:
    repo: RepoLocation                  # a directory or s3://BUCKET/PREFIX
    backup_id: str
    disk_key: int
    socket: Path | None = None          # a Unix socket, or:
    host: str | None = None             # a TCP address (no authentication: see README)
    port: int = 10809
    threads: int = 8                    # requests nbdkit serves at once


@dataclass(slots=True)
class ServeResult:
    backup_id: str
    disk_key: int
    uri: str
    capacity: int
    seconds: float
    stopped_by: str


def listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) as (host, port); UsageError otherwise."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen {text!r} must be HOST:PORT, e.g. 127.0.0.1:10809")
    return host.strip("[]"), int(port)


def uri(settings: ServeSettings) -> str:
    if settings.socket is not None:
        return f"nbd+unix:///?socket={settings.socket.absolute()}"
    host = f"[{settings.host}]" if settings.host and ":" in settings.host else settings.host
    return f"nbd://{host}:{settings.port}"


def run_serve(settings: ServeSettings, ready: Callable[[str], None]) -> ServeResult:
    """Serve until a signal; ``ready(uri)`` is called once clients can connect."""
    started = clock.monotonic()
    nbdkit = shutil.which("nbdkit")
    if nbdkit is None:
        raise UsageError("mover serve needs nbdkit and its Python plugin: apt-get install "
                         "nbdkit nbdkit-plugin-python")
    if settings.socket is not None and os.path.lexists(settings.socket):
        raise UsageError(f"{settings.socket} exists: remove it or choose another --socket")
    repo = Repository.open(settings.repo, create=False)
    with repo.reading():
        record = repo.get_backup(settings.backup_id)
        if not any(d.key == settings.disk_key for d in record.disks):
            keys = ", ".join(str(d.key) for d in record.disks)
            raise NotFoundError(f"backup {record.id} has no disk {settings.disk_key}; its "
                                f"disks are {keys}")
        capacity = repo.read_index(record, settings.disk_key).capacity
        stopped_by = _serve(nbdkit, settings, str(settings.repo), record.id, ready)
    return ServeResult(record.id, settings.disk_key, uri(settings), capacity,
                       clock.monotonic() - started, stopped_by)


def _command(nbdkit: str, settings: ServeSettings, repo: str, backup_id: str,
             pidfile: Path) -> list[str]:
    where = (["--unix", str(settings.socket)] if settings.socket is not None
             else ["--ipaddr", settings.host or "127.0.0.1", "--port", str(settings.port)])
    return [nbdkit, "--foreground", "--readonly", "--exit-with-parent", "--pidfile",
            str(pidfile), "--threads", str(settings.threads), *where, "python", str(PLUGIN),
            f"repo={repo}", f"backup={backup_id}", f"disk={settings.disk_key}"]


# All nbdkit and its plugin need of mover's environment; nothing else is passed, so that
# a secret in it (MOVER_PASSWORD, cloud credentials) never reaches the server process.
_PASSED = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
# The plugin opens the repository itself: an s3:// one needs the AWS SDK's variables (and
# HOME for ~/.aws), the lease setting and the index cache's place; a directory needs none.
_PASSED_S3 = ("HOME", "XDG_CACHE_HOME", "MOVER_LOCK_LEASE")


def _environment(repo: str) -> dict[str, str]:
    """A minimal environment (``_PASSED``, and for an s3:// ``repo`` the AWS_* variables and
    ``_PASSED_S3``) in which nbdkit's embedded interpreter finds mover and its dependencies
    (this interpreter's site-packages) through PYTHONPATH; an editable install's .pth is not
    read there."""
    paths = [str(Path(mover.__file__).resolve().parent.parent), *site.getsitepackages()]
    old = os.environ.get("PYTHONPATH")
    passed = {name: os.environ[name] for name in _PASSED if name in os.environ}
    if "PATH" in passed:   # the embedded interpreter must find the system's python3
        passed["PATH"] = path_without_venv(passed["PATH"])
    if is_s3_url(repo):
        passed.update({name: value for name, value in os.environ.items()
                       if name.startswith("AWS_") or name in _PASSED_S3})
    return {**passed, "PYTHONPATH": os.pathsep.join(paths + ([old] if old else []))}


def _serve(nbdkit: str, settings: ServeSettings, repo: str, backup_id: str,
           ready: Callable[[str], None]) -> str:
    stop = threading.Event()
    caught: list[str] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        caught.append(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    with tempfile.TemporaryDirectory(prefix="mover-serve-") as temp:
        pidfile = Path(temp) / "nbdkit.pid"
        proc = subprocess.Popen(_command(nbdkit, settings, repo, backup_id, pidfile),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                env=_environment(repo))
        try:
            _wait_ready(proc, pidfile, stop)
            if not stop.is_set():
                ready(uri(settings))
            while not stop.wait(0.2):
                if proc.poll() is not None:
                    raise MoverError(f"nbdkit exited with status {proc.returncode} while "
                                     "serving; its messages are above")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            _stop(proc)
            if settings.socket is not None:
                with contextlib.suppress(FileNotFoundError):
                    settings.socket.unlink()
    return caught[0] if caught else "exit"


def _wait_ready(proc: subprocess.Popen[bytes], pidfile: Path, stop: threading.Event) -> None:
    deadline = clock.monotonic() + READY_TIMEOUT
    while not (pidfile.exists() and pidfile.stat().st_size > 0):
        if proc.poll() is not None:
            raise MoverError(f"nbdkit could not start the export (status {proc.returncode}); "
                             "its messages are above (a socket or port in use, or a missing "
                             "nbdkit-plugin-python)")
        if clock.monotonic() > deadline:
            raise MoverError(f"nbdkit did not start listening within {READY_TIMEOUT:.0f} s")
        if stop.wait(0.05):
            return


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
