"""vSphere CBT change IDs: ``"52 de c0 d9 3e 4d 58 a8-62 9a 1c 61 7e 2b 83 58/7"``.

The part before ``/`` is the tracking epoch (a new one after CBT is reset or re-enabled);
the number after it grows with every snapshot. An incremental is only sound between two
change IDs of the same epoch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FORM = re.compile(r"^(?P<epoch>[0-9a-fA-F]{2}(?:[ -][0-9a-fA-F]{2}){15})/(?P<seq>\d+)$")

ALL_ALLOCATED = "*"
"""The change ID that asks for every allocated area: what a full backup queries."""


@dataclass(frozen=True, slots=True)
class ChangeId:
    epoch: str
    sequence: int

    @classmethod
    def parse(cls, text: str | None) -> ChangeId | None:
        """The parsed change ID, or None when ``text`` is empty or not of VMware's form."""
        match = _FORM.match((text or "").strip())
        if match is None:
            return None
        return cls(match["epoch"].lower(), int(match["seq"]))

    def __str__(self) -> str:
        return f"{self.epoch}/{self.sequence}"


def incremental_base(previous: str | None, current: str | None) -> tuple[bool, str]:
    """Whether an incremental from ``previous`` to ``current`` is sound, and why (or why not)."""
    prev, cur = ChangeId.parse(previous), ChangeId.parse(current)
    if cur is None:
        return False, "the disk has no change ID (CBT not active on it)"
    if prev is None:
        return False, "the previous backup has no usable change ID"
    if prev.epoch != cur.epoch:
        return False, "change tracking was reset since the previous backup (new CBT epoch)"
    if prev.sequence > cur.sequence:
        return False, "the previous backup's change ID is newer than the disk's"
    return True, f"changes since {prev}"
