"""``mover list`` over a real directory repository: the saved VM configuration (NVRAM,
extraConfig with guestinfo values) stays in the backup record and out of the listing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mover.repo import Repository

from .backups import write_backup

SECRET = "guestinfo-secret-7f3a"


def test_list_json_leaves_the_vm_config_out(tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo", block_size=4096)
    config = {"config": {"extraConfig": [{"key": "guestinfo.token", "value": SECRET}]},
              "summary": {}, "nvram": {"base64": SECRET}}
    write_backup(repo, "20261201T000000Z-aaaaa1", b"x" * 8192, 4096, vm_config=config)
    run = subprocess.run([sys.executable, "-m", "mover.cli", "list", "--repo",
                          str(tmp_path / "repo"), "--json"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert SECRET not in run.stdout
    [listed] = json.loads(run.stdout)["backups"]
    assert listed["id"] == "20261201T000000Z-aaaaa1" and "vm_config" not in listed
    kept = Repository.open(tmp_path / "repo", create=False).get_backup(listed["id"])
    assert kept.vm_config == config                      # still in the record
