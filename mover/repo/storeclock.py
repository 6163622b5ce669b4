"""The store's clock: what "now" is for the machine that stamps ``mtime``.

Ages of objects (an orphan pack's, a crashed writer's debris) are judged against the
store's own clock, never the local one: on an object store the server stamps ``mtime``,
and the two clocks may be minutes apart. The local store stamps with the local clock, so
there both are the same.
"""

from __future__ import annotations

import secrets

from mover.errors import RepositoryError
from mover.repo import layout
from mover.repo.store import Store


def store_now(store: Store) -> float:
    """Seconds since the epoch by the store's clock: the ``mtime`` of a probe object written
    just now (and removed again)."""
    name = layout.clock_probe(secrets.token_hex(8))
    store.put(name, b"", replace=True)
    try:
        stat = store.stat(name)
    finally:
        store.delete(name)
    if stat is None:
        raise RepositoryError(f"object {name} of {store.describe()} vanished right after it "
                              "was written; is another program removing objects?")
    return stat.mtime
