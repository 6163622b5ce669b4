"""Backup records: round trip, forward compatibility, and errors for missing keys."""

from __future__ import annotations

import pytest

from mover.errors import RepositoryError
from mover.repo import BackupRecord, DiskRecord

from .test_repository import disk, record


def test_round_trip_keeps_unknown_keys() -> None:
    rec = record("b1", [disk(2000), disk(2001)])
    data = rec.to_json()
    data["future_field"] = {"x": 1}
    data["disks"][1]["future_disk_field"] = [1, 2]
    back = BackupRecord.from_json(data)
    assert back.disk(2001).extra == {"future_disk_field": [1, 2]}
    assert back.to_json() == data
    assert back.status == "committed" and back.format_version == 1


def test_defaults_apply_when_absent() -> None:
    data = record("b1", []).to_json()
    del data["status"], data["format_version"]
    back = BackupRecord.from_json(data)
    assert (back.status, back.format_version) == ("committed", 1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("vm_instance_uuid"), "lacks the required key 'vm_instance_uuid'"),
        (lambda d: d.update(parent=5), "parent has the wrong type"),
        (lambda d: d["disks"][0].pop("capacity"), r"disks\[0\] lacks the required key"),
        (lambda d: d["disks"][0].update(blocks=True), "blocks has the wrong type"),
        (lambda d: d.update(format_version=2), "use a newer mover"),
    ],
    ids=["missing-key", "wrong-type", "disk-missing-key", "bool-is-not-int", "newer"],
)
def test_bad_records(change: object, message: str) -> None:
    data = record("b1", [disk()]).to_json()
    change(data)  # type: ignore[operator]
    with pytest.raises(RepositoryError, match=message):
        BackupRecord.from_json(data, "backup.json")


def test_seconds_accepts_int_and_disk_lookup() -> None:
    data = disk().to_json()
    data["seconds"] = 3
    assert DiskRecord.from_json(data).seconds == 3
    with pytest.raises(KeyError):
        record("b1", [disk(2000)]).disk(7)
