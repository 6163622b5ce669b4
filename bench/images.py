"""Disk images that look like real disks, made from what is on the machine, and change sets.

- *realistic*: an ext4 file system built by ``mkfs.ext4 -d`` from real directories (parts of
  ``/usr``), placed at 1 MiB like a partition inside a thin disk, the rest unallocated;
- *random*: every byte random (incompressible, no duplicates);
- *zero-heavy*: an eager-zeroed-thick disk (CBT reports all of it) with 2% real data.

A change set is a list of scattered 64 KiB to 1 MiB writes of real file bytes covering a
given fraction of the disk; it is applied both to the lab's disk (guest writes) and to the
local image file (which the peers back up).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20
GiB = 1 << 30
GRAIN = 64 * 1024
PART_OFFSET = MiB
SOURCE_ROOTS = ["/usr/lib", "/usr/share", "/usr/bin", "/usr/include", "/usr/sbin",
                "/usr/libexec", "/usr/local", "/usr/src", "/opt", "/var/lib"]


def data_extents(path: Path) -> list[tuple[int, int]]:
    """The (start, end) byte ranges of ``path`` that hold data (SEEK_DATA/SEEK_HOLE)."""
    out: list[tuple[int, int]] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            out.append((start, end))
            offset = end
    finally:
        os.close(fd)
    return out


def _du(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            total += st.st_blocks * 512
    return total


def pick_sources(target: int) -> tuple[list[Path], int]:
    """Real directories (first-level entries of SOURCE_ROOTS, in name order) summing to
    about ``target`` bytes, and their size."""
    picked: list[Path] = []
    size = 0
    for root in SOURCE_ROOTS:
        base = Path(root)
        if not base.is_dir():
            continue
        for entry in sorted(base.iterdir()):
            if size >= target:
                return picked, size
            if entry.is_symlink() or not entry.is_dir():
                continue
            picked.append(entry)
            size += _du(entry)
    return picked, size


def _tree(sources: list[Path], tree: Path) -> None:
    """A tree of the sources: hard links when possible (no copy), else copies."""
    tree.mkdir(parents=True)
    for src in sources:
        dest = tree / f"{src.parent.name}-{src.name}"
        linked = subprocess.run(["cp", "-al", str(src), str(dest)], capture_output=True)
        if linked.returncode != 0:
            shutil.rmtree(dest, ignore_errors=True)
            subprocess.run(["cp", "-a", str(src), str(dest)], check=False, capture_output=True)


def realistic(path: Path, capacity: int, fill: float, work: Path) -> dict[str, object]:
    """An ext4 file system of real files (about ``fill`` x capacity of them) in 3/4 of a thin
    disk image of ``capacity`` bytes, at 1 MiB; the rest of the disk is unallocated."""
    sources, size = pick_sources(int(capacity * fill))
    tree = work / f"tree-{path.stem}"
    _tree(sources, tree)
    fs_bytes = (capacity - PART_OFFSET) * 3 // 4 // MiB * MiB
    path.unlink(missing_ok=True)
    with path.open("wb") as f:
        f.truncate(capacity)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", f"offset={PART_OFFSET},root_owner=0:0",
                    "-d", str(tree), str(path), f"{fs_bytes // 1024}k"], check=True)
    shutil.rmtree(tree, ignore_errors=True)
    with path.open("r+b") as f:
        f.truncate(capacity)  # mkfs may have grown it to offset + fs size only
    allocated = sum(e - s for s, e in data_extents(path))
    return {"kind": "realistic", "capacity": capacity, "allocated": allocated,
            "sources": [str(s) for s in sources], "source_bytes": size, "fs_bytes": fs_bytes}


def all_random(path: Path, capacity: int) -> dict[str, object]:
    """Every byte random: AES-CTR keystream from openssl (fast), else os.urandom."""
    path.unlink(missing_ok=True)
    if shutil.which("openssl"):
        with path.open("wb") as out:
            zeros = subprocess.Popen(["head", "-c", str(capacity), "/dev/zero"],
                                     stdout=subprocess.PIPE)
            subprocess.run(["openssl", "enc", "-aes-128-ctr", "-nosalt", "-pbkdf2", "-pass",
                            f"pass:{random.random()}"], stdin=zeros.stdout, stdout=out,
                           check=True)
            zeros.wait()
    else:
        with path.open("wb") as out:
            for _ in range(0, capacity, 16 * MiB):
                out.write(os.urandom(16 * MiB))
    with path.open("r+b") as f:
        f.truncate(capacity)
    return {"kind": "random", "capacity": capacity, "allocated": capacity}


def zero_heavy(path: Path, capacity: int, source: Path, fraction: float = 0.02,
               seed: int = 7) -> dict[str, object]:
    """A sparse image with ``fraction`` of real data (1 MiB pieces of ``source``'s data)
    scattered over zeros; backed up as an eager-zeroed-thick disk, every byte is read."""
    rng = random.Random(seed)
    pieces = _data_pieces(source)
    path.unlink(missing_ok=True)
    with path.open("wb") as f:
        f.truncate(capacity)
    written = 0
    with source.open("rb") as src, path.open("r+b") as out:
        while written < capacity * fraction:
            at = rng.randrange(0, capacity // MiB) * MiB
            out.seek(at)
            src.seek(rng.choice(pieces))
            out.write(src.read(MiB))
            written += MiB
    return {"kind": "zero-heavy", "capacity": capacity, "allocated": capacity,
            "data_bytes": written}


def _data_pieces(image: Path) -> list[int]:
    """64 KiB-aligned offsets of ``image`` inside its data regions (with 1 MiB after them)."""
    out: list[int] = []
    for start, end in data_extents(image):
        first = -(-start // GRAIN) * GRAIN
        out.extend(range(first, end - MiB, GRAIN))
    return out or [0]


@dataclass(frozen=True)
class Write:
    offset: int
    data: bytes


def change_set(image: Path, capacity: int, fraction: float, seed: int) -> list[Write]:
    """Scattered writes of 64 KiB..1 MiB (64 KiB-aligned) covering ``fraction`` of the disk
    (counting overlaps once or more; the changed area is computed from the writes), filled
    with bytes of real files taken from the image's own data regions."""
    rng = random.Random(seed)
    pieces = _data_pieces(image)
    target = int(capacity * fraction)
    writes: list[Write] = []
    total = 0
    with image.open("rb") as src:
        while total < target:
            length = rng.randint(1, 16) * GRAIN
            offset = rng.randrange(0, (capacity - length) // GRAIN) * GRAIN
            src.seek(rng.choice(pieces))
            data = src.read(length)
            if data.count(0) == len(data):
                data = rng.randbytes(length)
            writes.append(Write(offset, data))
            total += length
    return writes


def changed_extents(writes: list[Write]) -> list[tuple[int, int]]:
    """The union of the writes as sorted (start, end) ranges."""
    spans = sorted((w.offset, w.offset + len(w.data)) for w in writes)
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def apply_local(image: Path, writes: list[Write]) -> None:
    fd = os.open(image, os.O_WRONLY)
    try:
        for w in writes:
            os.pwrite(fd, w.data, w.offset)
    finally:
        os.close(fd)
