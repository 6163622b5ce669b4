"""The demo behind scripts/demo (see there). Uses the lab's client and the real mover CLI."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from mover_lab import Lab  # noqa: E402

MiB = 1 << 20
GRAIN = 64 * 1024
DISKS = [  # key, capacity, provisioning, source of real files
    (2000, 1024 * MiB, "thin", ["/usr/share/doc", "/usr/lib/python3.11"]),
    (2001, 256 * MiB, "eagerZeroedThick", ["/usr/include"]),
]


def run(*cmd: str | Path, env: dict[str, str] | None = None) -> str:
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True,
                          env=env).stdout


def make_image(path: Path, size: int, sources: list[str], work: Path) -> None:
    """An ext4 file system of ``size`` bytes holding copies of real directories."""
    tree = work / f"tree-{path.stem}"
    for src in sources:
        if Path(src).is_dir():
            shutil.copytree(src, tree / Path(src).name, symlinks=True, dirs_exist_ok=True)
    run("mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", "-d", tree, path, f"{size // 1024}k")
    shutil.rmtree(tree)


def guest_changes(image: Path, work: Path) -> Path:
    """The same file system after a guest wrote, replaced and deleted files (via debugfs)."""
    changed = work / f"{image.stem}-changed.img"
    shutil.copyfile(image, changed)
    cmds = work / "debugfs.cmds"
    lines = ["mkdir /demo-changes"]
    for i, src in enumerate(sorted(Path("/usr/share/common-licenses").glob("*"))[:12]):
        lines.append(f"write {src} /demo-changes/file{i}")
    cmds.write_text("\n".join(lines) + "\n")
    run("debugfs", "-w", "-f", cmds, changed)
    return changed


def write_differences(lab: Lab, vm: str, key: int, old: Path, new: Path) -> int:
    """Write into the live disk the 64 KiB pieces that differ: what the guest changed."""
    written = 0
    with old.open("rb") as a, new.open("rb") as b:
        offset = 0
        while piece := b.read(GRAIN):
            if a.read(GRAIN) != piece:
                lab.write(vm, key, offset, piece)
                written += len(piece)
            offset += len(piece)
    return written


def mover(lab: Lab, *args: str | Path) -> dict[str, Any]:
    env = {**os.environ, "MOVER_PASSWORD": lab.password}
    out = run(sys.executable, "-m", "mover.cli", *args, "--json", env=env)
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mover-demo-"))
    lab = Lab.start(work / "lab")
    try:
        return demo(lab, work)
    finally:
        lab.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def demo(lab: Lab, work: Path) -> int:
    lab.configure(snapshotDigests=True)
    vm, repo = "demo-vm", work / "repo"
    print(f"lab at {lab.url}; building ext4 images of real files ...", flush=True)
    lab.create_vm(vm, [{"capacity": cap, "type": kind} for _, cap, kind, _ in DISKS])
    images = {}
    for key, cap, _, sources in DISKS:
        images[key] = work / f"disk{key}.img"
        make_image(images[key], cap, sources, work)
        lab.load(vm, key, images[key])
    server = ["--server", lab.url, "--user", lab.user, "--vm", vm, "--repo", repo]
    results = [mover(lab, "backup", *server)]
    changed_bytes = {}
    for key, *_ in DISKS:
        changed_bytes[key] = write_differences(lab, vm, key, images[key],
                                               guest_changes(images[key], work))
    results.append(mover(lab, "backup", *server))

    print(f"\n{'backup':<24} {'disk':>5} {'mode':<12} {'changed':>9} {'read':>9} "
          f"{'stored':>9} {'secs':>5}  restore")
    ok = True
    for result in results:
        frozen = next(s for s in lab.snapshot_history(vm)
                      if s["name"] == result["snapshot"]["name"])
        for disk in result["disks"]:
            out = work / "restore.img"
            mover(lab, "restore", "--repo", repo, "--backup", result["backup_id"], "--disk",
                  str(disk["key"]), "--output", out, "--force")
            expected = next(d["sha256"] for d in frozen["disks"] if d["key"] == disk["key"])
            same = sha256(out) == expected
            ok &= same
            out.unlink()
            print(f"{result['backup_id']:<24} {disk['key']:>5} {disk['mode']:<12} "
                  f"{disk['changed_bytes'] / MiB:>7.1f}Mi {disk['bytes_read'] / MiB:>7.1f}Mi "
                  f"{disk['bytes_stored'] / MiB:>7.1f}Mi {disk['seconds']:>5.1f}  "
                  f"{'identical (sha256)' if same else 'DIFFERENT'}")
    print(f"\nguest changed {sum(changed_bytes.values()) / MiB:.1f} MiB between the backups; "
          f"repository: {sum(f.stat().st_size for f in repo.rglob('*') if f.is_file()) / MiB:.1f}"
          f" MiB for {sum(cap for _, cap, _, _ in DISKS) // MiB} MiB of disks")

    # Keeping the repository: forget the full (the incremental is a synthetic full), collect
    # its garbage, verify every chunk, and restore what is left once more.
    print("\n$ mover forget --keep-last 1 && mover gc --repack-threshold 0 && mover verify "
          "--read-data")
    for args in (("forget", "--repo", repo, "--keep-last", "1"),
                 ("gc", "--repo", repo, "--repack-threshold", "0"),
                 ("verify", "--repo", repo, "--read-data")):
        print(run(sys.executable, "-m", "mover.cli", *args).rstrip())
    kept = results[-1]
    frozen = next(s for s in lab.snapshot_history(vm) if s["name"] == kept["snapshot"]["name"])
    for disk in kept["disks"]:
        out = work / "restore.img"
        mover(lab, "restore", "--repo", repo, "--backup", kept["backup_id"], "--disk",
              str(disk["key"]), "--output", out, "--force")
        same = sha256(out) == next(d["sha256"] for d in frozen["disks"]
                                   if d["key"] == disk["key"])
        ok &= same
        out.unlink()
        print(f"restore {kept['backup_id']} disk {disk['key']} after gc: "
              f"{'identical (sha256)' if same else 'DIFFERENT'}")
    print("demo OK" if ok else "demo FAILED: a restore differs from its snapshot")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
