"""Where each chunk is: digest -> (pack number, offset, length), compactly, for ``has()``.

A repository of a 2 TiB disk at 1 MiB blocks holds about two million chunks; a Python dict
of them would take over 400 MiB. This table keeps 44 bytes per chunk (the 32-byte digest
and three u32) in sorted *runs* (a ``bytes`` of digests and an ``array`` of locations,
searched by bisection), plus a small dict of the newest entries that is turned into a run
when it fills. Runs are merged while small, so there are few of them, but never beyond
``MAX_MERGE`` entries, so a merge never doubles the memory of a large table. Not
thread-safe: the owner locks.
"""

from __future__ import annotations

from array import array

DIGEST = 32
RECENT = 16384          # entries kept in the dict before they become a run
MAX_MERGE = 1 << 18     # runs at least this long are not merged further (11 MiB each)
BYTES_PER_CHUNK = DIGEST + 12


class _Run:
    __slots__ = ("digests", "locations")

    def __init__(self, digests: bytes, locations: array[int]) -> None:
        self.digests = digests
        self.locations = locations

    def __len__(self) -> int:
        return len(self.digests) // DIGEST

    def find(self, digest: bytes) -> int:
        """The position of ``digest``, or -1."""
        data = self.digests
        lo, hi = 0, len(data) // DIGEST
        while lo < hi:
            mid = (lo + hi) // 2
            probe = data[mid * DIGEST:(mid + 1) * DIGEST]
            if probe < digest:
                lo = mid + 1
            elif probe > digest:
                hi = mid
            else:
                return mid
        return -1


def _run_of(items: list[tuple[bytes, tuple[int, int, int]]]) -> _Run:
    items.sort()
    locations = array("I")
    for _, location in items:
        locations.extend(location)
    return _Run(b"".join(d for d, _ in items), locations)


def _merge(a: _Run, b: _Run) -> _Run:
    """One sorted run of both (a digest in both keeps ``b``'s, the newer, location)."""
    out, locations = bytearray(), array("I")
    i = j = 0
    na, nb = len(a), len(b)
    while i < na or j < nb:
        da = a.digests[i * DIGEST:(i + 1) * DIGEST] if i < na else None
        db = b.digests[j * DIGEST:(j + 1) * DIGEST] if j < nb else None
        if db is None or (da is not None and da < db):
            out += da  # type: ignore[arg-type]
            locations.extend(a.locations[3 * i:3 * i + 3])
            i += 1
        else:
            if da == db:
                i += 1
            out += db
            locations.extend(b.locations[3 * j:3 * j + 3])
            j += 1
    return _Run(bytes(out), locations)


class ChunkTable:
    def __init__(self) -> None:
        self._recent: dict[bytes, tuple[int, int, int]] = {}
        self._runs: list[_Run] = []     # oldest first
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, digest: object) -> bool:
        return isinstance(digest, bytes) and self.get(digest) is not None

    def get(self, digest: bytes) -> tuple[int, int, int] | None:
        """(pack number, offset, length) of ``digest``, the newest if added twice."""
        found = self._recent.get(digest)
        if found is not None:
            return found
        for run in reversed(self._runs):
            at = run.find(digest)
            if at >= 0:
                loc = run.locations
                return loc[3 * at], loc[3 * at + 1], loc[3 * at + 2]
        return None

    def add(self, digest: bytes, pack: int, offset: int, length: int) -> None:
        """Record where ``digest`` is; a digest already present is not counted twice."""
        if len(digest) != DIGEST:
            raise ValueError(f"digest of {len(digest)} bytes")
        if self.get(digest) is None:
            self._count += 1
        self._recent[digest] = (pack, offset, length)
        if len(self._recent) >= RECENT:
            self._seal()

    def _seal(self) -> None:
        self._runs.append(_run_of(list(self._recent.items())))
        self._recent = {}
        while len(self._runs) >= 2 and len(self._runs[-2]) < MAX_MERGE \
                and len(self._runs[-1]) * 2 >= len(self._runs[-2]):
            newer = self._runs.pop()
            self._runs[-1] = _merge(self._runs[-1], newer)

    def digests(self) -> set[bytes]:
        """Every digest (for gc and verify, which need them as a set anyway)."""
        found = set(self._recent)
        for run in self._runs:
            data = run.digests
            found.update(data[i:i + DIGEST] for i in range(0, len(data), DIGEST))
        return found
