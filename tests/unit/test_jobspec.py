"""Job files of ``mover run`` that are refused: exit 2, the key path named, the fix said.

No lab: every one of these fails before mover connects anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mover.jobs import jobspec

GOOD: dict[str, Any] = {"server": "127.0.0.1:9", "user": "u", "password_env": "MOVER_PASSWORD",
                        "vms": ["web01", "db01"], "repo": "/tmp/never-used"}


def run(path: Path, *extra: str,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mover.cli", "run", str(path), *extra],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MOVER_PASSWORD": "secret-pw", **(env or {})})


@pytest.mark.parametrize(
    ("change", "says"),
    [
        pytest.param({"vmname": "x"}, "unknown key 'vmname' (known keys: ", id="unknown-key"),
        pytest.param({"full": "yes"}, "'full': Input should be a valid boolean, not \"yes\"",
                     id="wrong-type-bool"),
        pytest.param({"fetchers": 2.5}, "'fetchers': Input should be a valid integer, not 2.5",
                     id="wrong-type-int"),
        pytest.param({"password": "hunter2"}, "key 'password' is not allowed",
                     id="inline-password"),
        pytest.param({"vms": []}, "'vms': List should have at least 1 item", id="empty-vms"),
        pytest.param({"vms": ["web01", "web01"]}, "'vms': VM 'web01' is listed twice",
                     id="vm-twice"),
        pytest.param({"vms": ["web01", 7]}, "'vms[1]': Input should be a valid string, not 7",
                     id="vm-not-a-string"),
        pytest.param({"repo": None}, "'repo': Input should be a valid string, not null",
                     id="repo-null"),
        pytest.param({"keep": {"daily": "7"}}, "'keep.daily': Input should be a valid integer",
                     id="keep-wrong-type"),
        pytest.param({"keep": {"dayly": 7}}, "unknown key 'keep.dayly'", id="keep-unknown-rule"),
        pytest.param({"parallel_vms": 0}, "'parallel_vms': Input should be greater than or "
                     "equal to 1", id="parallel-vms-zero"),
        pytest.param({"bandwidth": -5}, "'bandwidth': Input should be greater than 0",
                     id="negative-bandwidth"),
        pytest.param({"password_file": "/etc/hostname"}, "give exactly one of "
                     "\"password_file\" and \"password_env\"", id="two-password-sources"),
        pytest.param({"pre_hook": "echo hi"}, "'pre_hook': Input should be a valid list",
                     id="hook-not-argv"),
        pytest.param({"keep": {"last": 0}}, "'keep': no keep rule of 1 or more given",
                     id="keep-nothing"),
        pytest.param({"repo": "s3://"}, "'repo': ", id="repo-s3-without-bucket"),
        pytest.param({"transport": "vddk"}, "'transport': Input should be 'folder', 'nbd' or "
                     "'auto'", id="transport-unknown"),
        pytest.param({"busy_wait": -1}, "'busy_wait': Input should be greater than or equal "
                     "to 0", id="negative-busy-wait"),
    ],
)
def test_invalid_job_files_exit_2_naming_the_key(tmp_path: Path, change: dict[str, Any],
                                                  says: str) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps({**GOOD, **change}))
    proc = run(path)
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr
    assert "secret-pw" not in proc.stderr + proc.stdout and "hunter2" not in proc.stderr


def test_a_missing_required_key(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps({k: v for k, v in GOOD.items() if k != "server"}))
    proc = run(path, "--json")
    assert proc.returncode == 2
    assert "missing required key 'server'" in proc.stderr
    error = json.loads(proc.stdout.splitlines()[-1])["error"]
    assert error["kind"] == "UsageError" and error["exit_code"] == 2


def test_a_world_readable_password_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("secret-pw\n")
    secret.chmod(0o644)
    job = {k: v for k, v in GOOD.items() if k != "password_env"} | {"password_file": str(secret)}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    proc = run(path)
    assert proc.returncode == 2
    assert "'password_file'" in proc.stderr and "chmod 600" in proc.stderr
    secret.chmod(0o600)
    parsed = jobspec.settings(jobspec.parse(path.read_text(), str(path)), str(path))
    assert parsed.backup.credentials.password == "secret-pw"


def test_an_unset_password_env_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps({**GOOD, "password_env": "MOVER_NO_SUCH_VARIABLE"}))
    proc = run(path)
    assert proc.returncode == 2 and "MOVER_NO_SUCH_VARIABLE is not set" in proc.stderr


def test_bad_toml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text('server = "x"\nvms = [web01]\n')
    proc = run(path)
    assert proc.returncode == 2 and "is not valid TOML" in proc.stderr and "line 2" in proc.stderr


def test_toml_and_json_give_the_same_settings(tmp_path: Path) -> None:
    toml = ('server = "127.0.0.1:9"\nuser = "u"\npassword_env = "MOVER_PASSWORD"\n'
            'vms = ["web01", "db01"]\nrepo = "/tmp/never-used"\nparallel_vms = 2\n'
            'host_reads = 4\nbandwidth = 1.5\n[keep]\nlast = 3\ndaily = 7\n')
    as_json = {**GOOD, "parallel_vms": 2, "host_reads": 4, "bandwidth": 1.5,
               "keep": {"last": 3, "daily": 7}}
    a = jobspec.parse(toml, "job.toml")
    b = jobspec.parse(json.dumps(as_json), "job.json")
    assert a == b
    os.environ.setdefault("MOVER_PASSWORD", "x")
    job = jobspec.settings(a, "job.toml")
    assert job.vms == ("web01", "db01") and job.bandwidth == 1.5 * (1 << 20)
    assert job.keep is not None and job.keep.daily == 7


def test_schema_prints_every_key(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "mover.cli", "run", "--schema"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    schema = json.loads(proc.stdout)
    assert set(schema["properties"]) == set(jobspec.Job.model_fields)
    assert schema["additionalProperties"] is False


def test_the_backup_keys_reach_the_settings_of_every_vm() -> None:
    job = jobspec.settings(jobspec.Job.model_validate(
        {**GOOD, "repo": "s3://backups/site-a", "transport": "nbd", "nbdkit_plugin": "/x/p",
         "vddk_libdir": "/opt/vddk", "quiesce_fallback": True, "consolidate": False,
         "busy_wait": 30, "host_wait": 5.5}), "job.json")
    backup = job.backup
    assert backup.repo == "s3://backups/site-a"   # a URL stays text; a directory is a Path
    assert (backup.nbd.transport, backup.nbd.plugin, backup.nbd.libdir) == ("nbd", "/x/p",
                                                                             "/opt/vddk")
    assert (backup.quiesce_fallback, backup.consolidate, backup.busy_wait) == (True, False, 30)
    assert backup.pipeline.host_wait == 5.5
    local = jobspec.settings(jobspec.Job.model_validate(GOOD), "job.json").backup
    assert local.repo == Path("/tmp/never-used") and local.nbd.transport == "auto"
