"""The names of every object a repository keeps: the one module that builds them.

``docs/repository.md`` describes each kind. Names are ``Store`` names (``/``-separated);
``LocalStore`` maps them to files under the repository directory.

    config.json                                      the repository's parameters
    packs/<h0h1>/<pack id>                           chunks, appended (pack id: SHA-256 hex)
    index/<index id>                                 which chunks which packs hold
    backups/<vm>/<backup id>/backup.json             a committed backup's record (last)
    backups/<vm>/<backup id>/disk-<key>.idx          the fixed index of one disk
    backups/<vm>/<backup id>/checkpoint.json         a pending backup's resume state
    backups/<vm>/<backup id>/journal-<key>/<seq>     blocks a pending backup stored durably
    locks/<lock>/<x|s>-<holder>                      a leased lock object (object stores)

Locks are named here too (``lock_*``) and held by a ``mover.repo.locks.Locks``; on an
object store each holder of lock ``<lock>`` keeps one object (``mover.repo.leases``).
"""

from __future__ import annotations

import re

CONFIG = "config.json"
PACKS = "packs/"
INDEX = "index/"
BACKUPS = "backups/"
RECORD = "backup.json"
CHECKPOINT = "checkpoint.json"
LOCKS = "locks/"

LOCK_REPOSITORY = "repository"
"""Held shared by every pending backup from ``begin`` to commit or abort, and by restore
and verify while they read; gc and repair hold it exclusively from before they read the
first index until after their last delete."""

_HEX64 = re.compile(r"[0-9a-f]{64}")
_BACKUP_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_component(what: str, value: str) -> str:
    """``value`` if it may be one name component (a VM instance UUID, a backup id), else
    ValueError naming ``what``."""
    if not _COMPONENT.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a valid name (letters, digits, ._-)")
    return value


def is_backup_id(text: str) -> bool:
    """Whether ``text`` has the form mover gives backup ids: ``YYYYMMDDTHHMMSSZ-xxxxxx``."""
    return _BACKUP_ID.fullmatch(text) is not None


def pack(pack_id: bytes) -> str:
    name = pack_id.hex()
    return f"{PACKS}{name[:2]}/{name}"


def pack_id_of(name: str) -> bytes | None:
    """The id of pack object ``name``, or None if ``name`` is not one."""
    tail = name[len(PACKS):]
    if not name.startswith(PACKS) or len(tail) != 67 or tail[2] != "/" \
            or not _HEX64.fullmatch(tail[3:]) or tail[:2] != tail[3:5]:
        return None
    return bytes.fromhex(tail[3:])


def index(index_id: bytes) -> str:
    return f"{INDEX}{index_id.hex()}"


def index_id_of(name: str) -> bytes | None:
    tail = name[len(INDEX):]
    if not name.startswith(INDEX) or not _HEX64.fullmatch(tail):
        return None
    return bytes.fromhex(tail)


def vm_backups(vm: str) -> str:
    """The prefix of every backup (committed or pending) of one VM."""
    return f"{BACKUPS}{check_component('VM instance UUID', vm)}/"


def backup_dir(vm: str, backup_id: str) -> str:
    return f"{vm_backups(vm)}{check_component('backup id', backup_id)}/"


def record(vm: str, backup_id: str) -> str:
    return backup_dir(vm, backup_id) + RECORD


def disk_index(vm: str, backup_id: str, key: int) -> str:
    return f"{backup_dir(vm, backup_id)}disk-{int(key)}.idx"


def checkpoint(vm: str, backup_id: str) -> str:
    return backup_dir(vm, backup_id) + CHECKPOINT


def journal_prefix(vm: str, backup_id: str, key: int) -> str:
    return f"{backup_dir(vm, backup_id)}journal-{int(key)}/"


def journal_segment(vm: str, backup_id: str, key: int, seq: int) -> str:
    return f"{journal_prefix(vm, backup_id, key)}{seq:010d}"


def split_backup(name: str) -> tuple[str, str, str] | None:
    """``backups/<vm>/<id>/<rest>`` as (vm, id, rest), or None for any other name."""
    parts = name.split("/", 3)
    if len(parts) != 4 or parts[0] + "/" != BACKUPS or not _COMPONENT.fullmatch(parts[1]) \
            or not _COMPONENT.fullmatch(parts[2]):
        return None  # not a backup's object (something else was put there)
    return parts[1], parts[2], parts[3]


def lock_backup(backup_id: str) -> str:
    """Held exclusively by the one process writing pending backup ``backup_id``."""
    return f"backup-{check_component('backup id', backup_id)}"


def lock_prefix(lock: str) -> str:
    """The prefix of every holder's object of lock ``lock`` (a leased lock)."""
    return f"{LOCKS}{check_component('lock name', lock)}/"


def lock_object(lock: str, exclusive: bool, holder: str) -> str:
    """The object of one holder of a leased lock: ``x-`` exclusive, ``s-`` shared."""
    return f"{lock_prefix(lock)}{'x' if exclusive else 's'}-{check_component('holder', holder)}"


def clock_probe(token: str) -> str:
    """A short-lived object whose ``mtime`` tells the store's time (``mover.repo.storeclock``);
    no lock's (``split_lock`` rejects it)."""
    return f"{LOCKS}clock-{check_component('probe', token)}"


def split_lock(name: str) -> tuple[str, bool, str] | None:
    """``locks/<lock>/<x|s>-<holder>`` as (lock, exclusive, holder), or None."""
    parts = name.split("/")
    if len(parts) != 3 or parts[0] + "/" != LOCKS or parts[2][:2] not in ("x-", "s-") \
            or not _COMPONENT.fullmatch(parts[1]) or not _COMPONENT.fullmatch(parts[2][2:]):
        return None
    return parts[1], parts[2][0] == "x", parts[2][2:]
