"""Backup records: what ``backup.json`` says about a backup and each of its disks.

``from_json`` accepts what a later version-1 mover writes: unknown keys are kept in
``extra`` and written back unchanged by ``to_json``. A missing required key or a value of
the wrong type raises RepositoryError naming the source and the key.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from typing import Any, TypeVar

from mover import clock
from mover.errors import RepositoryError

FORMAT_VERSION = 1

# Field annotations (strings under postponed evaluation) -> accepted JSON value types.
_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "str": (str,),
    "float": (int, float),
    "str | None": (str, type(None)),
    "dict[str, Any]": (dict,),
    "list[DiskRecord]": (list,),
}

_R = TypeVar("_R", "DiskRecord", "BackupRecord")


@dataclass(slots=True)
class DiskRecord:
    """One disk of a backup; ``file`` is the backing file, ``mode`` "full" or "incremental"."""

    key: int
    label: str
    uuid: str
    capacity: int
    file: str
    change_id: str
    mode: str
    reason: str
    block_size: int
    changed_bytes: int
    bytes_read: int
    bytes_stored: int
    blocks: int
    zero_blocks: int
    new_chunks: int
    dedup_chunks: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return _to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "disk record") -> DiskRecord:
        return cls(**_from_json(cls, data, source))


@dataclass(slots=True)
class BackupRecord:
    """A committed backup of one VM; ``created``/``finished`` are ISO 8601 UTC strings,
    to the microsecond since records of one second came out in either order (the second
    alone in older records)."""

    id: str
    vm_name: str
    vm_instance_uuid: str
    vm_moref: str
    created: str
    finished: str
    parent: str | None
    snapshot: dict[str, Any]
    disks: list[DiskRecord]
    status: str = "committed"
    format_version: int = FORMAT_VERSION
    # The VM as it was: {"config": the snapshot's VirtualMachineConfigInfo as JSON,
    # "summary": its main facts, "nvram": {"file", "size", "sha256", "base64"} or None}.
    # Empty in backups of movers before it (docs/repository.md).
    vm_config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def disk(self, key: int) -> DiskRecord:
        """The disk with device key ``key``; KeyError if the backup has none."""
        for disk in self.disks:
            if disk.key == key:
                return disk
        raise KeyError(key)

    @property
    def created_at(self) -> datetime:
        """When the backup began (before its snapshot): what orders a VM's backups."""
        return clock.parse(self.created)

    def to_json(self) -> dict[str, Any]:
        data = _to_json(self)
        data["disks"] = [disk.to_json() for disk in self.disks]
        return data

    def listing(self) -> dict[str, Any]:
        """``to_json`` without ``vm_config``: what ``mover list --json`` prints, into logs a
        scheduler keeps (the configuration holds the NVRAM and extraConfig, which may hold
        guestinfo secrets; it stays in ``backup.json`` alone)."""
        data = self.to_json()
        del data["vm_config"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "backup record") -> BackupRecord:
        values = _from_json(cls, data, source)
        if values.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
            raise RepositoryError(f"{source} has format version {values['format_version']}, "
                                  f"this mover reads {FORMAT_VERSION}: use a newer mover")
        try:
            clock.parse(values["created"])
        except ValueError:
            raise RepositoryError(f"{source}: created {values['created']!r} is not an ISO "
                                  "8601 time") from None
        disks = []
        for n, disk in enumerate(values["disks"]):
            if not isinstance(disk, dict):
                raise RepositoryError(f"{source}: disks[{n}] is not an object")
            disks.append(DiskRecord.from_json(disk, f"{source} disks[{n}]"))
        values["disks"] = disks
        return cls(**values)


def _to_json(record: DiskRecord | BackupRecord) -> dict[str, Any]:
    data = dict(record.extra)
    data.update((f.name, getattr(record, f.name)) for f in fields(record) if f.name != "extra")
    return data


def _from_json(cls: type[_R], data: dict[str, Any], source: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise RepositoryError(f"{source} is not a JSON object")
    values: dict[str, Any] = {}
    known = set()
    for f in fields(cls):
        known.add(f.name)
        if f.name == "extra":
            continue
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise RepositoryError(f"{source} lacks the required key {f.name!r}")
            continue
        value = data[f.name]
        kinds = _TYPES[str(f.type)]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise RepositoryError(f"{source}: {f.name} has the wrong type ({value!r})")
        values[f.name] = value
    values["extra"] = {k: v for k, v in data.items() if k not in known}
    return values
