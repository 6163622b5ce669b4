"""The fault matrix: each test records the fault it tried and what mover did; the run ends
with a table of them (``pytest tests/faults``)."""

from __future__ import annotations

import random
from collections.abc import Callable, Generator
from typing import Any

import pytest

from mover_lab import Lab

_ROWS: list[tuple[str, str, str]] = []
_KEY = pytest.StashKey[list[tuple[str, str]]]()


MakeVm = Callable[..., str]


@pytest.fixture
def make_vm(lab: Lab, unique_name: Callable[[str], str]) -> MakeVm:
    """make_vm(capacity, written, seed, cbt=True) -> the name of a new thin one-disk lab VM
    (disk 2000) whose first ``written`` bytes are random (from ``seed``), with the lab
    freezing snapshot digests for the restore checks."""
    def make(capacity: int, written: int, seed: int, cbt: bool = True) -> str:
        lab.configure(snapshotDigests=True)
        name = unique_name("vm")
        lab.create_vm(name, [{"capacity": capacity, "type": "thin"}], cbt=cbt)
        lab.write(name, 2000, 0, random.Random(seed).randbytes(written))
        return name
    return make


@pytest.fixture
def matrix(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """``matrix(fault, outcome)``: a row of the table, e.g. ("503 burst of 5", "completed,
    5 retries, restore identical")."""
    rows = request.node.stash.setdefault(_KEY, [])

    def record(fault: str, outcome: str) -> None:
        rows.append((fault, outcome))

    return record


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[
        None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        for fault, what in item.stash.get(_KEY, []):
            _ROWS.append((fault, what, "proved" if report.passed else "FAILED"))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _ROWS:
        return
    width = max(len(r[0]) for r in _ROWS)
    terminalreporter.section("fault matrix")
    terminalreporter.write_line(f"{'fault':<{width}}  {'test':<6}  outcome")
    for fault, what, status in _ROWS:
        terminalreporter.write_line(f"{fault:<{width}}  {status:<6}  {what}")


from e2e.nbdlab import nbd_lab, tls_lab  # noqa: E402, F401  (fixtures: the HTTPS lab for NBD)
