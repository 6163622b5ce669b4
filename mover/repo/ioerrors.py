"""OS errors of the repository's file system, as RepositoryErrors that name the fix."""

from __future__ import annotations

import errno

from mover.errors import RepositoryError

_FIXES = {
    errno.ENOSPC: "the repository's file system is full: free space there or use another "
                  "--repo; no backup was committed, the next run resumes",
    errno.EDQUOT: "the disk quota of the repository is exhausted: raise it or free space",
    errno.EROFS: "the repository's file system is read-only: remount it read-write or use "
                 "another --repo",
    errno.EACCES: "permission denied: run mover as a user who may write the repository",
    errno.EPERM: "operation not permitted: check the repository's owner and mount options",
}


def io_error(what: str, exc: OSError) -> RepositoryError:
    """``what`` failed with ``exc``: the cause in words, then the fix where one is known."""
    cause = exc.strerror or str(exc)
    fix = _FIXES.get(exc.errno or 0)
    return RepositoryError(f"{what}: {cause}" + (f"; {fix}" if fix else ""))
