"""The repository: configuration, chunks in packs, backups, all through one ``Store``.

Only this package knows the format (``docs/repository.md``, format version 2); it knows
nothing of vSphere. Every call is synchronous and blocking: jobs run them in threads.

Glossary
--------
store          Where objects live (``mover.repo.store.Store``): a directory, memory, S3.
layout         The names of every object (``mover.repo.layout``); no other module builds one.
chunk          One block, encoded by the ``ChunkCodec`` and addressed by the SHA-256 of the
               uncompressed block.
pack           ``packs/<h0h1>/<pack id>``: many chunks appended, with a trailer listing them.
pack index     ``index/<id>``: which chunks which packs hold; loaded into the chunk table.
disk index     ``disk-<key>.idx``: the digest of every block of one disk in one backup.
backup record  ``backup.json``: VM, snapshot, disks and change ids. Written last; a backup
               without it is *pending* (being written, or left by a crash).
journal        ``journal-<key>/<seq>``: blocks a pending backup has stored durably (resume).
commit         Writing the backup record once every index and chunk it names is durable.
stale          Pending backups and temporaries older than an hour whose writer is gone.

Durability order (never changes): a pack, then its pack index, then anything that names
its chunks (journal segment, disk index, backup record).

Locks (``mover.repo.locks``: flock files in ``locks/`` of a local repository; leased lock
objects ``locks/<lock>/<x|s>-<holder>`` in an object store, ``mover.repo.leases``)
-------------------------------------------------------------------------------------------
``repository``     shared by every pending backup, from ``begin`` to commit/abort.
``backup-<id>``    exclusive, held by the writer of pending backup ``<id>``.

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
    Pack writes never collide: a pack is named by the SHA-256 of its bytes and created
    only if absent. Two writers may store one chunk twice (in two packs): space, not data.
[2] A pending backup holds its ``backup-<id>`` lock, so it is never removed however old.
[3] Verify reads only committed backups; a backup committed during verify may be missed.
"""

from mover.repo.codec import ChunkCodec
from mover.repo.config import RepoConfig
from mover.repo.localstore import LocalStore
from mover.repo.locks import FileLocks, Locks, MemoryLocks
from mover.repo.memstore import MemoryStore
from mover.repo.packs import PackedChunks
from mover.repo.pending import PendingBackup
from mover.repo.records import BackupRecord, DiskRecord
from mover.repo.repository import Repository
from mover.repo.store import Stat, Store

__all__ = [
    "BackupRecord",
    "ChunkCodec",
    "DiskRecord",
    "FileLocks",
    "LocalStore",
    "Locks",
    "MemoryLocks",
    "MemoryStore",
    "PackedChunks",
    "PendingBackup",
    "RepoConfig",
    "Repository",
    "Stat",
    "Store",
]
