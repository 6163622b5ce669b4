"""Trusting a journal on resume: synced records as they are, unsynced ones only when their
chunk decodes to its digest (after a power loss it may be gone or torn)."""

from __future__ import annotations

from pathlib import Path

import zstandard

from mover import chunk
from mover.index import FixedIndex
from mover.jobs.resume import apply_journal
from mover.repo import Repository

BS = 1 << 20


def test_unsynced_records_are_trusted_only_with_an_intact_chunk(tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo")
    pending = repo.begin("vm-uuid", "B1")
    compressor = zstandard.ZstdCompressor()
    digests = []
    for i in range(4):
        data = bytes([i + 1]) * BS
        digest = chunk.digest(data)
        repo.chunks.put(digest, chunk.encode(data, compressor))
        digests.append(digest)
    journal = pending.journal(2000)
    journal.append([(0, digests[0]), (1, digests[1]), (2, digests[2]), (3, None)], False)
    journal.append([(0, digests[0])], True)        # block 0 synced
    journal.append([(4, digests[3])], True)        # block 4 synced (chunk later lost: trusted)
    journal.close()
    repo.chunks.path(digests[1]).write_bytes(b"torn")   # power loss tore block 1's chunk
    repo.chunks.path(digests[2]).unlink()               # ... and lost block 2's

    index = FixedIndex(8 * BS, BS)
    done, count = apply_journal(pending, 2000, index, repo.chunks)
    assert [bool(d) for d in done] == [True, False, False, True, True, False, False, False]
    assert count == 3
    assert index.get(0) == digests[0] and index.get(3) is None and index.get(4) == digests[3]
    pending.abort()
