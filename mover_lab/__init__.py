"""Clients for mover's vSphere lab (scripts/lab) and object store (scripts/objectstore);
docs/lab.md.

Stdlib only, so demos, benchmarks and tests can drive the lab without extra dependencies.
"""

from mover_lab.client import Lab, LabError, connect
from mover_lab.objectstore import ObjectStore, ObjectStoreError

__all__ = ["Lab", "LabError", "ObjectStore", "ObjectStoreError", "connect"]
