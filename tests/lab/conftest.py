"""Helpers for the lab's own tests: pyvmomi sessions, VMs, disks and /folder requests."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from mover_lab import Lab, connect

MiB = 1 << 20
GiB = 1 << 30


@pytest.fixture(scope="session")
def si(lab_server: Lab) -> Any:
    """A pyvmomi ServiceInstance logged in to the session's lab."""
    return connect(lab_server)


@dataclass
class LabVM:
    name: str
    info: dict[str, Any]
    ref: Any  # vim.VirtualMachine


@pytest.fixture
def make_vm(lab: Lab, si: Any, unique_name: Callable[[str], str]) -> Iterator[Callable[..., LabVM]]:
    """make_vm(disks=[...], power_on=True, cbt=False) -> LabVM, deleted after the test."""
    made: list[str] = []

    def make(
        disks: list[dict[str, Any]] | None = None, power_on: bool = True, cbt: bool = False
    ) -> LabVM:
        name = unique_name("vm")
        disks = disks or [{"capacity": 64 * MiB, "type": "thin"}]
        info = lab.create_vm(name, disks, power_on=power_on, cbt=cbt)
        made.append(name)
        ref = si.content.searchIndex.FindByUuid(None, info["uuid"], True, False)
        assert ref is not None
        return LabVM(name, info, ref)

    yield make
    for name in made:
        lab.delete_vm(name)


def disks_of(obj: Any) -> dict[int, Any]:
    """The VirtualDisk devices of a VM or snapshot, by key."""
    return {
        d.key: d for d in obj.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)
    }


def wait(task: Any) -> Any:
    WaitForTask(task)
    return task.info.result


def snapshot(vm: Any, name: str = "s") -> Any:
    return wait(vm.CreateSnapshot_Task(name=name, description="", memory=False, quiesce=False))


def remove_snapshot(snap: Any) -> Any:
    task = snap.RemoveSnapshot_Task(removeChildren=False, consolidate=True)
    WaitForTask(task)
    return task


def query_all(vm: Any, snap: Any, key: int, change_id: str, capacity: int) -> list[tuple[int, int]]:
    """All changed areas, looping on startOffset as the API reference requires."""
    areas: list[tuple[int, int]] = []
    offset = 0
    while offset < capacity:
        r = vm.QueryChangedDiskAreas(
            snapshot=snap, deviceKey=key, startOffset=offset, changeId=change_id
        )
        assert r.startOffset == offset and r.length > 0
        areas += [(a.start, a.length) for a in r.changedArea]
        offset = r.startOffset + r.length
    return areas


def session_cookie(si: Any) -> str:
    """The Cookie header value of a pyvmomi session, for /folder requests."""
    m = re.search(r'vmware_soap_session="?([^";]+)"?', si._stub.cookie)
    assert m, si._stub.cookie
    return f'vmware_soap_session="{m.group(1)}"'


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def folder_get(
    lab: Lab, path: str, cookie: str | None, range_: tuple[int, int] | None = None,
    ds: str = "LocalDS_0", dc: str = "DC0",
) -> Response:
    req = urllib.request.Request(lab.folder_url(path, ds=ds, dc=dc))
    if cookie:
        req.add_header("Cookie", cookie)
    if range_:
        req.add_header("Range", f"bytes={range_[0]}-{range_[1]}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return Response(r.status, dict(r.headers.items()), r.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, dict(e.headers.items()), e.read())


def rounded(writes: list[tuple[int, int]], gran: int) -> list[tuple[int, int]]:
    """Writes (offset, length) widened to the granularity and merged, as CBT reports them."""
    spans = sorted((off // gran * gran, -(-(off + n) // gran) * gran) for off, n in writes if n > 0)
    merged: list[list[int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b - a) for a, b in merged]
