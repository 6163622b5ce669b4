"""The control plane: everything mover asks of vCenter or ESXi over SOAP (pyvmomi).

pyvmomi is synchronous; callers run these functions in one dedicated thread (see
``mover.jobs.control``), never on the event loop. pyvmomi faults are mapped here to
``mover.errors`` classes; nothing above this package sees a pyVmomi exception.
The data plane (``mover.pipeline``) is never imported from here.
"""
