"""The chunks of a repository, appended into packs: ``has``, ``put``, ``sync``, ``get``.

``put`` encodes a block (``ChunkCodec``) and appends it to the *open* pack in memory (a
reused buffer); when the open pack reaches ``target`` bytes it is sealed and handed to the
*writer*, a thread of this object that writes packs one after another: first the pack
object, then a pack index object naming its chunks, each durable when ``put`` of the store
returns. The thread that filled the pack goes back to compressing (a write and its fsync
took a core's worth of time from the pipeline). At most ``QUEUED`` sealed packs wait for
the writer; a ``put`` that fills one more waits for room, holding no lock, so memory stays
bounded and no two threads wait for each other: the writer waits for nothing but the
store. ``sync`` hands over the open pack (however small) and waits until no pack is in
flight, so when it returns every chunk ``put`` before it is durable *and indexed*: only
then may a journal, a disk index or a backup record name those chunks.

``has`` is answered from the chunk table (``ChunkTable``, 44 bytes per chunk), which holds
the repository's pack indexes (loaded at open, and again by ``refresh``) and this process's
own chunks, including those not yet written. Another process's chunks are seen after a
``refresh`` (at ``begin``, and after a ``sync`` now and then: ``REFRESH_EVERY``); until
then a chunk may be stored twice, which costs space, never data.

A pack write that fails breaks the store for this process: every later call raises the
same error, because chunks of the lost pack are in the table but not in the repository;
packs still waiting are dropped, not written (their chunks are lost with the first).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from mover import clock
from mover.errors import IntegrityError, ObjectMissing, RepositoryError
from mover.repo import layout
from mover.repo.chunktable import ChunkTable
from mover.repo.codec import ChunkCodec
from mover.repo.packfile import PackBuilder, decode_index, encode_index
from mover.repo.store import Store

log = logging.getLogger(__name__)

PACK_TARGET = 16 * 1024 * 1024
"""Bytes of encoded chunks per pack before it is sealed (docs/performance.md: why 16 MiB)."""
REFRESH_EVERY = 10.0
"""Seconds: a ``sync`` reloads the pack indexes other writers wrote at most this often, so
that workers backing up at the same time deduplicate against each other. Never more than
5% of the time either: the LIST of ``index/`` grows with the repository (0.26 s per 1,000
index objects on the lab's RGW)."""
REFRESH_SHARE = 20
SPARE_BUFFERS = 2
"""Buffers of written packs kept for the next ones (besides the open pack's)."""
QUEUED = 1
"""Sealed packs that may wait for the writer besides the one it writes: the pack buffers in
memory are the open pack, the one being written, the queued ones and those of threads
waiting for room (one each). The writer is about 10x faster than the pipeline fills packs,
so the queue is nearly always empty."""


def write_pack(store: Store, builder: PackBuilder,
               guard: Callable[[], None] | None = None) -> tuple[bytes, bytes, int]:
    """Seal ``builder`` and write the pack, then its index (the durability order: only then
    may anything name its chunks). ``guard`` may refuse (raise) just before each of the two
    puts: both are written only under a lock that surely still holds
    (``mover.repo.leases``), so that a writer that woke past its lease writes nothing more
    (an index makes the chunks visible to every other writer; a pack landing while gc runs
    would be taken for one without its index). A pack without its index is ignored, and gc
    removes it once it is older than ``mover.repo.gc.ORPHAN_GRACE``. Returns (pack id,
    index id, bytes written)."""
    entries = list(builder.entries)
    pack_id, data = builder.seal()
    if guard is not None:
        guard()
    store.put(layout.pack(pack_id), data)
    if guard is not None:
        guard()
    index_id, index = encode_index([(pack_id, entries)])
    store.put(layout.index(index_id), index)
    size = len(data) + len(index)
    data.release()
    return pack_id, index_id, size


class PackedChunks:
    """Thread-safe. ``target``: pack size at which a pack is sealed and written."""

    def __init__(self, store: Store, codec: ChunkCodec, target: int = PACK_TARGET) -> None:
        self.store = store
        self.codec = codec
        self.target = target
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._table = ChunkTable()
        self._packs: list[bytes | None] = []        # pack number -> id (None: not written)
        self._numbers: dict[bytes, int] = {}
        self._buffers: dict[int, PackBuilder] = {}  # packs not yet written, for get()
        self._loaded: set[str] = set()              # index objects in the table
        self._open: PackBuilder | None = None
        self._open_number = -1
        self._in_flight = 0                         # taken from open, not yet written
        self._queue: deque[tuple[int, PackBuilder]] = deque()  # sealed, for the writer
        self._room = threading.Condition(self._lock)  # the queue has room
        self._writer: threading.Thread | None = None  # running while the queue has packs
        self._spare: list[bytearray] = []           # buffers of written packs, for reuse
        self._broken: RepositoryError | None = None
        self.damaged: list[str] = []                # index objects that failed to parse
        self._refreshing = threading.Lock()         # one refresh at a time
        self._refreshed_at = 0.0                    # clock.monotonic() of the last one
        self._refresh_cost = 0.0                    # seconds it took
        # Called before each pack and each pack index is written: the Repository checks the
        # locks of its pending backups there (a leased lock that ran out writes nothing).
        self.guard: Callable[[], None] | None = None
        self.refresh()

    # -- reading the repository's indexes -------------------------------------------------

    def refresh(self) -> int:
        """Load pack index objects written since the last refresh; returns how many. If any
        loaded index is gone (gc removed or replaced it), the table is rebuilt from scratch:
        it may name packs that no longer exist."""
        with self._refreshing:
            started = clock.monotonic()
            loaded = self._refresh()
            self._refreshed_at = clock.monotonic()
            self._refresh_cost = self._refreshed_at - started
            return loaded

    def _refresh_now_and_then(self) -> None:
        wait = max(REFRESH_EVERY, REFRESH_SHARE * self._refresh_cost)
        if clock.monotonic() - self._refreshed_at < wait or self._refreshing.locked():
            return
        try:
            self.refresh()
        except RepositoryError as exc:
            # Only for deduplication against other writers: the chunks of this process are
            # durable and indexed whatever it finds (a lost lock is refused by the next
            # check of the writer, not here).
            log.warning("cannot reload the pack indexes of %s (%s); going on without",
                        self.store.describe(), exc)

    def _refresh(self) -> int:
        with self._lock:
            # Only what was loaded before the LIST can be missing from it: another thread
            # of this process may write a pack (and add its index) while the LIST runs.
            known = set(self._loaded)
        present = list(self.store.list(layout.INDEX))
        with self._lock:
            if known - set(present):
                if self._open is not None or self._in_flight:
                    raise RepositoryError("the repository was garbage-collected while this "
                                          "process had unwritten chunks; run again")
                self._table, self._packs, self._numbers = ChunkTable(), [], {}
                self._buffers, self._loaded = {}, set()
        names = [n for n in present if n not in self._loaded and n not in self.damaged]
        for name in names:
            try:
                data = self.store.get(name)
            except ObjectMissing:
                continue  # gc removed it since the listing (its pack goes too): not ours
            try:
                packs, rows = decode_index(data)
            except IntegrityError:
                # Skipped, not fatal: its chunks are then stored again by writers, and
                # verify names it (`mover repair index` rebuilds it from the packs).
                with self._lock:
                    if name not in self.damaged:
                        self.damaged.append(name)
                continue
            with self._lock:
                numbers = [self._number(pack_id) for pack_id in packs]
                for digest, pack, offset, length in rows:
                    self._table.add(digest, numbers[pack], offset, length)
                self._loaded.add(name)
        return len(names)

    def _number(self, pack_id: bytes) -> int:
        number = self._numbers.get(pack_id)
        if number is None:
            number = self._numbers[pack_id] = len(self._packs)
            self._packs.append(pack_id)
        return number

    def __len__(self) -> int:
        with self._lock:
            return len(self._table)

    def packs(self) -> list[bytes]:
        """Ids of the written packs the table knows."""
        with self._lock:
            return [p for p in self._packs if p is not None]

    # -- the ChunkSink of the pipeline ----------------------------------------------------

    def digest(self, block: bytes | bytearray | memoryview) -> bytes:
        return self.codec.digest(block)

    def has(self, digest: bytes) -> bool:
        with self._lock:
            self._check()
            return self._table.get(digest) is not None

    def put(self, digest: bytes, block: bytes | bytearray | memoryview) -> int:
        """Store ``block`` under ``digest`` unless present; returns the bytes it takes in
        the pack (0: already stored). Durable only after the next ``sync``."""
        if self.has(digest):
            return 0
        blob = self.codec.encode(block)   # outside the lock: the CPU work of the pipeline
        full = None
        with self._lock:
            self._check()
            if self._table.get(digest) is not None:
                return 0  # another thread stored it meanwhile
            if self._open is None:
                self._open = PackBuilder(self._spare.pop() if self._spare else
                                         bytearray(self.target + len(blob) + (1 << 20)))
                self._open_number = len(self._packs)
                self._packs.append(None)
                self._buffers[self._open_number] = self._open
            entry = self._open.add(digest, blob)
            self._table.add(digest, self._open_number, entry.offset, entry.length)
            if len(self._open) >= self.target:
                full = self._take_open()
        if full is not None:
            self._hand_over(full)
        return len(blob)

    def sync(self) -> None:
        """Write the open pack and wait for every pack in flight: afterwards every chunk
        stored so far is durable and indexed (RepositoryError if a pack write failed)."""
        with self._lock:
            self._check()
            full = self._take_open() if self._open is not None else None
        if full is not None:
            self._hand_over(full)
        self.drain()
        with self._lock:
            self._check()
        self._refresh_now_and_then()

    def drain(self) -> None:
        """Wait until no pack is being written (whether or not the writes succeed). The
        holder of a pending backup calls it before releasing the backup's locks: a pack
        written after that could race a gc that already listed the indexes."""
        with self._idle:
            while self._in_flight:
                self._idle.wait()

    def _take_open(self) -> tuple[int, PackBuilder]:
        """Under the lock: the open pack, now in flight."""
        assert self._open is not None
        taken = (self._open_number, self._open)
        self._open, self._open_number = None, -1
        self._in_flight += 1
        return taken

    def _hand_over(self, pack: tuple[int, PackBuilder]) -> None:
        """Queue a pack taken from open for the writer (waiting for room), and start the
        writer if it is not running. Called without the lock held."""
        with self._lock:
            while len(self._queue) >= QUEUED and self._broken is None:
                self._room.wait()
            if self._broken is not None:
                self._done()  # never written: its chunks are lost with the first
                self._check()
            self._queue.append(pack)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_queued, daemon=True,
                                                name="mover-packs")
                self._writer.start()

    def _write_queued(self) -> None:
        """The writer: writes queued packs in order until none is left, then ends (started
        again by the next hand-over)."""
        while True:
            with self._lock:
                if not self._queue:
                    self._writer = None
                    return
                number, builder = self._queue.popleft()
                self._room.notify()
                broken = self._broken is not None
            if broken:
                with self._lock:
                    self._done()
                continue
            self._write(number, builder)

    def _write(self, number: int, builder: PackBuilder) -> None:
        """Write one pack and its index; a failure is kept in ``_broken`` (raised by the
        next call of any thread), not raised here."""
        try:
            pack_id, index_id, _ = write_pack(self.store, builder, self.guard)
        except BaseException as exc:
            with self._idle:
                self._broken = exc if isinstance(exc, RepositoryError) else RepositoryError(
                    f"writing a pack to {self.store.describe()} failed: {exc!r}")
                self._done()
            return
        with self._idle:
            self._packs[number] = pack_id
            self._numbers[pack_id] = number
            self._buffers.pop(number, None)
            if len(self._spare) < SPARE_BUFFERS:
                self._spare.append(builder.buffer)
            self._loaded.add(layout.index(index_id))
            self._done()

    def _done(self) -> None:
        """Under the lock: one pack in flight is done (written, failed or dropped); wake
        ``drain`` and, after a failure, threads waiting for room (they raise it)."""
        self._in_flight -= 1
        self._room.notify_all()
        self._idle.notify_all()

    def _check(self) -> None:
        if self._broken is not None:
            raise RepositoryError(f"an earlier pack write failed, nothing more is stored: "
                                  f"{self._broken}")

    # -- reading chunks ------------------------------------------------------------------

    def locate(self, digest: bytes) -> tuple[bytes | None, int, int] | None:
        """(pack id or None while unwritten, offset, length) of a chunk, or None."""
        with self._lock:
            found = self._table.get(digest)
            if found is None:
                return None
            number, offset, length = found
            return self._packs[number], offset, length

    def get(self, digest: bytes) -> bytes:
        """The encoded chunk; IntegrityError naming the digest when it is missing."""
        with self._lock:
            found = self._table.get(digest)
            if found is None:
                raise IntegrityError(f"chunk {digest.hex()} is in no pack of "
                                     f"{self.store.describe()}")
            number, offset, length = found
            pack_id = self._packs[number]
            if pack_id is None:
                return self._buffers[number].chunk(offset, length)
        name = layout.pack(pack_id)
        try:
            blob = self.store.get(name, offset, length)
        except ObjectMissing as exc:
            raise IntegrityError(f"chunk {digest.hex()}: its pack {name} is missing from "
                                 f"{self.store.describe()}") from exc
        if len(blob) != length:
            raise IntegrityError(f"chunk {digest.hex()}: pack {name} ends before the chunk "
                                 f"(offset {offset}, length {length}): the pack is truncated")
        return blob

    def read_block(self, digest: bytes) -> bytes:
        """The verified block with ``digest`` (IntegrityError if missing or damaged)."""
        return self.codec.decode(self.get(digest), digest)
