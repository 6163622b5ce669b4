"""Checking a repository: every committed backup readable, every chunk it needs intact."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mover.errors import ObjectMissing, RepositoryError
from mover.repo import layout

if TYPE_CHECKING:
    from mover.repo.repository import Repository


@dataclass(slots=True)
class Problem:
    """One thing wrong. ``digest``: the damaged chunk, if it is one; ``needed_by``: each
    backup and disk that needs it, with the byte offsets of its blocks there."""

    message: str
    digest: str | None = None
    needed_by: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"message": self.message, "digest": self.digest, "needed_by": self.needed_by}


def verify(repo: Repository, read_data: bool = False, subset: tuple[int, int] = (1, 1),
           backup_id: str | None = None) -> list[Problem]:
    """Problems found in ``repo``.

    Checks that every ``backup.json`` parses, every disk index exists, matches its checksums
    and its record, and every chunk an index names is in an indexed pack whose object
    exists; with ``read_data`` also that each chunk decodes to bytes with its digest (only
    the chunks whose digest falls in part ``subset[0]`` of ``subset[1]``, for spreading a
    full read over several runs). A damaged chunk is reported with every backup, disk and
    offset that needs it. Uncommitted backups are not checked; chunks nobody uses are not
    problems (gc collects them). ``backup_id`` checks one backup only.
    """
    problems: list[Problem] = []
    for name in repo.chunks.damaged:
        problems.append(Problem(f"pack index {name} is damaged; `mover repair index` "
                                "rebuilds the indexes from the packs"))
    needed: dict[bytes, None] = {}
    indexes = []
    for name, record in repo.scan():
        if isinstance(record, ObjectMissing):
            continue  # forgotten since it was listed
        if isinstance(record, RepositoryError):
            problems.append(Problem(str(record)))
            continue
        if backup_id is not None and record.id != backup_id:
            continue
        for disk in record.disks:
            try:
                index = repo.read_index(record, disk.key)
            except RepositoryError as exc:
                if repo.store.stat(name) is not None:  # else forgotten meanwhile
                    problems.append(Problem(str(exc)))
                continue
            indexes.append((record, disk.key, index))
            needed.update(dict.fromkeys(index.digests()))
    part, parts = subset
    present: dict[bytes, bool] = {}
    bad: dict[bytes, str] = {}
    for digest in needed:
        where = repo.chunks.locate(digest)
        if where is None or where[0] is None:
            bad[digest] = f"chunk {digest.hex()} is in no pack"
            continue
        pack_id = where[0]
        if pack_id not in present:
            present[pack_id] = repo.store.stat(layout.pack(pack_id)) is not None
        if not present[pack_id]:
            bad[digest] = f"chunk {digest.hex()}: its pack {pack_id.hex()} is missing"
            continue
        if read_data and int.from_bytes(digest[:4], "big") % parts == part - 1:
            try:
                repo.read_block(digest)
            except RepositoryError as exc:
                bad[digest] = str(exc)
    if bad:
        users: dict[bytes, list[dict[str, Any]]] = {d: [] for d in bad}
        for record, key, index in indexes:
            for block in range(len(index)):
                used = index.get(block)
                if used is not None and used in users:
                    entry = next((u for u in users[used] if u["backup"] == record.id
                                  and u["disk"] == key), None)
                    if entry is None:
                        entry = {"backup": record.id, "vm": record.vm_name, "disk": key,
                                 "offsets": []}
                        users[used].append(entry)
                    entry["offsets"].append(block * index.block_size)
        for digest, why in bad.items():
            names = "; ".join(f"backup {u['backup']} disk {u['disk']} at offset"
                              f"{'s' if len(u['offsets']) > 1 else ''} "
                              f"{', '.join(map(str, u['offsets'][:8]))}"
                              f"{' ...' if len(u['offsets']) > 8 else ''}"
                              for u in users[digest])
            problems.append(Problem(f"{why} (needed by {names})", digest.hex(),
                                    users[digest]))
    return problems
