"""``--repo``'s argument: a directory or an s3:// URL, checked when the command line is
parsed (a bad URL is a usage error naming what is wrong, exit 2)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from mover.cli import main
from mover.repo.s3url import repo_location


@pytest.mark.parametrize("text, expected", [
    ("/srv/repo", Path("/srv/repo")),
    ("relative/repo", Path("relative/repo")),
    ("s3://backups/site-a", "s3://backups/site-a"),   # kept as text: Path would eat a "/"
], ids=["absolute", "relative", "s3"])
def test_repo_location(text: str, expected: Path | str) -> None:
    assert repo_location(text) == expected


def test_a_bad_s3_url_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a valid bucket name"):
        repo_location("s3://No_Bucket/x")
    with pytest.raises(SystemExit) as exit_:
        main(["list", "--repo", "s3://key:secret@bucket/x"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "an s3:// URL holds only a bucket and a prefix" in err and "AWS_ENDPOINT_URL" in err


def test_a_job_file_takes_the_same_repository_values(tmp_path: Path) -> None:
    from mover import jobfile
    from mover.cli.main import job_commands
    from mover.errors import UsageError

    commands = job_commands()
    base = {"type": "restore", "backup": "b", "disk": 2000, "output": str(tmp_path / "o")}
    _, settings = jobfile.load(json.dumps({**base, "repo": "s3://backups/site-a"}), "j",
                               {"restore": commands["restore"]})
    assert settings.repo == "s3://backups/site-a"
    _, settings = jobfile.load(json.dumps({**base, "repo": "/srv/repo"}), "j",
                               {"restore": commands["restore"]})
    assert settings.repo == Path("/srv/repo")
    with pytest.raises(UsageError, match=r"'repo'.*not a valid bucket name"):
        jobfile.load(json.dumps({**base, "repo": "s3://No_Bucket/x"}), "j",
                     {"restore": commands["restore"]})
