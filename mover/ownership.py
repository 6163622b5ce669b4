"""Whose is a mover snapshot, and may this run remove it? Pure: no I/O.

Every backup snapshot mover creates carries an ownership tag in its description::

    [mover-owner v=1 repo=<repository id> backup=<backup id> host=<host name>
     boot=<boot id> pid=<process id> started=<ISO time>]

so that any mover run, of any repository on any machine, can tell a live run's snapshot
from a dead one's. The rule (``judge``), in order:

1. A snapshot of **this repository** is an orphan when its backup is not running (nobody
   holds ``locks/backup-<id>.lock``); while it runs it is live, however old.
2. A snapshot of **another repository made on this host** is an orphan when the host
   restarted since (another boot id) or its process is gone; else it is live, however old
   (a long seed runs for days).
3. Any other mover snapshot (another host, or one without the tag: an older mover's, or a
   stun/unstun snapshot) is an orphan only when it is older than the orphan age
   (``--orphan-age``, default 24 h); an untagged one also when this repository knows its
   backup id (a pending or committed backup of the VM) and that backup is not running.

A live snapshot is never touched: the run refuses (on this VM its own snapshot would stack
on the other's, and a delta cannot be read over ``/folder``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, unquote

VERSION = 1
_TAG = re.compile(r"\[mover-owner (?P<fields>[^\]]*)\]")
_SAFE = "-._:+@"


@dataclass(frozen=True, slots=True)
class Owner:
    """The run that created a snapshot."""

    repo: str
    backup: str
    host: str
    boot: str
    pid: int
    started: str

    def tag(self) -> str:
        fields = {"v": str(VERSION), "repo": self.repo, "backup": self.backup,
                  "host": self.host, "boot": self.boot, "pid": str(self.pid),
                  "started": self.started}
        return "[mover-owner " + " ".join(f"{k}={quote(v, safe=_SAFE)}"
                                          for k, v in fields.items()) + "]"

    @classmethod
    def parse(cls, description: str) -> Owner | None:
        """The owner tagged in ``description``; None if it has no (readable) tag."""
        match = _TAG.search(description)
        if match is None:
            return None
        fields = {}
        for item in match["fields"].split():
            key, _, value = item.partition("=")
            fields[key] = unquote(value)
        try:
            if int(fields["v"]) != VERSION:
                return None
            return cls(fields["repo"], fields["backup"], fields["host"], fields["boot"],
                       int(fields["pid"]), fields["started"])
        except (KeyError, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class Here:
    """The run that judges: its repository id, host name and boot id."""

    repo: str
    host: str
    boot: str


@dataclass(frozen=True, slots=True)
class Verdict:
    orphan: bool
    why: str            # a clause for a person: "its backup is not running", ...


def judge(owner: Owner | None, legacy_backup: str, age: float, max_age: float, here: Here,
          running: Callable[[str], bool], known: Callable[[str], bool],
          alive: Callable[[int], bool]) -> Verdict:
    """Whether a mover snapshot is an orphan (see the module docstring for the rule).

    ``owner`` is its tag (None: untagged, ``legacy_backup`` is the backup id its name
    gives), ``age`` its age in seconds. ``running(backup)``: this repository's backup is
    being written now; ``known(backup)``: this repository has that backup of the VM;
    ``alive(pid)``: a mover process with that id runs on this host."""
    if owner is not None and owner.repo == here.repo:
        if running(owner.backup):
            return Verdict(False, "its backup is running in this repository")
        return Verdict(True, "its backup in this repository is not running")
    if owner is not None and owner.host == here.host:
        if owner.boot != here.boot:
            return Verdict(True, "this host restarted since it was taken")
        if not alive(owner.pid):
            return Verdict(True, f"its process {owner.pid} on this host is gone")
        return Verdict(False, f"its process {owner.pid} on this host is running")
    if owner is None and running(legacy_backup):
        return Verdict(False, "its backup is running in this repository")
    if age > max_age:
        return Verdict(True, f"it is older than the orphan age ({_hours(max_age)})")
    if owner is None and known(legacy_backup):
        return Verdict(True, "its backup in this repository is not running")
    if owner is None:
        return Verdict(False, f"it carries no owner tag and is younger than the orphan age "
                       f"({_hours(max_age)})")
    return Verdict(False, f"it belongs to another host and is younger than the orphan age "
                   f"({_hours(max_age)})")


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:g} h"
