"""Trusting a journal on resume: every record names a durable, indexed chunk; a block
whose chunk the repository no longer knows is read again."""

from __future__ import annotations

from mover.index import FixedIndex
from mover.jobs.resume import apply_journal
from mover.repo import MemoryLocks, MemoryStore, Repository

BS = 1 << 20


def test_journaled_blocks_are_trusted_unless_their_chunk_is_unknown() -> None:
    repo = Repository.on(MemoryStore(), MemoryLocks())
    pending = repo.begin("vm-uuid", "B1")
    digests = []
    for i in range(3):
        data = bytes([i + 1]) * BS
        digest = repo.chunks.digest(data)
        repo.chunks.put(digest, data)
        digests.append(digest)
    repo.chunks.sync()
    journal = pending.journal(2000)
    journal.append([(0, digests[0]), (1, digests[1]), (3, None)])
    journal.append([(4, digests[2]), (5, b"\x07" * 32)])   # 5: a chunk nobody indexed

    index = FixedIndex(8 * BS, BS)
    done, count = apply_journal(pending, 2000, index, repo.chunks)
    assert [bool(d) for d in done] == [True, True, False, True, True, False, False, False]
    assert count == 4
    assert index.get(0) == digests[0] and index.get(3) is None and index.get(4) == digests[2]
    pending.abort()
