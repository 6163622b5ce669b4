"""Bad input and hostile places: each gets a one-line cause and fix and its own exit status,
leaves no mover snapshot and no backup a later run trusts."""

from __future__ import annotations

import hashlib
import json
import random
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e.runner import Run, backup, backup_args, env, mover, mover_snapshots

from mover_lab import Lab, connect

MiB = 1 << 20


def fails(run: Run, code: int, *says: str) -> None:
    assert run.code == code, f"exit {run.code}, wanted {code}:\n{run.stdout}\n{run.stderr}"
    lines = [ln for ln in run.stderr.splitlines() if ln.startswith("mover: error:")]
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    for text in says:
        assert text in lines[0], lines[0]
    assert run.result["error"]["exit_code"] == code


@pytest.fixture
def vm(lab: Lab, unique_name: Callable[[str], str]) -> str:
    name = unique_name("vm")
    lab.create_vm(name, [{"capacity": 64 * MiB, "type": "thin"}])
    lab.write(name, 2000, 0, random.Random(2).randbytes(8 * MiB))
    return name


@pytest.fixture(scope="module")
def tls_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab.start(tmp_path_factory.mktemp("tls-lab"), tls=True)
    lab.create_vm("tls-vm", [{"capacity": 16 * MiB, "type": "thin"}])
    lab.write("tls-vm", 2000, 0, b"t" * MiB)
    try:
        yield lab
    finally:
        lab.stop()


@pytest.mark.parametrize(
    ("tls", "code", "says"),
    [
        pytest.param([], 3, "is not trusted (self-signed", id="untrusted-certificate"),
        pytest.param(["--thumbprint", "00" * 32], 3, "does not match --thumbprint",
                     id="thumbprint-mismatch"),
        pytest.param(["--thumbprint", "PIN"], 0, "", id="thumbprint-pinned"),
        # VMware's tools (and older ESXi) print SHA-1 thumbprints: accepted, with a warning
        pytest.param(["--thumbprint", "SHA1"], 0, "SHA-1 fingerprint", id="sha1-pinned"),
        pytest.param(["--thumbprint", ":".join(["00"] * 20)], 3,
                     "certificate SHA-1 is", id="sha1-mismatch"),
        pytest.param(["--insecure"], 0, "", id="insecure"),
    ],
)
def test_certificates(tls_lab: Lab, tmp_path: Path, tls: list[str], code: int,
                      says: str) -> None:
    assert tls_lab.thumbprint is not None
    der = ssl.PEM_cert_to_DER_cert((tls_lab.dir / "cert.pem").read_text())
    sha1 = ":".join(f"{b:02X}" for b in hashlib.sha1(der).digest())
    tls = [tls_lab.thumbprint if t == "PIN" else sha1 if t == "SHA1" else t for t in tls]
    run = mover(*backup_args(tls_lab, "tls-vm", tmp_path / "repo", *tls), lab=tls_lab)
    if code:
        fails(run, code, says)
        assert tls_lab.snapshots("tls-vm") == []
    else:
        assert run.code == 0, run.stderr
        assert run.result["status"] == "committed"
        assert any(says in w for w in run.result["warnings"]) == bool(says)


def test_unreachable_server(lab: Lab, tmp_path: Path) -> None:
    run = mover("backup", "--server", "http://127.0.0.1:9/sdk", "--user", "u", "--vm", "x",
                "--repo", tmp_path / "repo", "--json", lab=lab)
    fails(run, 3, "cannot reach http://127.0.0.1:9/sdk", "check --server")


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        pytest.param(lambda c: c.write_text("{not json"), "config.json", id="damaged-config"),
        pytest.param(lambda c: c.write_text(json.dumps({**json.loads(c.read_text()),
                                                        "version": 99})),
                     "version", id="other-format-version"),
    ],
)
def test_a_repository_mover_cannot_trust(lab: Lab, vm: str, tmp_path: Path,
                                         damage: Callable[[Path], None], says: str) -> None:
    repo = tmp_path / "repo"
    backup(lab, vm, repo)
    damage(repo / "config.json")
    fails(mover(*backup_args(lab, vm, repo), lab=lab), 9, says)
    assert mover_snapshots(lab, vm) == []


