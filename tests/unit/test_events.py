"""The event stream's contract: docs/events.md is generated from the models and current;
the stream stamps seq in order and rate-limits progress."""

from __future__ import annotations

from pathlib import Path

import pytest

from mover import clock
from mover.jobs import events
from mover.jobs.stream import EventStream

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def test_docs_events_md_is_current() -> None:
    assert DOC.read_text() == events.document(), (
        "docs/events.md is stale: run `python -m mover.jobs.events > docs/events.md`")


class Recorder:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, event: events.Event) -> None:
        self.lines.append(event.model_dump_json())


def test_progress_at_most_once_a_second_per_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(clock, "monotonic", lambda: now[0])
    sink = Recorder()
    stream = EventStream("job1", [sink])
    vm = stream.for_vm("web01")
    vm.disk_started(2000, "Hard disk 1", "full", 100 * 10, "no earlier backup")
    vm.disk_started(2001, "Hard disk 2", "full", 100 * 10, "no earlier backup")
    for _ in range(80):                  # a call every 1/16 s for 5 s on each disk
        now[0] += 0.0625
        vm.disk_progress(2000, 5)
        vm.disk_progress(2001, 5)
    parsed = [events.parse(line) for line in sink.lines]
    assert [e.seq for e in parsed] == list(range(1, len(parsed) + 1))
    for key in (2000, 2001):
        ticks = [e for e in parsed if isinstance(e, events.Progress) and e.disk == key]
        assert len(ticks) == 5
        assert [t.bytes for t in ticks] == [80, 160, 240, 320, 400]
        assert ticks[0].rate == pytest.approx(80.0)
        assert ticks[0].eta_seconds == pytest.approx(11.5)
