"""pyvmomi's namespaces, typed as ``Any``.

pyvmomi ships partial stubs that describe managed objects only in part (many properties and
every fault class are missing), so strict mypy would need an ignore on nearly every line of
the adapter. The adapter imports pyvmomi through here instead; what it returns to the rest
of mover is our own typed values (``DiskInfo``, ``Extent``...)."""

from typing import Any

from pyVim import connect as _connect
from pyVmomi import vim as _vim
from pyVmomi import vmodl as _vmodl

vim: Any = _vim
vmodl: Any = _vmodl
connect: Any = _connect


def to_json(obj: Any) -> Any:
    """A pyvmomi data object as plain JSON values: every property, ``_vimtype`` naming each
    object's class (``vim.vm.device.VirtualDisk``), managed objects as references."""
    import json

    from pyVmomi.VmomiJSONEncoder import VmomiJSONEncoder
    return json.loads(json.dumps(obj, cls=VmomiJSONEncoder, strip_dynamic=True))
