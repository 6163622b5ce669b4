"""Retention selection: restic's keep rules on examples, and its invariants on random histories."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mover.errors import UsageError
from mover.retention import RULES, Candidate, KeepPolicy, Reason, Selection, select


def at(created: str) -> datetime:
    """A BackupRecord's ``created`` string as the datetime a Candidate takes."""
    return datetime.fromisoformat(created)


def backup(id: str, created: str, group: str = "vm-a") -> Candidate:
    return Candidate(id, group, at(created))


def verdict(selection: Selection) -> dict[str, list[str]]:
    """Kept id -> its reasons as the CLI shows them."""
    return {kept.backup.id: kept.describe() for kept in selection.kept}


def reasons(selections: list[Selection]) -> dict[str, tuple[Reason, ...]]:
    return {k.backup.id: k.reasons for s in selections for k in s.kept}


# -- examples ------------------------------------------------------------------------------

TEN_DAYS = [backup(f"d{day}", f"2026-11-{day}T02:15:00Z") for day in range(16, 26)]
EVERY_20_MINUTES = [backup(f"h{m // 60}:{m % 60:02d}", f"2026-11-25T{m // 60:02d}:{m % 60:02d}:00Z")
                    for m in range(0, 240, 20)]
TWICE_A_MONTH = [backup(f"{y}-{m:02d}-{d:02d}", f"{y}-{m:02d}-{d:02d}T03:00:00Z")
                 for y, m in [(2025, 10), (2025, 11), (2025, 12), (2026, 1), (2026, 2)]
                 for d in (1, 15)]

EXAMPLES = [
    (TEN_DAYS, KeepPolicy(daily=7),
     {f"d{day}": [f"daily 2026-11-{day}"] for day in range(19, 26)}),
    ([backup("sat", "2026-11-28T12:00:00Z"), backup("sun", "2026-11-29T23:59:00Z"),
      backup("mon", "2026-11-30T00:01:00Z"), backup("tue", "2026-12-01T12:00:00Z")],
     KeepPolicy(weekly=2),
     {"tue": ["weekly 2026-W49"], "sun": ["weekly 2026-W48"]}),
    ([backup("sat", "2025-12-27T12:00:00Z"), backup("sun", "2025-12-28T12:00:00Z"),
      backup("mon", "2025-12-29T12:00:00Z"), backup("fri", "2026-01-02T12:00:00Z")],
     KeepPolicy(weekly=2),
     {"fri": ["weekly 2026-W01"], "sun": ["weekly 2025-W52"]}),
    (EVERY_20_MINUTES, KeepPolicy(hourly=3),
     {"h3:40": ["hourly 2026-11-25T03"], "h2:40": ["hourly 2026-11-25T02"],
      "h1:40": ["hourly 2026-11-25T01"]}),
    (TWICE_A_MONTH, KeepPolicy(monthly=4),
     {"2026-02-15": ["monthly 2026-02"], "2026-01-15": ["monthly 2026-01"],
      "2025-12-15": ["monthly 2025-12"], "2025-11-15": ["monthly 2025-11"]}),
    (TWICE_A_MONTH, KeepPolicy(last=1, monthly=2, yearly=5),
     {"2026-02-15": ["last", "monthly 2026-02", "yearly 2026"],
      "2026-01-15": ["monthly 2026-01"], "2025-12-15": ["yearly 2025"],
      "2025-10-01": ["oldest yearly 2025"]}),
    ([backup("a", "2026-11-24T01:00:00Z"), backup("b", "2026-11-24T02:00:00Z"),
      backup("c", "2026-11-25T01:00:00Z"), backup("d", "2026-11-25T02:00:00Z"),
      backup("e", "2026-11-25T03:00:00Z")],
     KeepPolicy(last=1, daily=2),
     {"e": ["last", "daily 2026-11-25"], "b": ["daily 2026-11-24"]}),
    ([backup("first", "2026-09-10T02:00:00Z"), backup("sep", "2026-09-20T02:00:00Z"),
      backup("oct", "2026-10-05T02:00:00Z"), backup("nov", "2026-11-25T02:00:00Z")],
     KeepPolicy(monthly=12),
     {"nov": ["monthly 2026-11"], "oct": ["monthly 2026-10"], "sep": ["monthly 2026-09"],
      "first": ["oldest monthly 2026-09"]}),
    ([backup("a", "2026-11-25T02:15:00Z"), backup("b", "2026-11-25T02:15:00Z")],
     KeepPolicy(last=1), {"b": ["last"]}),
    ([backup("west", "2026-11-25T23:30:00-02:00"), backup("utc", "2026-11-26T00:30:00Z"),
      backup("noon", "2026-11-25T12:00:00Z")],
     KeepPolicy(daily=2),
     {"west": ["daily 2026-11-26"], "noon": ["daily 2026-11-25"]}),
]


