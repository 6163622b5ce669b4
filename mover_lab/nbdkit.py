"""A real nbdkit on a private Unix socket, for tests and benchmarks (Debian's nbdkit)."""

from __future__ import annotations

import shutil
import socket as sockets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def require_nbdkit() -> str:
    found = shutil.which("nbdkit")
    if found is None:
        raise RuntimeError("nbdkit is not installed: run scripts/test (its ensure_nbd "
                           "installs Debian's nbdkit and nbdkit-plugin-python)")
    return found


@contextmanager
def nbdkit(socket: Path, *args: str | Path,
           timeout: float = 10.0) -> Iterator[subprocess.Popen[bytes]]:
    """``nbdkit -U socket -f --exit-with-parent ARGS``, until the socket answers; stopped
    (and waited for) on exit."""
    argv = [require_nbdkit(), "-U", str(socket), "-f", "--exit-with-parent", *map(str, args)]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while not _answers(socket):
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise AssertionError(f"nbdkit exited {proc.returncode}: {err}")
            if time.monotonic() > deadline:
                raise AssertionError(f"nbdkit did not listen on {socket} in {timeout} s")
            time.sleep(0.01)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def _answers(path: Path) -> bool:
    """nbdkit creates the socket file a moment before it listens on it."""
    with sockets.socket(sockets.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True
