"""Backups through NBD against the lab: a lab serving HTTPS (VDDK needs a certificate to
pin by SHA-1) and mover started with the argv of production, the stand-in as the plugin."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mover_lab import Lab

from .runner import backup_args

STANDIN = Path(__file__).resolve().parents[2] / "scripts" / "vddk-standin"


@pytest.fixture(scope="session")
def tls_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab.start(tmp_path_factory.mktemp("nbd-lab"), tls=True)
    try:
        yield lab
    finally:
        lab.stop()


@pytest.fixture
def nbd_lab(tls_lab: Lab) -> Iterator[Lab]:
    """The HTTPS lab with snapshot digests on, no faults and zeroed counters."""
    tls_lab.clear_faults()
    tls_lab.configure(snapshotDigests=True, folderConnectionBps=0, folderTotalBps=0)
    tls_lab.reset_counters()
    yield tls_lab
    tls_lab.clear_faults()
    tls_lab.configure(folderConnectionBps=0, folderTotalBps=0)


def nbd_backup_args(lab: Lab, vm: str, repo: Path, *extra: str) -> list[str | Path]:
    """``mover backup`` as production runs it with VDDK, the stand-in as the plugin."""
    assert lab.thumbprint is not None
    return [*backup_args(lab, vm, repo), "--thumbprint", lab.thumbprint,
            "--nbdkit-plugin", str(STANDIN), *extra]


def nbdkit_processes(vm_moref: str) -> list[int]:
    """PIDs of the nbdkit processes serving a disk of VM ``vm_moref``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:
            continue
        if "State:\tZ" in status:
            continue  # a zombie is dead; its parent reaps it
        if argv and os.path.basename(argv[0]) == b"nbdkit" and \
                f"vm=moref={vm_moref}".encode() in argv:
            found.append(int(entry.name))
    return found