@pytest.mark.parametrize(
    ("history", "policy", "kept"), EXAMPLES,
    ids=["ten-days-keep-daily-7", "week-boundary-sunday-monday", "iso-week-across-new-year",
         "hourly-within-one-day", "monthly-across-year-boundary", "last-monthly-yearly",
         "keep-last-1-with-daily", "young-history-keeps-oldest", "same-time-tie-by-id",
         "buckets-are-utc"],
)
def test_examples(history: list[Candidate], policy: KeepPolicy,
                  kept: dict[str, list[str]]) -> None:
    [selection] = select(reversed(history), policy)
    assert verdict(selection) == kept
    newest_first = sorted(history, key=lambda b: (b.time, b.id), reverse=True)
    assert list(selection.forgotten) == [b for b in newest_first if b.id not in kept]
    assert [k.backup for k in selection.kept] == [b for b in newest_first if b.id in kept]


@pytest.mark.parametrize(
    ("counts", "message"),
    [({"daily": -1}, "keep-daily must be 0 or more, got -1"),
     ({}, "will not forget every backup"),
     ({"last": 0, "weekly": 0, "yearly": None}, "will not forget every backup")],
    ids=["negative", "no-rule", "all-zero"],
)
def test_policy_refused(counts: dict[str, int | None], message: str) -> None:
    with pytest.raises(UsageError, match=message) as err:
        KeepPolicy(**counts)
    assert err.value.exit_code == 2


def test_policy_describe_and_bad_input() -> None:
    assert KeepPolicy(last=1, daily=7, weekly=0, monthly=None).describe() == "last 1, daily 7"
    assert select([], KeepPolicy(last=1)) == []
    with pytest.raises(ValueError, match="no time zone"):
        Candidate("a", "vm-a", datetime(2026, 11, 25, 2, 15))
    with pytest.raises(ValueError, match="given twice"):
        select([backup("a", "2026-11-25T02:15:00Z"), backup("a", "2026-11-26T02:15:00Z")],
               KeepPolicy(last=1))


# -- properties ----------------------------------------------------------------------------

BASE = datetime(2025, 12, 20, tzinfo=UTC)
# Steps from minutes to weeks so that every rule meets both shared and distinct buckets, and
# equal times; offsets other than UTC check that buckets are taken in UTC.
UNITS = st.sampled_from([timedelta(minutes=20), timedelta(hours=5), timedelta(days=1),
                         timedelta(days=9), timedelta(days=40)])
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=-5)),
                         timezone(timedelta(hours=9, minutes=30))])
COUNT = st.none() | st.integers(0, 5)
POLICIES = st.tuples(*[COUNT] * len(RULES)).filter(any).map(lambda c: KeepPolicy(*c))


@st.composite
def histories(draw: st.DrawFn, groups: tuple[str, ...] = ("vm-a", "vm-b", "vm-c"),
              min_size: int = 0) -> list[Candidate]:
    unit = draw(UNITS)
    steps = draw(st.lists(st.tuples(st.integers(0, 40), ZONES, st.sampled_from(groups)),
                          min_size=min_size, max_size=30))
    ids = draw(st.permutations(range(len(steps))))  # id order unrelated to time order
    return [Candidate(f"{groups[0]}-{n:02d}", group, (BASE + k * unit).astimezone(zone))
            for n, (k, zone, group) in zip(ids, steps, strict=True)]


@given(histories(), POLICIES)
def test_newest_of_every_group_is_kept(history: list[Candidate], policy: KeepPolicy) -> None:
    selections = select(history, policy)
    assert [s.group for s in selections] == sorted({b.group for b in history})
    for s in selections:
        newest = max((b for b in history if b.group == s.group), key=lambda b: (b.time, b.id))
        assert s.kept[0].backup == newest


