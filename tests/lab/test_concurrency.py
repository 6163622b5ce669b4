"""Concurrent SOAP, snapshots, guest writes and /folder reads on a lab built with -race."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mover_lab import Lab, connect

from .conftest import MiB, disks_of, folder_get, remove_snapshot, session_cookie, snapshot


@pytest.fixture(scope="module")
def race_lab(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = Lab.start(tmp_path_factory.mktemp("race-lab"), race=True)
    yield server
    server.stop()


def test_no_data_race(race_lab: Lab, tmp_path: Path) -> None:
    lab = race_lab
    a = lab.create_vm("race-a", [{"capacity": 16 * MiB}], cbt=True)
    lab.create_vm("race-b", [{"capacity": 16 * MiB}, {"capacity": 16 * MiB}], cbt=True)
    errors: list[BaseException] = []

    def run(fn: Callable[[], None]) -> Callable[[], None]:
        def wrapped() -> None:
            try:
                fn()
            except BaseException as e:  # reported below
                errors.append(e)

        return wrapped

    def snapshots_on(name: str) -> None:
        si = connect(lab)
        vm = si.content.searchIndex.FindByUuid(None, lab.vm(name)["uuid"], True, False)
        for i in range(6):
            s = snapshot(vm, f"t{i}")
            cid = disks_of(s)[2000].backing.changeId
            vm.QueryChangedDiskAreas(snapshot=s, deviceKey=2000, startOffset=0, changeId="*")
            vm.QueryChangedDiskAreas(snapshot=s, deviceKey=2000, startOffset=0, changeId=cid)
            remove_snapshot(s)

    def writes() -> None:
        for i in range(40):
            lab.write("race-a", 2000, (i % 16) * MiB, bytes([i]) * 70_000)
            lab.read_live("race-a", 2000, 0, 4096)
            lab.vm("race-a")

    def folder_reads() -> None:
        si = connect(lab)
        cookie = session_cookie(si)
        for _ in range(30):
            r = folder_get(lab, "race-a/race-a-flat.vmdk", cookie, (0, 65535))
            assert r.status == 206

    def property_reads() -> None:
        si = connect(lab)
        vm = si.content.searchIndex.FindByUuid(None, a["uuid"], True, False)
        for _ in range(30):
            _ = [d.backing.fileName for d in disks_of(vm).values()]
            info = vm.snapshot  # one read: it may vanish between two
            _ = info and info.rootSnapshotList

    threads = [
        threading.Thread(target=run(f))
        for f in (
            lambda: snapshots_on("race-a"),
            lambda: snapshots_on("race-b"),
            writes,
            folder_reads,
            property_reads,
        )
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    lab.stop()
    assert not errors, errors
    log = lab.log.read_text()
    assert "DATA RACE" not in log, log[log.index("DATA RACE") - 200 :][:4000]