def test_hardware_too_old_for_cbt(lab: Lab, unique_name: Callable[[str], str],
                                  tmp_path: Path) -> None:
    name = unique_name("old")
    lab._json("POST", "/vms", {"name": name, "version": "vmx-4",
                               "disks": [{"capacity": 16 * MiB, "type": "thin"}]})
    fails(mover(*backup_args(lab, name, tmp_path / "repo"), lab=lab), 7, "vmx-4",
          "upgrade the VM")


def test_cbt_off_and_the_job_forbids_enabling_it(lab: Lab, vm: str, tmp_path: Path) -> None:
    fails(mover(*backup_args(lab, vm, tmp_path / "repo", "--no-enable-cbt"), lab=lab), 7,
          "CBT is off")
    assert lab.vm(vm)["cbt"]["enabled"] is False


def test_user_snapshot_makes_the_disk_a_delta_the_transport_cannot_read(
        lab: Lab, unique_name: Callable[[str], str], tmp_path: Path) -> None:
    name = unique_name("snapped")
    lab.create_vm(name, [{"capacity": 16 * MiB, "type": "thin"}], cbt=True)
    si = connect(lab)
    vm = si.content.searchIndex.FindByInventoryPath(f"DC0/vm/{name}")
    task = vm.CreateSnapshot_Task(name="before-upgrade", description="a user's", memory=False,
                                  quiesce=False)
    while task.info.state not in ("success", "error"):
        pass
    fails(mover(*backup_args(lab, name, tmp_path / "repo"), lab=lab), 7, "delta",
          "consolidate")
    assert [s["name"] for s in lab.snapshots(name)] == ["before-upgrade"]  # the user's stays


@pytest.mark.parametrize(
    ("job", "says"),
    [
        pytest.param({"type": "backup", "vmname": "x"}, "unknown key 'vmname'", id="unknown-key"),
        pytest.param({"type": "backup", "full": "yes"}, "'full' must be true or false",
                     id="wrong-type-bool"),
        pytest.param({"type": "backup", "fetchers": 2.5}, "'fetchers' must be a whole number",
                     id="wrong-type-int"),
        pytest.param({"type": "backup", "password": "x"}, "'password' is not allowed",
                     id="password-in-job"),
        pytest.param({"type": "prune"}, '"type" must be one of', id="unknown-type"),
    ],
)
def test_job_file_errors(lab: Lab, vm: str, tmp_path: Path, job: dict, says: str) -> None:
    base = {"server": lab.url, "user": lab.user, "vm": vm, "repo": str(tmp_path / "repo")}
    path = tmp_path / "job.json"
    path.write_text(json.dumps({**base, **job} if job.get("type") == "backup" else job))
    fails(mover("job", path, lab=lab), 2, says)


def test_a_job_file_runs_a_backup_and_a_restore(lab: Lab, vm: str, tmp_path: Path) -> None:
    job = {"type": "backup", "server": lab.url, "user": lab.user, "vm": vm,
           "repo": str(tmp_path / "repo"), "fetchers": 2, "full": True}
    proc = subprocess.run([sys.executable, "-m", "mover.cli", "job", "-"],
                          input=json.dumps(job), text=True, capture_output=True, env=env(lab),
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(ln) for ln in proc.stdout.splitlines()]
    assert lines[-1]["status"] == "committed" and lines[-1]["disks"][0]["mode"] == "full"
    assert {"disk_started", "disk_done"} <= {ln.get("event") for ln in lines}
    restore = {"type": "restore", "repo": str(tmp_path / "repo"),
               "backup": lines[-1]["backup_id"], "disk": 2000,
               "output": str(tmp_path / "disk.img")}
    (tmp_path / "r.json").write_text(json.dumps(restore))
    run = mover("job", tmp_path / "r.json")
    assert run.code == 0 and run.result["status"] == "restored"
    assert (tmp_path / "disk.img").read_bytes()[: 8 * MiB] == lab.read_live(vm, 2000, 0, 8 * MiB)
