"""The snapshot-safety options of ``mover backup`` and their job file keys, through the
real CLI (refused before any connection, so no lab is needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from e2e.runner import mover

BACKUP = ["backup", "--server", "127.0.0.1:9", "--user", "u", "--vm", "web01"]


@pytest.fixture(autouse=True)
def password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOVER_PASSWORD", "x")


@pytest.mark.parametrize("hours", ["-1", "nan"], ids=["negative", "nan"])
def test_a_negative_orphan_age_is_a_usage_error(tmp_path: Path, hours: str) -> None:
    run = mover(*BACKUP, "--repo", tmp_path / "r", "--orphan-age", hours)
    assert run.code == 2 and "--orphan-age must be at least 0 hours" in run.stderr
    assert os.environ["MOVER_PASSWORD"] not in run.stderr


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        pytest.param("orphan_age", -1, "--orphan-age must be at least 0", id="orphan-age-hours"),
        pytest.param("read_all", "yes", "'read_all' must be true or false", id="read-all-bool"),
    ],
)
def test_the_new_options_are_job_file_keys(tmp_path: Path, key: str, value: object,
                                           says: str) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"type": "backup", "server": "127.0.0.1:9", "user": "u",
                                "vm": "web01", "repo": str(tmp_path / "r"), key: value}))
    run = mover("job", path)
    assert run.code == 2 and says in run.stderr
