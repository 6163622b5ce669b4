"""The last line of fault mapping for the control plane: any vSphere fault that no adapter
function turned into a ``MoverError`` becomes a ``VSphereError`` naming the fault, so no
pyVmomi exception reaches a user as a traceback."""

from __future__ import annotations

from mover.errors import MoverError, VSphereError
from mover.vsphere.privileges import permission_denied
from mover.vsphere.tasks import fault_message
from mover.vsphere.vmomi import vim, vmodl


class ObjectGone(VSphereError):
    """The VM or snapshot no longer exists (deleted or unregistered meanwhile)."""


def translate(exc: BaseException) -> MoverError | None:
    denied = permission_denied(exc)
    if denied is not None:
        return denied
    if isinstance(exc, vmodl.fault.ManagedObjectNotFound):
        return ObjectGone(f"a vSphere object no longer exists ({fault_message(exc)}): it was "
                          "deleted or unregistered during the backup")
    if isinstance(exc, vmodl.MethodFault | vim.fault.VimFault):
        return VSphereError(f"vSphere refused a call: {fault_message(exc)}")
    return None
