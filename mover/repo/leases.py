"""Leased locks on an object store: the ``Locks`` of an S3 repository (restic's lock files,
with kopia's time margins).

Each holder of lock ``<lock>`` keeps its own object ``locks/<lock>/<x|s>-<holder>``
(``mover.repo.layout``; ``x`` exclusive, ``s`` shared; the holder id is host, pid and 32
random bits). No object is ever shared, so no write races on one: every step is a create,
a replace of one's own object, a list or a delete.

**Acquire**: create one's object; read the store's time from its ``mtime`` (the server's
clock stamps it, so the holders' clocks never meet); list the lock's objects; an object
whose ``mtime`` is more than ``lease + margin`` older than one's own, by the acquirer's
times *and* by the holder's (written in its body: a holder on a longer lease renews less
often), is *stale* (its holder died or stopped refreshing) and is deleted, shared or not;
any other object that conflicts (exclusive against anything) means: delete one's own and
wait (or return None).
Two acquirers that see each other both back off and try again after a random pause.

**Refresh**: a background thread replaces the object every ``refresh`` seconds; that
renews the holder's lease to ``start + lease`` (``start``: ``clock.boottime`` before the
renewal was sent, a clock that runs on while the machine is suspended) only if the
renewal started *and returned* before the lease it renews ended, and the object was still
there. Otherwise the lock is *lost* for good. An acquirer that deleted a stale object
lists again before it decides nothing conflicts: that holder's renewal may land just
after the delete.

**Why gc cannot delete under a paused writer.** Another process deletes an object only
when its stamp is older than ``lease + margin`` by the store's clock. A renewal the holder
counted returned before its old lease ended, so that process saw it; hence it deletes only
after the holder's counted lease has ended, plus ``margin``. The holder calls ``check``
before anything that names chunks (pack index, journal segment, disk index, backup
record; gc before its deletes): it refuses when less than ``headroom`` of the lease is
left (after one synchronous renewal try) or when its object is gone. So a put checked
valid is safe when it lands within ``headroom + margin`` of its check; ``margin`` also
absorbs the skew
between the gateways' clocks (several machines stamping) and S3's one-second
``Last-Modified``. The residual case, written down in ``docs/repository.md``: a process
frozen *between* its check and its request for longer than that.

A holder killed with SIGKILL leaves its object; it blocks others for ``lease + margin``
after its last renewal, then the next acquirer deletes it.
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import socket
import threading
from dataclasses import dataclass

from mover import clock
from mover.errors import ObjectMissing, RepositoryError
from mover.repo import layout
from mover.repo.store import Store

log = logging.getLogger(__name__)

#: Looks an acquire with ``wait=False`` takes before it answers "busy".
PROBES = 3
#: Environment variable: the lease in seconds (tests use a few seconds; default 300).
LEASE_VARIABLE = "MOVER_LOCK_LEASE"
MAX_LEASE = 86400.0
#: Seconds between two log lines naming the holder a waiting acquire waits for.
SAY_EVERY = 60.0


@dataclass(frozen=True, slots=True)
class LeaseTimes:
    """Seconds. Defaults: renewed every minute, stale seven minutes after the last renewal."""

    lease: float = 300.0     # a holder trusts its lock this long after a renewal started
    refresh: float = 60.0    # renewal interval
    margin: float = 120.0    # clock skew between gateways + the longest put after a check
    headroom: float = 150.0  # ``check`` refuses with less than this much lease left

    @classmethod
    def scaled(cls, lease: float) -> LeaseTimes:
        """The default proportions for another lease."""
        return cls(lease, lease / 5, lease * 0.4, lease / 2)

    @classmethod
    def from_environment(cls) -> LeaseTimes:
        text = os.environ.get(LEASE_VARIABLE)
        if not text:
            return cls()
        try:
            lease = float(text)
        except ValueError:
            lease = -1.0
        if not 1.0 <= lease <= MAX_LEASE:
            raise RepositoryError(f"{LEASE_VARIABLE}={text!r} is not a lease in seconds "
                                  "(1 to 86400); unset it for the default of 300")
        return cls.scaled(lease)

    @property
    def stale(self) -> float:
        return self.lease + self.margin


def holder_id() -> str:
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    return f"{host[:40].strip('-') or 'host'}-{os.getpid()}-{secrets.token_hex(4)}"


class LeasedLock:
    """One held lock object; see the module docstring. ``release`` is idempotent."""

    def __init__(self, locks: LeasedLocks, name: str, exclusive: bool, object_name: str,
                 started: float) -> None:
        self._locks = locks
        self.name = name
        self.exclusive = exclusive
        self.object_name = object_name
        self._lease_end = started + locks.times.lease
        self._lost: str | None = None
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start_refreshing(self) -> None:
        self._thread = threading.Thread(target=self._refresh_loop, daemon=True,
                                        name=f"lease {self.name}")
        self._thread.start()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self._locks.times.refresh):
            self.renew()

    def renew(self) -> bool:
        """Replace the lock object; False if the lease is lost (now or before). A store
        error leaves the lease as it was (a later renewal may still count)."""
        with self._guard:
            if self._lost is not None:
                return False
            start = clock.boottime()
            if start >= self._lease_end:
                return self._lose(f"its lease ran out {start - self._lease_end:.0f} s before "
                                  "it could be renewed (the process was paused or the "
                                  "store unreachable)")
            store = self._locks.store
            try:
                if store.stat(self.object_name) is None:
                    return self._lose("its lock object was removed by another process, "
                                      "which found it stale")
                store.put(self.object_name, self._locks.content(self.exclusive),
                          replace=True)
            except RepositoryError as exc:
                log.warning("cannot renew lock %s: %s", self.name, exc)
                return True
            end = clock.boottime()
            if end >= self._lease_end:
                return self._lose("its renewal returned after the lease had run out")
            self._lease_end = start + self._locks.times.lease
            return True

    def _lose(self, why: str) -> bool:
        self._lost = why
        log.warning("lock %s of %s lost: %s", self.name, self._locks.store.describe(), why)
        return False

    def check(self, *, look: bool = True) -> None:
        """RepositoryError unless the lease surely holds for ``headroom`` more seconds and
        (``look``: one HEAD) the lock object is still there. Called before anything that
        names chunks; gc before each delete (looking every ``mover.repo.gc.LOOK_EVERY``)."""
        times = self._locks.times
        if self._lost is None and clock.boottime() > self._lease_end - times.headroom:
            self.renew()
        if self._lost is None and clock.boottime() > self._lease_end - times.headroom:
            self._lose(f"less than {times.headroom:.0f} s of its {times.lease:.0f} s lease "
                       "is left and it cannot be renewed")
        if look and self._lost is None and self._locks.store.stat(self.object_name) is None:
            self._lose("its lock object was removed by another process, which found it "
                       "stale")
        if self._lost is not None:
            raise RepositoryError(
                f"lock {self.name!r} of {self._locks.store.describe()} is no longer held: "
                f"{self._lost}; nothing more is written under it (a backup is resumed by "
                f"the next run); check that the store is reachable and {LEASE_VARIABLE} is "
                "long enough for this machine")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
            self._thread = None
        with self._guard:
            if self._lost == "released":
                return
            self._lost = "released"
        try:
            self._locks.store.delete(self.object_name)
        except RepositoryError as exc:   # the object goes stale after the lease: harmless
            log.warning("cannot remove lock object %s: %s", self.object_name, exc)


class LeasedLocks:
    """``Locks`` on a ``Store`` (any: the memory store in unit tests, S3 in production).

    ``refresh_thread=False`` (tests with fake time): the holder calls ``renew`` itself.
    """

    def __init__(self, store: Store, times: LeaseTimes | None = None, *,
                 holder: str | None = None, refresh_thread: bool = True) -> None:
        self.store = store
        self.times = times or LeaseTimes()
        self.holder = holder or holder_id()
        self.refresh_thread = refresh_thread
        self._serial = 0
        self._serial_guard = threading.Lock()

    def content(self, exclusive: bool) -> bytes:
        return (f'{{"holder": "{self.holder}", "exclusive": {str(exclusive).lower()}, '
                f'"lease": {self.times.lease}, "stale": {self.times.stale}, '
                f'"renewed": "{clock.iso()}"}}\n').encode()

    def _holders_stale(self, name: str) -> float | None:
        """Seconds after its last renewal at which the holder of lock object ``name`` counts
        it stale, from the object's body (its own ``LeaseTimes``, which may be longer than
        ours); None if the object is gone. A body that says nothing usable counts as the
        longest lease there is: such an object is left for its holder, or for a person."""
        try:
            body = json.loads(self.store.get(name))
        except ObjectMissing:
            return None
        except ValueError:
            body = None
        longest = LeaseTimes.scaled(MAX_LEASE).stale
        found = body.get("stale") if isinstance(body, dict) else None
        if isinstance(found, int | float) and not isinstance(found, bool) and found > 0:
            return min(float(found), longest)
        lease = body.get("lease") if isinstance(body, dict) else None
        if isinstance(lease, int | float) and not isinstance(lease, bool) and lease > 0:
            # written before "stale" was: the default proportions
            return min(LeaseTimes.scaled(float(lease)).stale, longest)
        return longest

    def acquire(self, name: str, *, shared: bool = False,
                wait: bool = True) -> LeasedLock | None:
        exclusive = not shared
        with self._serial_guard:     # one object per acquire, also within one process
            self._serial += 1
            holder = f"{self.holder}-{self._serial}"
        own = layout.lock_object(name, exclusive, holder)
        attempt, said = 0, 0.0
        while True:
            started = clock.boottime()
            self.store.put(own, self.content(exclusive), replace=True)
            try:
                conflict = self._conflicts(name, own, exclusive)
            except BaseException:
                self._delete_quietly(own)
                raise
            if conflict is None:
                lock = LeasedLock(self, name, exclusive, own, started)
                if self.refresh_thread:
                    lock.start_refreshing()
                return lock
            self._delete_quietly(own)
            attempt += 1
            if not wait:
                # Unlike a flock, an object can conflict for a moment only: another process
                # probing the lock (``is_running``, ``forget``) or backing off. Two more
                # looks, a fraction of a second apart, before "busy".
                if attempt >= PROBES:
                    return None
                clock.sleep(random.uniform(0.1, 0.3))
                continue
            if attempt == 1 or clock.boottime() >= said + SAY_EVERY:
                said = clock.boottime()   # and again now and then: who it waits for
                log.info("waiting for lock %s of %s, held by %s", name,
                         self.store.describe(), conflict)
            # Random, so that two acquirers that saw each other do not meet again.
            clock.sleep(random.uniform(0.2, 1.0) * min(self.times.refresh, 2.0 + attempt))

    def _conflicts(self, name: str, own: str, exclusive: bool) -> str | None:
        """The holder of a live conflicting object of lock ``name``, after deleting the
        stale ones; None if there is none."""
        mine = self.store.stat(own)
        if mine is None:
            raise RepositoryError(f"lock object {own} of {self.store.describe()} vanished "
                                  "right after it was written; is another mover removing "
                                  "locks by hand?")
        found, removed = None, False
        for other in self.store.list(layout.lock_prefix(name)):
            parts = layout.split_lock(other)
            if other == own or parts is None:
                continue
            # Every other object is looked at, not only conflicting ones: a shared acquirer
            # is what sweeps the stale shared objects of killed writers.
            stat = self.store.stat(other)
            if stat is None:
                continue  # released meanwhile
            # Stale by the holder's lease as well as ours: a holder on a longer lease
            # renews less often (a gc started with a short MOVER_LOCK_LEASE must not delete
            # a worker's object renewed seconds ago). One GET, only for a candidate.
            age = mine.mtime - stat.mtime
            if age > self.times.stale:
                holders = self._holders_stale(other)
                if holders is None:
                    continue  # released meanwhile
                if age > holders:
                    log.warning("removing stale lock %s of %s (last renewed %.0f s before "
                                "now by the store's clock; its holder is gone)", other,
                                self.store.describe(), age)
                    self.store.delete(other)
                    removed = True
                    continue
            if exclusive or parts[1]:
                found = found or parts[2]
        if removed and found is None:
            # Look again: a holder judged stale may have been renewing just then (a renewal
            # sent before our delete and landing after it recreates its object).
            return self._conflicts(name, own, exclusive)
        return found

    def _delete_quietly(self, own: str) -> None:
        try:
            self.store.delete(own)
        except RepositoryError as exc:
            log.warning("cannot remove lock object %s: %s", own, exc)

    def names(self) -> list[str]:
        return sorted({parts[0] for n in self.store.list(layout.LOCKS)
                       if (parts := layout.split_lock(n)) is not None})

    def forget(self, name: str) -> None:
        """Delete the stale objects of lock ``name`` (a live holder's stay): an exclusive
        acquire that does not wait removes every stale object it meets."""
        probe = self.acquire(name, wait=False)
        if probe is not None:
            probe.release()
