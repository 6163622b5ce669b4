"""``config.json``: the parameters every writer of a repository must agree on.

They are fixed when the repository is created: chunks written with another block size or
hash would not deduplicate and indexes would not line up, so they are never changed later.
The one exception is ``id``, a random name of the repository that its backups' vSphere
snapshots carry (so any mover run can tell whose snapshot it meets): optional, because older
repositories have none, and added once (``ensure_id``) the first time a mover opens one.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from mover.errors import RepositoryError
from mover.repo.atomic import write_atomic

FORMAT = "mover-repository"
_OPTIONAL = {"id"}
_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
VERSION = 1
MIN_BLOCK = 4096
MAX_BLOCK = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RepoConfig:
    """The contents of ``config.json``. Constructing one validates it (RepositoryError)."""

    format: str = FORMAT
    version: int = VERSION
    block_size: int = 1024 * 1024
    hash: str = "sha256"
    compression: str = "zstd"
    level: int = 3
    id: str = ""            # 32 hex digits; "" only in repositories older than the key

    def __post_init__(self) -> None:
        bs = self.block_size
        if bs < MIN_BLOCK or bs > MAX_BLOCK or bs & (bs - 1):
            raise RepositoryError(
                f"block size {bs} is not a power of two from {MIN_BLOCK} to {MAX_BLOCK} bytes"
            )
        if self.hash != "sha256" or self.compression != "zstd":
            raise RepositoryError(f"unsupported hash {self.hash!r} or compression "
                                  f"{self.compression!r} (this mover knows sha256 and zstd)")
        if not 1 <= self.level <= 22:
            raise RepositoryError(f"zstd level {self.level} is outside 1..22")
        if self.id and not _ID.fullmatch(self.id):
            raise RepositoryError(f"repository id {self.id!r} is not 1 to 64 letters, digits, "
                                  "'.', '_' or '-'")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: Path, tmp_dir: Path | None = None) -> None:
        """Write ``config.json`` atomically (see :func:`write_atomic`)."""
        data = json.dumps(self.to_json(), indent=2, sort_keys=True).encode() + b"\n"
        write_atomic(path, data, tmp_dir)

    @classmethod
    def load(cls, path: Path) -> RepoConfig:
        """Read ``config.json``; RepositoryError names the file and the fix on any problem.

        Unknown keys are ignored, so a later version 1 mover may add optional settings.
        """
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError as exc:
            raise RepositoryError(f"{path} is missing: this is not a mover repository "
                                  "(check the path)") from exc
        except (OSError, ValueError) as exc:
            raise RepositoryError(f"{path} is damaged ({exc}); restore it from a copy, "
                                  "its keys are listed in docs/repository.md") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise RepositoryError(f"{path} does not describe a {FORMAT} (format "
                                  f"{data.get('format') if isinstance(data, dict) else None!r})")
        if data.get("version") != VERSION:
            raise RepositoryError(f"{path} has format version {data.get('version')!r}, this "
                                  f"mover reads version {VERSION}: use a matching mover")
        values = {}
        for name, field in cls.__dataclass_fields__.items():
            if name in _OPTIONAL and name not in data:
                continue
            if name not in data:
                raise RepositoryError(f"{path} lacks the key {name!r}; restore it from a copy, "
                                      "its keys are listed in docs/repository.md")
            if type(data[name]) is not type(field.default):
                raise RepositoryError(f"{path}: {name} must be a {type(field.default).__name__},"
                                      f" not {data[name]!r}; restore it from a copy")
            values[name] = data[name]
        try:
            return cls(**values)
        except RepositoryError as exc:
            raise RepositoryError(f"{path}: {exc}; restore it from a copy") from exc


def new_id() -> str:
    """A fresh repository id: 128 random bits in hex."""
    return secrets.token_hex(16)


def ensure_id(path: Path, tmp_dir: Path | None = None) -> RepoConfig:
    """``config.json`` at ``path`` with an ``id``, adding one if it has none.

    Two processes opening an old repository at once must agree on one id: each locks the
    file it opened, then reads the path again; the first to get the lock writes a new file
    (rename), the second then reads that file's id instead of writing its own."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise RepositoryError(f"cannot open {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        config = RepoConfig.load(path)
        if not config.id:
            config = replace(config, id=new_id())
            config.save(path, tmp_dir)
        return config
    finally:
        os.close(fd)
