"""What the backups of one process share: the repository handle, the control thread, the
vSphere session, and the job's limits (disks copied at once, reads in flight and bandwidth
per ESXi host, bandwidth over all). ``mover backup`` opens it for one VM, ``mover run`` for
every VM of its job (``mover.jobs.worker``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass

from mover.jobs.control import ControlPlane
from mover.jobs.settings import BackupSettings
from mover.pipeline.limits import Bandwidth, HostLimits
from mover.repo import Repository
from mover.vsphere.address import TlsPolicy
from mover.vsphere.session import Session

log = logging.getLogger(__name__)

WEAK_PIN = ("--thumbprint is a SHA-1 fingerprint, which can be forged (SHA-1 collisions): pin "
            "the certificate's SHA-256 instead (openssl x509 -noout -fingerprint -sha256)")


@dataclass(slots=True)
class Shared:
    repo: Repository
    control: ControlPlane
    session: Session
    hosts: HostLimits | None = None
    bandwidth: Bandwidth | None = None
    disks: asyncio.Semaphore | None = None   # disks copied at once, all VMs together
    executor: ThreadPoolExecutor | None = None  # the CPU pool of every VM's data plane
    tls: TlsPolicy | None = None     # for the data plane, when it differs from the settings'
    warnings: tuple[str, ...] = ()   # of the connection, for every VM's result


@asynccontextmanager
async def connected(settings: BackupSettings, *, hosts: HostLimits | None = None,
                    bandwidth: Bandwidth | None = None,
                    disks: int | None = None, pool: bool = False) -> AsyncIterator[Shared]:
    """Open (or create) ``settings.repo``, remove its stale leftovers, log in to
    ``settings.server``; log out and stop the control thread on the way out. ``pool``: one
    CPU pool for every backup (each waits for its own work in it when it ends)."""
    repo = await asyncio.to_thread(Repository.open, settings.repo, True, settings.block_size)
    await asyncio.to_thread(repo.clean_stale)
    control = ControlPlane()
    session = Session(settings.server, settings.credentials, settings.tls)
    executor = (ThreadPoolExecutor(settings.pipeline.workers, thread_name_prefix="mover-cpu")
                if pool else None)
    try:
        await control.run(session.login)
        tls: TlsPolicy | None = None
        warnings: tuple[str, ...] = ()
        if settings.tls.weak:
            log.warning("%s", WEAK_PIN)
            warnings = (WEAK_PIN,)
            if session.pinned_sha256 is not None:
                # aiohttp pins SHA-256 only: pin the certificate the SHA-1 pin accepted
                tls = TlsPolicy(thumbprint=session.pinned_sha256.hex())
        yield Shared(repo, control, session, hosts, bandwidth,
                     asyncio.Semaphore(disks) if disks is not None else None, executor,
                     tls, warnings)
    finally:
        try:
            await control.run(session.logout)
        finally:
            control.close()
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)
