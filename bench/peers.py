"""Peers backing up the same disk's image file from local disk: restic, borg, kopia (when
installed), and a plain ``curl | zstd | sha256sum`` pipeline over the lab."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.runs import run_child, tree_bytes

PASSWORD = "bench-password"


class Peer:
    """One backup tool. ``init`` makes an empty repository, ``backup`` adds a snapshot of
    the image file; both raise on failure."""

    name = ""
    binary = ""
    settings = ""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.env = dict(os.environ)

    @classmethod
    def available(cls) -> bool:
        return shutil.which(cls.binary) is not None

    def version(self) -> str:
        out = subprocess.run([self.binary, "version" if self.binary == "restic" else
                              "--version"], capture_output=True, text=True)
        return out.stdout.strip().splitlines()[0] if out.stdout else "?"

    def init(self, repo: Path) -> None:
        raise NotImplementedError

    def backup_cmd(self, repo: Path, image: Path, tag: str) -> list[str]:
        raise NotImplementedError

    def backup(self, repo: Path, image: Path, tag: str) -> dict[str, Any]:
        before = tree_bytes(repo)
        run = run_child(self.backup_cmd(repo, image, tag), env=self.env, cwd=image.parent)
        if run.returncode != 0:
            raise RuntimeError(f"{self.name} backup failed: {run.stderr[-1500:]}")
        size = tree_bytes(repo)
        return {"wall": run.wall, "maxrss_mib": run.maxrss_mib, "cpu": run.cpu,
                "repo_bytes": size, "repo_growth": size - before}


class Restic(Peer):
    name = "restic"
    binary = "restic"
    settings = "defaults (compression auto = zstd, AES-256 encryption cannot be disabled)"

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        self.env.update(RESTIC_PASSWORD=PASSWORD, RESTIC_CACHE_DIR=str(work / "restic-cache"))

    def init(self, repo: Path) -> None:
        subprocess.run(["restic", "init", "--repo", str(repo)], env=self.env, check=True,
                       capture_output=True)

    def backup_cmd(self, repo: Path, image: Path, tag: str) -> list[str]:
        return ["restic", "backup", "--repo", str(repo), "--quiet", "--tag", tag, image.name]


class Borg(Peer):
    name = "borg"
    binary = "borg"
    settings = "-e none, --compression zstd,3 (mover's codec and level)"

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        self.env.update(BORG_BASE_DIR=str(work / "borg-base"),
                        BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
                        BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")

    def init(self, repo: Path) -> None:
        subprocess.run(["borg", "init", "-e", "none", str(repo)], env=self.env, check=True,
                       capture_output=True)

    def backup_cmd(self, repo: Path, image: Path, tag: str) -> list[str]:
        return ["borg", "create", "--compression", "zstd,3", f"{repo}::{tag}", image.name]


class Kopia(Peer):
    name = "kopia"
    binary = "kopia"
    settings = "defaults"

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        self.env.update(KOPIA_PASSWORD=PASSWORD, KOPIA_CONFIG_PATH=str(work / "kopia.config"),
                        KOPIA_CACHE_DIRECTORY=str(work / "kopia-cache"))

    def init(self, repo: Path) -> None:
        subprocess.run(["kopia", "repository", "create", "filesystem", "--path", str(repo)],
                       env=self.env, check=True, capture_output=True)

    def backup_cmd(self, repo: Path, image: Path, tag: str) -> list[str]:
        return ["kopia", "snapshot", "create", str(image)]


PEERS: list[type[Peer]] = [Restic, Borg, Kopia]
WHY_MISSING = {
    "kopia": "not in Debian's archive, on PyPI or on npm (checked with apt-cache policy, "
             "pip index versions, npm view); no other downloads are possible here",
}


def curl_zstd_sha(config: Path, out: Path, level: int) -> dict[str, Any]:
    """The plain pipeline: one curl stream of the planned ranges, hashed and compressed to a
    file (``curl | tee >(sha256sum) | zstd``). ``config`` is the curl config of the ranges."""
    script = (f"set -o pipefail; curl -K {config} "
              f"| tee >(sha256sum > {out}.sha256) | zstd -q -{level} -T0 -o {out}")
    run = run_child(["bash", "-c", script])
    if run.returncode != 0:
        raise RuntimeError(f"baseline failed: {run.stderr[-1500:]}")
    size = out.stat().st_size
    out.unlink()
    return {"wall": run.wall, "bytes": size, "cpu": run.cpu}
