"""``python -m bench`` (run it through ``scripts/bench``, which installs what it needs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.suite import Suite


def main() -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    ap.add_argument("--large", action="store_true",
                    help="also back up a 64 GiB thin disk (about 10%% allocated) for peak RSS")
    ap.add_argument("--runs", type=int, default=3, help="runs per measured point (median)")
    ap.add_argument("--size-gib", type=int, default=8, help="size of the default disks")
    ap.add_argument("--work", type=Path, default=Path("/var/tmp"),
                    help="where the images, the lab and the repositories go")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--no-peers", action="store_true", help="skip restic, borg and kopia")
    ap.add_argument("--no-cases", action="store_true", help="skip the random and zero-heavy disks")
    ap.add_argument("--no-esxi", action="store_true",
                    help="skip the ESXi-like case (/folder throttled like a real host)")
    ap.add_argument("--no-worker", action="store_true",
                    help="skip mover run: the bandwidth limit, one job against three processes")
    ap.add_argument("--no-s3", action="store_true",
                    help="skip the S3 rows (an s3:// repository on the lab's Ceph RGW)")
    ap.add_argument("--no-scale", action="store_true",
                    help="skip the scale model's simulation (docs/scale.md)")
    ap.add_argument("--no-restore", action="store_true",
                    help="skip restore throughput (file, stdout, NBD export, differential)")
    ap.add_argument("--no-nbd", action="store_true",
                    help="skip the NBD transport beside /folder (bench/nbd.py)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    return Suite(args).main()


if __name__ == "__main__":
    sys.exit(main())
