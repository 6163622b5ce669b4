"""Client for mover's vSphere lab (scripts/lab, docs/lab.md).

Stdlib only, so demos, benchmarks and tests can drive the lab without extra dependencies.
"""

from mover_lab.client import Lab, LabError, connect

__all__ = ["Lab", "LabError", "connect"]
