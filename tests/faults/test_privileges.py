"""A user without a privilege: a 403 on /folder and a NoPermission fault are permission
errors naming the privilege (exit 4), never taken for an expired session."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e.runner import backup_args, committed, mover, mover_snapshots

from mover_lab import Lab

MiB = 1 << 20
Matrix = Callable[[str, str], None]


@pytest.fixture
def vm(lab: Lab, unique_name: Callable[[str], str]) -> str:
    name = unique_name("vm")
    lab.create_vm(name, [{"capacity": 8 * MiB, "type": "thin"}], cbt=True)
    lab.write(name, 2000, 0, random.Random(1).randbytes(2 * MiB))
    return name


@pytest.mark.parametrize(
    ("target", "kind", "match", "privilege"),
    [
        pytest.param("folder", "status403", "-flat.vmdk", "Datastore.Browse",
                     id="folder-403-on-data"),
        pytest.param("folder", "status403", ".vmdk", "Datastore.Browse",
                     id="folder-403-on-descriptor"),
        pytest.param("soap", "noPermission", "CreateSnapshot_Task",
                     "VirtualMachine.State.CreateSnapshot", id="no-snapshot-privilege"),
        pytest.param("soap", "noPermission", "QueryChangedDiskAreas",
                     "VirtualMachine.Provisioning.DiskRandomRead", id="no-cbt-query-privilege"),
    ],
)
def test_a_missing_privilege_is_named(lab: Lab, vm: str, tmp_path: Path, target: str,
                                      kind: str, match: str, privilege: str,
                                      matrix: Matrix) -> None:
    lab.inject(target, kind, rate=1.0, match=match)
    lab.reset_counters()
    run = mover(*backup_args(lab, vm, tmp_path / "repo"), lab=lab)
    assert run.code == 4, run.stderr
    error = run.result["error"]
    assert error["kind"] == "PermissionDenied"
    assert privilege in error["message"] and "README" in error["message"]
    assert "session" not in error["message"]
    # the JSON error names what failed in its fields
    assert error["fields"]["privilege"] == privilege and error["fields"]["vm"] == vm
    if match == "-flat.vmdk":
        assert error["fields"]["disk"] == 2000 and error["fields"]["offset"] == 0
    assert lab.counters()["soap"].get("Login", 0) == 1     # no re-login: not an expiry
    assert committed(tmp_path / "repo") == [] and mover_snapshots(lab, vm) == []
    matrix(f"{kind} on {match}", f"exit 4 PermissionDenied naming {privilege}, no re-login")
