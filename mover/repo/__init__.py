"""The repository: a self-describing directory of chunks, indexes and backup records.

Only this package knows the on-disk format (``docs/repository.md``); it knows nothing of
vSphere. Every call is synchronous and blocking: the pipeline runs them in executor threads.

Glossary
--------
repository     A directory with ``config.json``, ``chunks/``, ``backups/``, ``locks/``, ``tmp/``.
chunk          One block, encoded by ``mover.chunk`` and stored under its SHA-256 digest.
index          ``disk-<key>.idx``: the digest of every block of one disk in one backup.
backup record  ``backup.json``: VM, snapshot, disks and change ids. Written last; a backup
               directory without it is *pending* (being written, or left by a crash).
commit         Writing the backup record once every index and chunk is durable.
stale          Pending directories and temporaries older than an hour whose writer is gone.

Locks (flock on files in ``locks/``; the kernel releases them when a process dies)
-----------------------------------------------------------------------------------
``repository.lock``       shared by every pending backup, from ``begin`` to commit/abort.
``backup-<id>.lock``      exclusive, held by the writer of pending backup ``<id>``.

Which operations are safe together
----------------------------------
==========================  ========  ==============  ==========  ===========  ===========
running alongside ->        backup    backup same VM  list/read   clean_stale  verify
==========================  ========  ==============  ==========  ===========  ===========
backup (other VM)           yes       yes             yes         yes          yes
backup (same VM)            yes       yes [1]         yes         yes          yes
list / get / read / restore yes       yes             yes         yes          yes
clean_stale                 yes [2]   yes [2]         yes         yes          yes
verify                      yes [3]   yes [3]         yes         yes          yes
==========================  ========  ==============  ==========  ===========  ===========

[1] Both see the same parent and both commit: two backups, each a valid synthetic full.
    Chunk writes race safely: ``put`` links a complete temporary into place, exactly one
    writer creates a chunk, an existing chunk is never rewritten.
[2] A pending backup holds its ``backup-<id>.lock``, so it is never removed however old.
[3] Verify reads only committed backups; a backup committed during verify may be missed.

Garbage collection and pruning (future work) will need: pruning removes ``backup.json``
first (the backup stops existing), then its directory. GC marks the chunks of every
committed index and deletes the rest, which is only safe if no writer can reference a chunk
that GC has decided is unused: a writer may have found a chunk with ``has`` (or kept it from
its parent index) before GC's sweep and commit after it. So GC takes ``repository.lock``
*exclusively* for its sweep (waiting for pending backups, which hold it shared from
``begin``, so writers must call ``begin`` before their first ``has``/``put``). To run
alongside long backups instead, it would need writers to mark every chunk they reuse (touch
it on a ``has`` hit, as Proxmox Backup Server does with atime) and spare every chunk marked
after the start of the oldest pending backup.
"""

from mover.repo.chunks import ChunkStore, LocalChunkStore
from mover.repo.config import RepoConfig
from mover.repo.memory import MemoryChunkStore
from mover.repo.pending import PendingBackup
from mover.repo.records import BackupRecord, DiskRecord
from mover.repo.repository import Repository

__all__ = [
    "BackupRecord",
    "ChunkStore",
    "DiskRecord",
    "LocalChunkStore",
    "MemoryChunkStore",
    "PendingBackup",
    "RepoConfig",
    "Repository",
]
