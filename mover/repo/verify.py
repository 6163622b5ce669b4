"""Checking a repository: every committed backup readable, every chunk it needs present."""

from __future__ import annotations

from typing import TYPE_CHECKING

import zstandard

from mover.errors import RepositoryError

if TYPE_CHECKING:
    from mover.repo.repository import Repository


def verify(repo: Repository, read_data: bool = False) -> list[str]:
    """Problems found in ``repo``, one sentence each naming the file or digest.

    Checks every ``backup.json`` parses, every disk index exists, matches its checksums and
    its record, and every chunk an index names exists; with ``read_data`` also that each
    chunk decodes to bytes with its digest. Uncommitted directories are not backups and are
    not checked. Chunks no backup uses are not problems (GC will collect them).
    """
    problems: list[str] = []
    users: dict[bytes, str] = {}  # digest -> the first backup and disk that needs it
    for _path, record in repo.scan():
        if isinstance(record, RepositoryError):
            problems.append(str(record))
            continue
        for disk in record.disks:
            try:
                index = repo.read_index(record, disk.key)
            except RepositoryError as exc:
                problems.append(str(exc))
                continue
            for digest in index.digests():
                users.setdefault(digest, f"backup {record.id} disk {disk.key}")
    decompressor = zstandard.ZstdDecompressor()
    for digest, user in users.items():
        try:
            if read_data:
                repo.read_block(digest, decompressor)
            elif not repo.chunks.has(digest):
                problems.append(f"chunk {digest.hex()} is missing (needed by {user})")
        except RepositoryError as exc:
            problems.append(f"{exc} (needed by {user})")
    return problems