@given(histories(), POLICIES, st.randoms(use_true_random=False))
def test_kept_and_forgotten_partition_the_input(history: list[Candidate], policy: KeepPolicy,
                                                rnd: random.Random) -> None:
    selections = select(history, policy)
    kept = [k.backup for s in selections for k in s.kept]
    forgotten = [b for s in selections for b in s.forgotten]
    assert sorted(kept + forgotten, key=lambda b: b.id) == sorted(history, key=lambda b: b.id)
    for s in selections:
        for part in ([k.backup for k in s.kept], list(s.forgotten)):
            assert all(b.group == s.group for b in part)
            assert part == sorted(part, key=lambda b: (b.time, b.id), reverse=True)
        assert all(k.reasons for k in s.kept)
    shuffled = list(history)
    rnd.shuffle(shuffled)
    assert select(shuffled, policy) == selections  # input order does not matter


@given(histories(), POLICIES)
def test_selection_is_idempotent(history: list[Candidate], policy: KeepPolicy) -> None:
    first = select(history, policy)
    again = select([k.backup for s in first for k in s.kept], policy)
    assert reasons(again) == reasons(first)
    assert all(not s.forgotten for s in again)


@given(histories(), POLICIES)
def test_keeps_what_any_rule_alone_keeps(history: list[Candidate], policy: KeepPolicy) -> None:
    combined = reasons(select(history, policy))
    for rule in RULES:
        if policy.count(rule):
            alone = reasons(select(history, KeepPolicy(**{rule: policy.count(rule)})))
            assert set(alone) <= set(combined)
            assert alone == {id: tuple(r for r in rs if r.rule == rule)
                             for id, rs in combined.items() if any(r.rule == rule for r in rs)}


@given(histories(), POLICIES)
def test_no_rule_keeps_more_than_its_count(history: list[Candidate], policy: KeepPolicy) -> None:
    for s in select(history, policy):
        for rule in RULES:
            by_rule = [r for k in s.kept for r in k.reasons if r.rule == rule]
            assert len(by_rule) <= policy.count(rule)
            buckets = [r.bucket for r in by_rule if not r.oldest]
            assert rule == "last" or len(set(buckets)) == len(buckets)


@given(histories(groups=("vm-a",)), histories(groups=("vm-b", "vm-c")), POLICIES)
def test_groups_are_independent(mine: list[Candidate], others: list[Candidate],
                                policy: KeepPolicy) -> None:
    alone = select(mine, policy)
    together = {s.group: s for s in select(mine + others, policy)}
    assert [together[s.group] for s in alone] == alone


BUCKET_OF: dict[str, Callable[[datetime], str]] = {
    "hourly": lambda t: t.strftime("%Y-%m-%dT%H"),
    "daily": lambda t: t.date().isoformat(),
    "weekly": lambda t: "{}-W{:02d}".format(*t.isocalendar()[:2]),
    "monthly": lambda t: t.strftime("%Y-%m"),
    "yearly": lambda t: str(t.year),
}


def model(history: list[Candidate], rule: str, n: int) -> dict[str, tuple[Reason, ...]]:
    """The rule's definition, written out plainly: the newest of each of the n newest buckets,
    plus the oldest backup when there are fewer than n buckets."""
    ordered = sorted(history, key=lambda b: (b.time, b.id), reverse=True)
    if rule == "last":
        return {b.id: (Reason("last"),) for b in ordered[:n]}
    buckets: dict[str, list[Candidate]] = {}
    for b in ordered:  # dicts keep insertion order: buckets come newest first
        buckets.setdefault(BUCKET_OF[rule](b.time.astimezone(UTC)), []).append(b)
    keep: dict[str, tuple[Reason, ...]] = {
        members[0].id: (Reason(rule, key),) for key, members in list(buckets.items())[:n]}
    oldest = ordered[-1]
    if len(buckets) < n and oldest.id not in keep:
        keep[oldest.id] = (Reason(rule, BUCKET_OF[rule](oldest.time.astimezone(UTC)), True),)
    return keep


@given(histories(groups=("vm-a",), min_size=1), st.sampled_from(RULES), st.integers(1, 6))
def test_each_rule_matches_its_definition(history: list[Candidate], rule: str, n: int) -> None:
    assert reasons(select(history, KeepPolicy(**{rule: n}))) == model(history, rule, n)
