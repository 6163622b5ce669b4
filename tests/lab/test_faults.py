"""Injected faults, observed the way mover sees them: through pyvmomi and plain HTTP."""

from __future__ import annotations

import http.client
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from mover_lab import Lab, connect

from .conftest import LabVM, MiB, folder_get, session_cookie


@pytest.mark.parametrize("kind,status", [("status503", 503), ("status500", 500)])
def test_folder_status_faults(
    lab: Lab, make_vm: Callable[..., LabVM], si: Any, kind: str, status: int
) -> None:
    v = make_vm(disks=[{"capacity": MiB}])
    path = f"{v.name}/{v.name}-flat.vmdk"
    fid = lab.inject("folder", kind, count=1, match=v.name)
    cookie = session_cookie(si)
    assert folder_get(lab, path, cookie).status == status
    assert folder_get(lab, path, cookie).status == 200  # count=1: fired once
    (rule,) = [f for f in lab.faults() if f["id"] == fid]
    assert rule["fired"] == 1 and rule["remaining"] == 0


def test_folder_reset_mid_body(lab: Lab, make_vm: Callable[..., LabVM], si: Any) -> None:
    v = make_vm(disks=[{"capacity": MiB}])
    path = f"{v.name}/{v.name}-flat.vmdk"
    lab.inject("folder", "reset", match=path, after_bytes=1000)
    req = urllib.request.Request(lab.folder_url(path), headers={"Cookie": session_cookie(si)})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200 and r.headers["Content-Length"] == str(MiB)
        with pytest.raises((http.client.IncompleteRead, ConnectionError)) as e:
            r.read()
    if isinstance(e.value, http.client.IncompleteRead):
        assert len(e.value.partial) == 1000
    assert lab.counters()["folder"][path]["bytes"] == 1000


def test_folder_delay(lab: Lab, make_vm: Callable[..., LabVM], si: Any) -> None:
    v = make_vm(disks=[{"capacity": MiB}])
    path = f"{v.name}/{v.name}-flat.vmdk"
    lab.inject("folder", "delay", match=path, delay_ms=300)
    t = time.monotonic()
    assert folder_get(lab, path, session_cookie(si), (0, 9)).status == 206
    assert time.monotonic() - t >= 0.3


def test_session_expire_then_relogin(lab: Lab) -> None:
    si2 = connect(lab)
    si2.CurrentTime()
    lab.inject("soap", "sessionExpire", match="CurrentTime")
    with pytest.raises(vim.fault.NotAuthenticated):
        si2.CurrentTime()
    with pytest.raises(vim.fault.NotAuthenticated):
        si2.content.rootFolder.childEntity  # noqa: B018 - any later call fails too
    si2.content.sessionManager.Login(lab.user, lab.password)
    assert si2.CurrentTime() is not None


def test_wrong_password_is_refused(lab: Lab) -> None:
    with pytest.raises(vim.fault.InvalidLogin):
        connect(lab, password="wrong")


def test_snapshot_create_fail(lab: Lab, make_vm: Callable[..., LabVM]) -> None:
    v = make_vm()
    lab.inject("soap", "snapshotCreateFail")
    task = v.ref.CreateSnapshot_Task(name="x", description="", memory=False, quiesce=False)
    with pytest.raises(vim.fault.FileFault):
        WaitForTask(task)
    assert task.info.state == "error"
    assert v.ref.snapshot is None and lab.snapshots(v.name) == []


def test_task_in_progress(lab: Lab, make_vm: Callable[..., LabVM]) -> None:
    v = make_vm()
    lab.inject("soap", "taskInProgress", match="PowerOffVM_Task")
    with pytest.raises(vim.fault.TaskInProgress):
        v.ref.PowerOffVM_Task()
    assert v.ref.runtime.powerState == "poweredOn"
    WaitForTask(v.ref.PowerOffVM_Task())  # the fault fired once
    assert v.ref.runtime.powerState == "poweredOff"


def test_soap_delay(lab: Lab, si: Any) -> None:
    lab.inject("soap", "delay", match="CurrentTime", delay_ms=300)
    t = time.monotonic()
    si.CurrentTime()
    assert time.monotonic() - t >= 0.3


def test_rate_fault_and_clear(lab: Lab, si: Any) -> None:
    lab.inject("soap", "delay", rate=1.0, match="CurrentTime", delay_ms=1)
    for _ in range(3):
        si.CurrentTime()
    (rule,) = lab.faults()
    assert rule["fired"] == 3
    lab.clear_faults()
    assert lab.faults() == []
