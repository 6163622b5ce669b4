"""Shared fixtures: the vSphere lab (docs/lab.md), started once per test session.

Generic on purpose: mover's own tests use `lab` and `unique_name` as well.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mover_lab import Lab

#: The lab's configuration as it starts; the `lab` fixture restores it after every test.
LAB_DEFAULT_CONFIG: dict[str, Any] = {
    "maxAreasPerReply": 2000,
    "granularity": 65536,
    "snapshotDigests": False,
    "folderConnectionBps": 0,
    "folderTotalBps": 0,
}


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One lab for the whole session (starting vcsim takes a moment)."""
    server = Lab.start(tmp_path_factory.mktemp("lab"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def lab(lab_server: Lab) -> Iterator[Lab]:
    """The session's lab with no faults, default configuration and zeroed counters."""
    lab_server.clear_faults()
    lab_server.configure(**LAB_DEFAULT_CONFIG)
    lab_server.reset_counters()
    yield lab_server
    lab_server.clear_faults()
    lab_server.configure(**LAB_DEFAULT_CONFIG)


_names = itertools.count(1)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """unique_name("vm") -> a VM name no other test in this session (or xdist worker) uses."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "w")
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:32].strip("-")

    def make(prefix: str = "vm") -> str:
        return f"{prefix}-{base}-{worker}-{next(_names)}"

    return make
