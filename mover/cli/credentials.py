"""Where the vSphere password comes from: a file or MOVER_PASSWORD, never the command line."""

from __future__ import annotations

import os
from pathlib import Path

from mover.errors import UsageError


def password(file: Path | None) -> str:
    if file is not None:
        try:
            return file.read_text().rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"cannot read --password-file {file}: {exc.strerror}") from exc
    value = os.environ.get("MOVER_PASSWORD")
    if value is None:
        raise UsageError("no password: give --password-file FILE or set MOVER_PASSWORD "
                         "(a password is never taken on the command line)")
    return value
