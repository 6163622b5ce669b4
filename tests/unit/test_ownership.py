"""Whose is a mover snapshot: the ownership tag and the orphan rule (mover.ownership)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mover.ownership import Here, Owner, judge

DAY = 24 * 3600.0
HERE = Here(repo="r" * 32, host="backup01", boot="boot-1")
MINE = Owner(HERE.repo, "20261201T210000Z-abcdef", "backup01", "boot-1", 4242,
             "2026-12-01T21:00:00Z")
SAME_HOST = Owner("other-repo", "20261201T210000Z-000001", "backup01", "boot-1", 4242,
                  "2026-12-01T21:00:00Z")
FOREIGN = Owner("other-repo", "20261201T210000Z-000002", "dr-site", "boot-9", 77,
                "2026-12-01T21:00:00Z")


def test_the_tag_round_trips_inside_a_description() -> None:
    text = f"mover backup x. [mover backup snapshot] Safe to delete. {FOREIGN.tag()}"
    assert Owner.parse(text) == FOREIGN
    assert Owner.parse("mover backup x. [mover backup snapshot]") is None   # legacy
    assert Owner.parse("[mover-owner v=2 repo=a]") is None                 # newer format
    assert Owner.parse("[mover-owner v=1 repo=a]") is None                 # damaged


_field = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)


@given(repo=_field, backup=_field, host=_field, boot=_field, pid=st.integers(0, 1 << 31),
       started=_field)
def test_any_owner_round_trips(repo: str, backup: str, host: str, boot: str, pid: int,
                               started: str) -> None:
    owner = Owner(repo, backup, host, boot, pid, started)
    assert Owner.parse(f"prefix {owner.tag()} suffix") == owner


def verdict(owner: Owner | None, age: float = 60.0, *, running: bool = False,
            known: bool = False, alive: bool = True, legacy: str = "x") -> tuple[bool, str]:
    v = judge(owner, legacy, age, DAY, HERE, lambda _: running, lambda _: known,
              lambda _: alive)
    return v.orphan, v.why


@pytest.mark.parametrize(
    ("owner", "age", "state", "orphan", "why"),
    [
        pytest.param(MINE, 60, {"running": True}, False, "running in this repository",
                     id="this-repo-running"),
        pytest.param(MINE, 10 * DAY, {"running": True}, False, "running in this repository",
                     id="this-repo-running-for-days-is-live"),
        pytest.param(MINE, 60, {"running": False}, True, "not running",
                     id="this-repo-lock-free"),
        pytest.param(SAME_HOST, 60, {"alive": True}, False, "is running",
                     id="other-repo-this-host-process-alive"),
        pytest.param(SAME_HOST, 10 * DAY, {"alive": True}, False, "is running",
                     id="other-repo-this-host-long-seed-is-live"),
        pytest.param(SAME_HOST, 60, {"alive": False}, True, "is gone",
                     id="other-repo-this-host-process-gone"),
        pytest.param(Owner("other-repo", "b", "backup01", "boot-0", 1, ""), 60, {}, True,
                     "restarted", id="other-repo-this-host-rebooted"),
        pytest.param(FOREIGN, 60, {}, False, "another host", id="other-host-young"),
        pytest.param(FOREIGN, DAY + 1, {}, True, "older than the orphan age",
                     id="other-host-older-than-orphan-age"),
        pytest.param(None, 60, {}, False, "no owner tag", id="legacy-young-unknown"),
        pytest.param(None, 60, {"known": True}, True, "not running",
                     id="legacy-of-a-backup-this-repo-knows"),
        pytest.param(None, 60, {"known": True, "running": True}, False, "running",
                     id="legacy-of-a-running-backup"),
        pytest.param(None, DAY + 1, {}, True, "older than", id="legacy-old"),
    ],
)
def test_the_orphan_rule(owner: Owner | None, age: float, state: dict[str, bool],
                         orphan: bool, why: str) -> None:
    got, reason = verdict(owner, age, **state)
    assert got is orphan
    assert why in reason
