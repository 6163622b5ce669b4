"""Every option falls back to a MOVER_* variable; every command's --help has an example."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mover.cli import main, parser
from mover.cli.options import variable

COMMANDS = ["backup", "restore", "list", "job", "run", "verify", "forget", "gc", "repair",
            "metrics", "completion"]


def test_the_environment_fills_options_and_the_command_line_wins(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOVER_REPO", "/from/env")
    monkeypatch.setenv("MOVER_JSON", "yes")
    monkeypatch.setenv("MOVER_FETCHERS", "3")
    monkeypatch.setenv("MOVER_NO_CANARY", "1")
    monkeypatch.setenv("MOVER_VERBOSE", "2")
    args = parser().parse_args(["list"])
    assert args.repo == Path("/from/env") and args.json is True and args.verbose == 2
    assert parser().parse_args(["list", "--repo", "/cli"]).repo == Path("/cli")
    monkeypatch.setenv("MOVER_SERVER", "vc")
    monkeypatch.setenv("MOVER_USER", "u")
    monkeypatch.setenv("MOVER_VM", "web01")
    backup = parser().parse_args(["backup"])          # required options, all from the env
    assert (backup.server, backup.user, backup.vm) == ("vc", "u", "web01")
    assert backup.fetchers == 3 and backup.no_canary is True  # typed like the option


def test_a_bad_flag_value_is_a_usage_error(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MOVER_FULL", "perhaps")
    assert main(["list", "--repo", "/nowhere"]) == 2
    assert "MOVER_FULL='perhaps': must be 1, true, yes, 0, false or no" in capsys.readouterr().err


def test_variable_names() -> None:
    assert variable(("--password-file",)) == "MOVER_PASSWORD_FILE"
    assert variable(("-v", "--verbose")) == "MOVER_VERBOSE"
    assert variable(("file",)) is None


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_an_example_and_names_the_variables(command: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "mover.cli", command, "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "\nexample:\n  " in proc.stdout and "mover " in proc.stdout.split("example:")[1]
    assert "[env MOVER_VERBOSE]" in " ".join(proc.stdout.split())


def test_completion_scripts_name_every_command() -> None:
    proc = subprocess.run([sys.executable, "-m", "mover.cli", "completion", "bash"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for command in COMMANDS:
        assert command in proc.stdout
    assert "--password-file" in proc.stdout
