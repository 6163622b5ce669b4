"""Start-up: building the parser and importing the backup's code imports none of what only
other commands need (a 1% incremental is about a second, a third of it imports)."""

from __future__ import annotations

import subprocess
import sys

ONLY_OTHERS = {"pydantic", "rich", "prometheus_client", "shtab", "boto3", "botocore"}


def test_a_backup_imports_only_what_it_needs() -> None:
    code = ("import sys\n"
            "from mover.cli.main import parser\n"
            "parser().parse_args(['backup', '--server', 's', '--user', 'u', '--vm', 'v',"
            " '--repo', '/r'])\n"
            "import mover.jobs.backup, mover.progress\n"
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert "pyVmomi" in out and "aiohttp" in out          # what a backup does need
    assert not ONLY_OTHERS & set(out)
