"""``mover run`` for people: progress bars and the summary on a terminal (a real
pseudo-terminal, pexpect), and not one control character when stdout and stderr are pipes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pexpect

from mover_lab import Lab

from .runner import env
from .test_run import job, make_vms

MiB = 1 << 20
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")   # anything but \t and \n


def slow_job(lab: Lab, unique_name: Callable[[str], str], tmp_path: Path) -> Path:
    lab.configure(folderConnectionBps=2 * MiB)     # a few seconds of progress
    vms = make_vms(lab, unique_name, 2, size=32 * MiB)
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job(lab, vms, tmp_path / "repo", parallel_vms=2, fetchers=2)))
    return path


def test_a_terminal_sees_progress_bars_and_the_summary(
        lab: Lab, unique_name: Callable[[str], str], tmp_path: Path) -> None:
    path = slow_job(lab, unique_name, tmp_path)
    child = pexpect.spawn(sys.executable, ["-m", "mover.cli", "run", str(path)], env=env(lab),
                          encoding="utf-8", timeout=120, dimensions=(40, 160))
    # a bar: the disk's description, rich's bar glyphs, a percentage, a rate
    child.expect(r"run-\S+ \S+ full.*━.*\d+%.*MiB/s.*ETA \d+ s")
    child.expect("mover run")                     # the summary table's title
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    summary = child.before
    assert summary.count("committed") == 2
    assert "VM" in summary and "stored" in summary


def test_without_a_terminal_no_control_characters(
        lab: Lab, unique_name: Callable[[str], str], tmp_path: Path) -> None:
    path = slow_job(lab, unique_name, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "mover.cli", "run", str(path)],
                          capture_output=True, env=env(lab), timeout=120)
    assert proc.returncode == 0, proc.stderr
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert not CONTROL.search(out), repr(out)
    assert not CONTROL.search(err), repr(err)
    assert out.count("committed") == 2                # the summary, in plain text
    assert "done in" in err                           # plain progress lines instead of bars
