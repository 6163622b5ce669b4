"""``config.json``: the parameters every writer of a repository must agree on.

They are fixed when the repository is created: chunks written with another block size or
hash would not deduplicate and indexes would not line up, so they are never changed later.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from mover.errors import RepositoryError
from mover.repo.codec import ChunkCodec

FORMAT = "mover-repository"
VERSION = 2
MIN_BLOCK = 4096
MAX_BLOCK = 64 * 1024 * 1024


def _new_id() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class RepoConfig:
    """The contents of ``config.json``. Constructing one validates it (RepositoryError)."""

    format: str = FORMAT
    version: int = VERSION
    block_size: int = 1024 * 1024
    hash: str = "sha256"
    compression: str = "zstd"
    level: int = 3
    id: str = field(default_factory=_new_id)    # names this repository (snapshots, locks)

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

    def codec(self) -> ChunkCodec:
        """The one chunk codec of this repository."""
        return ChunkCodec(self.level)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode() + b"\n"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def parse(cls, data: bytes, source: str) -> RepoConfig:
        """Read ``config.json``; RepositoryError names ``source`` and the fix on any problem.

        Unknown keys are ignored, so a later version 2 mover may add optional settings.
        """
        try:
            values = json.loads(data)
        except ValueError as exc:
            raise RepositoryError(f"{source} is damaged ({exc}); restore it from a copy, "
                                  "its keys are listed in docs/repository.md") from exc
        if not isinstance(values, dict) or values.get("format") != FORMAT:
            found = values.get("format") if isinstance(values, dict) else None
            raise RepositoryError(f"{source} does not describe a {FORMAT} (format {found!r})")
        if values.get("version") == 1:
            raise RepositoryError(
                f"{source} is a repository of format version 1 (one file per chunk); this "
                f"mover reads and writes version {VERSION} (pack files). Start a new "
                "repository for new backups (another --repo); the old one stays readable by "
                "mover 0.1, which restores its backups")
        if values.get("version") != VERSION:
            raise RepositoryError(f"{source} has format version {values.get('version')!r}, "
                                  f"this mover reads version {VERSION}: use a matching mover")
        known = {}
        for name, spec in cls.__dataclass_fields__.items():
            if name not in values:
                raise RepositoryError(f"{source} lacks the key {name!r}; restore it from a "
                                      "copy, its keys are listed in docs/repository.md")
            default = spec.default if name != "id" else ""
            if type(values[name]) is not type(default):
                raise RepositoryError(f"{source}: {name} must be a {type(default).__name__}, "
                                      f"not {values[name]!r}; restore it from a copy")
            known[name] = values[name]
        try:
            return cls(**known)
        except RepositoryError as exc:
            raise RepositoryError(f"{source}: {exc}; restore it from a copy") from exc
