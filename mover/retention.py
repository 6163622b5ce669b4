"""Retention: which backups ``mover forget`` keeps, by restic's keep rules.

Pure selection over plain values; the caller loads the records and removes the forgotten.

Backups are grouped (by VM instance UUID) and every group is selected on its own, so adding
backups of one VM never changes what is kept of another. Within a group backups are ordered
newest first by time, then by id: of two backups with the same time the greater id counts as
the newer. Each rule given a count N walks the group from the newest backup to the oldest:

- ``last``: keeps the N newest backups.
- ``hourly``, ``daily``, ``weekly``, ``monthly``, ``yearly``: a backup's bucket is its hour,
  calendar day, ISO week, month or year in UTC (``2026-11-25T02``, ``2026-11-25``,
  ``2026-W48``, ``2026-11``, ``2026``). For the N newest buckets that hold a backup, the
  newest backup of each bucket is kept.
- When a bucket rule runs out of backups before it has kept N, it keeps the group's oldest
  backup too (as restic does since 0.17): ``keep-monthly 12`` over three months of backups
  keeps the very first one rather than only the last of its month. It counts as one of the N.

A backup is kept when any rule keeps it, and lists every rule that does (in the order of
``RULES``); all others are forgotten. Every rule with N >= 1 keeps the newest backup, and a
policy with no such rule is refused, so the newest backup of every group is always kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from mover.errors import UsageError

#: The rules in the order a backup's reasons are listed.
RULES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")

# The bucket of a UTC time for each calendar rule; ``last`` puts every backup in its own.
_BUCKETS: dict[str, Callable[[datetime], str]] = {
    "hourly": lambda t: f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}",
    "daily": lambda t: f"{t.year:04d}-{t.month:02d}-{t.day:02d}",
    "weekly": lambda t: "{:04d}-W{:02d}".format(*t.isocalendar()[:2]),
    "monthly": lambda t: f"{t.year:04d}-{t.month:02d}",
    "yearly": lambda t: f"{t.year:04d}",
}


@dataclass(frozen=True, slots=True)
class Candidate:
    """A backup as retention sees it: ``group`` is the VM instance UUID, ``time`` an aware
    datetime (``BackupRecord.created_at``)."""

    id: str
    group: str
    time: datetime

    def __post_init__(self) -> None:
        if self.time.utcoffset() is None:
            raise ValueError(f"backup {self.id}: time {self.time} has no time zone")


@dataclass(frozen=True, slots=True)
class KeepPolicy:
    """How many backups each rule keeps; None (not given) and 0 keep none by that rule.

    Raises UsageError for a negative count, and for a policy that keeps nothing at all.
    """

    last: int | None = None
    hourly: int | None = None
    daily: int | None = None
    weekly: int | None = None
    monthly: int | None = None
    yearly: int | None = None

    def __post_init__(self) -> None:
        for rule in RULES:
            if self.count(rule) < 0:
                raise UsageError(f"keep-{rule} must be 0 or more, got {self.count(rule)}")
        if not any(self.count(rule) for rule in RULES):
            raise UsageError("no keep rule of 1 or more given (keep-last, keep-hourly, "
                             "keep-daily, ...): mover will not forget every backup")

    def count(self, rule: str) -> int:
        """The N of ``rule`` (one of RULES), 0 when not given."""
        return getattr(self, rule) or 0

    def describe(self) -> str:
        """The rules in use, e.g. ``last 1, daily 7, weekly 4``."""
        return ", ".join(f"{rule} {self.count(rule)}" for rule in RULES if self.count(rule))


@dataclass(frozen=True, slots=True)
class Reason:
    """One rule keeping a backup: ``bucket`` is None for ``last``, else e.g. ``2026-11-25``;
    ``oldest`` marks the oldest backup kept because the rule had buckets to spare."""

    rule: str
    bucket: str | None = None
    oldest: bool = False

    def describe(self) -> str:
        """Short text for a table or JSON: ``last``, ``daily 2026-11-25``,
        ``oldest monthly 2026-09``."""
        text = self.rule if self.bucket is None else f"{self.rule} {self.bucket}"
        return f"oldest {text}" if self.oldest else text


@dataclass(frozen=True, slots=True)
class Kept:
    """A kept backup with every reason to keep it (at least one, in the order of RULES)."""

    backup: Candidate
    reasons: tuple[Reason, ...]

    def describe(self) -> list[str]:
        return [reason.describe() for reason in self.reasons]


@dataclass(frozen=True, slots=True)
class Selection:
    """The verdict on one group; ``kept`` and ``forgotten`` are newest first, disjoint, and
    together exactly the group's backups. ``kept`` is never empty."""

    group: str
    kept: tuple[Kept, ...]
    forgotten: tuple[Candidate, ...]


def select(backups: Iterable[Candidate], policy: KeepPolicy) -> list[Selection]:
    """One Selection per group present in ``backups``, ordered by group.

    The result depends only on the set of backups, not on their order. Backup ids must be
    unique (ValueError otherwise). Applying the policy again to the kept backups keeps all of
    them for the same reasons.
    """
    groups: dict[str, list[Candidate]] = {}
    seen: set[str] = set()
    for backup in backups:
        if backup.id in seen:
            raise ValueError(f"backup id {backup.id} given twice")
        seen.add(backup.id)
        groups.setdefault(backup.group, []).append(backup)
    return [_select_group(group, groups[group], policy) for group in sorted(groups)]


def _select_group(group: str, backups: list[Candidate], policy: KeepPolicy) -> Selection:
    ordered = sorted(backups, key=lambda b: (b.time, b.id), reverse=True)
    reasons: list[list[Reason]] = [[] for _ in ordered]
    for rule in RULES:
        left = policy.count(rule)
        label = _BUCKETS.get(rule)
        previous: str | None = None
        for n, backup in enumerate(ordered):
            if not left:
                break
            bucket = label(backup.time.astimezone(UTC)) if label else None
            # Each bucket is an interval of time, so in time order its backups are adjacent
            # and its first one is its newest.
            new = rule == "last" or bucket != previous
            if new or n == len(ordered) - 1:
                reasons[n].append(Reason(rule, bucket, oldest=not new))
                left -= 1
            previous = bucket
    kept = tuple(Kept(b, tuple(r)) for b, r in zip(ordered, reasons, strict=True) if r)
    forgotten = tuple(b for b, r in zip(ordered, reasons, strict=True) if not r)
    return Selection(group, kept, forgotten)
