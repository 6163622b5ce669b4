"""/folder: authentication, Range requests and counters."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mover_lab import Lab

from .conftest import LabVM, MiB, folder_get, session_cookie


def test_range_requests(lab: Lab, make_vm: Callable[..., LabVM], si: object) -> None:
    v = make_vm(disks=[{"capacity": 4 * MiB}])
    data = os.urandom(8192)
    lab.write(v.name, 2000, 4096, data)
    path = f"{v.name}/{v.name}-flat.vmdk"
    cookie = session_cookie(si)
    r = folder_get(lab, path, cookie, (4096, 4096 + 8191))
    assert r.status == 206
    assert r.headers["Content-Range"] == f"bytes 4096-12287/{4 * MiB}"
    assert int(r.headers["Content-Length"]) == 8192 and r.body == data
    full = folder_get(lab, path, cookie)
    assert full.status == 200 and len(full.body) == 4 * MiB
    assert full.body[4096:12288] == data
    bad = folder_get(lab, path, cookie, (5 * MiB, 5 * MiB + 1))
    assert bad.status == 416
    c = lab.counters()["folder"][path]
    assert c == {"requests": 3, "bytes": 8192 + 4 * MiB}


def test_folder_requires_session(lab: Lab, make_vm: Callable[..., LabVM]) -> None:
    v = make_vm(disks=[{"capacity": MiB}])
    path = f"{v.name}/{v.name}-flat.vmdk"
    assert folder_get(lab, path, None).status == 401
    assert folder_get(lab, path, 'vmware_soap_session="nope"').status == 401
    basic = base64.b64encode(f"{lab.user}:{lab.password}".encode()).decode()
    import urllib.request

    req = urllib.request.Request(lab.folder_url(path), headers={"Authorization": "Basic " + basic})
    with urllib.request.urlopen(req) as r:
        assert r.status == 200 and len(r.read()) == MiB


def test_soap_counters(lab: Lab, make_vm: Callable[..., LabVM]) -> None:
    v = make_vm()
    lab.reset_counters()
    v.ref.CreateSnapshot_Task(name="c", description="", memory=False, quiesce=False)
    assert lab.counters()["soap"]["CreateSnapshot_Task"] == 1


def test_throttle_limits_a_connection_and_the_link(lab: Lab, si: Any,
                                                   make_vm: Callable[..., LabVM]) -> None:
    """Lower bounds only (a loaded machine is slower, never faster than the throttle)."""
    v = make_vm()
    path = v.info["disks"][0]["flatFile"]
    cookie = session_cookie(si)
    lab.configure(folderConnectionBps=20_000_000)
    t0 = time.monotonic()
    assert len(folder_get(lab, path, cookie, (0, 4_000_000 - 1)).body) == 4_000_000
    assert time.monotonic() - t0 >= 0.18                  # 4 MB at 20 MB/s: 0.2 s
    lab.configure(folderConnectionBps=0, folderTotalBps=40_000_000)
    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: folder_get(lab, path, cookie,
                                                 (i * 4_000_000, (i + 1) * 4_000_000 - 1)),
                            range(4)))
    assert all(len(r.body) == 4_000_000 for r in got)
    assert time.monotonic() - t0 >= 0.36                  # 16 MB at 40 MB/s: 0.4 s
    assert lab.config()["folderTotalBps"] == 40_000_000
