"""The VM's configuration and NVRAM saved with every backup (``BackupRecord.vm_config``).

The configuration is the backup snapshot's (``mover.vsphere.vmconfig``); the NVRAM file is
the live VM's (not a copy frozen by the snapshot), only a ``*.nvram`` in the VM's own
directory, fetched from the datastore over ``/folder`` while the snapshot exists, and kept
in the record itself (base64; a few KiB for BIOS, up to a few hundred for UEFI), so that the
record alone rebuilds the VM. A VM whose NVRAM cannot be read (or whose extraConfig points
it elsewhere) is still backed up: the result warns, and the record says ``"nvram": null``
with the reason.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from mover.errors import TransportError
from mover.jobs.control import ControlPlane
from mover.jobs.dataplane import DataPlane
from mover.vsphere import vmconfig
from mover.vsphere.session import Session

NVRAM_LIMIT = 4 * 1024 * 1024   # far above any NVRAM file; a larger one is not NVRAM


async def saved_vm_config(control: ControlPlane, session: Session, plane: DataPlane,
                          snapshot: Any, datacenter: str, warnings: list[str]) -> dict[str, Any]:
    config = await control.run(vmconfig.saved, session, snapshot)
    saved: dict[str, Any] = {"config": config, "summary": vmconfig.summary(config),
                             "nvram": None}
    try:
        where = vmconfig.nvram_file(config)
    except vmconfig.NvramPathRefused as exc:
        saved["nvram_missing"] = str(exc)
        warnings.append(f"{exc}: not read; the backup has no NVRAM (a restored VM boots with "
                        "default firmware settings): fix the VM's nvram setting")
        return saved
    if where is None:
        saved["nvram_missing"] = "the configuration names no .vmx file"
        return saved
    datastore, path = where
    try:
        data = await plane.small_file(datastore, path, datacenter, NVRAM_LIMIT)
    except TransportError as exc:
        saved["nvram_missing"] = str(exc)
        warnings.append(f"the NVRAM file [{datastore}] {path} could not be read ({exc}); "
                        "the backup has no NVRAM: a restored VM boots with default firmware "
                        "settings")
        return saved
    saved["nvram"] = {"file": f"[{datastore}] {path}", "size": len(data),
                      "sha256": hashlib.sha256(data).hexdigest(),
                      "base64": base64.b64encode(data).decode("ascii")}
    return saved
