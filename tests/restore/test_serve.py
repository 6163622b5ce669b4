"""``mover serve`` with real NBD clients (libnbd's nbdcopy and nbdinfo, qemu-img, qemu-io,
nbdfuse) against a backup of an ext4 file system: identical bytes, holes where the backup
has zero blocks, writes refused, several readers at once, damaged chunks refused, a file
copied out of the guest file system without restoring the disk, a clean stop on SIGTERM."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mover.index import FixedIndex
from mover.repo import Repository

from .backups import KEY, write_backup

BS = 64 * 1024
BACKUP = "20261201T000000Z-aaaaa1"
GUEST_FILE = b"the one file a user needs back\n" * 1000


@pytest.fixture(scope="module")
def ext4_backup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A repository holding one backup of a 64 MiB disk with an ext4 file system in it."""
    tmp = tmp_path_factory.mktemp("serve")
    (tmp / "root" / "etc").mkdir(parents=True)
    (tmp / "root" / "etc" / "report.txt").write_bytes(GUEST_FILE)
    disk = tmp / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(64 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tmp / "root"), str(disk)], check=True)
    image = disk.read_bytes()
    repo = tmp / "repo"
    write_backup(Repository.open(repo, block_size=BS), BACKUP, image, BS)
    return repo, image


class Export:
    def __init__(self, proc: subprocess.Popen[str], uri: str, socket: Path) -> None:
        self.proc, self.uri, self.socket = proc, uri, socket


def serve(repo: Path | str, socket: Path, env: dict[str, str] | None = None) -> Export:
    proc = subprocess.Popen([sys.executable, "-m", "mover.cli", "serve", "--repo", str(repo),
                             "--backup", BACKUP, "--disk", str(KEY), "--socket", str(socket),
                             "--json"], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"mover serve exited with {proc.wait()}"
    ready = json.loads(line)
    assert ready["status"] == "serving"
    return Export(proc, ready["uri"], socket)


@pytest.fixture
def export(ext4_backup: tuple[Path, bytes], tmp_path: Path) -> Iterator[Export]:
    running = serve(ext4_backup[0], tmp_path / "nbd.sock")
    yield running
    if running.proc.poll() is None:
        running.proc.send_signal(signal.SIGTERM)
        running.proc.wait(30)


def nbdcopy_sha256(uri: str, out: Path) -> str:
    subprocess.run(["nbdcopy", uri, str(out)], check=True, timeout=120)
    return hashlib.sha256(out.read_bytes()).hexdigest()


def test_nbdcopy_reads_the_identical_image(export: Export, ext4_backup: tuple[Path, bytes],
                                           tmp_path: Path) -> None:
    assert nbdcopy_sha256(export.uri, tmp_path / "copy.img") == hashlib.sha256(
        ext4_backup[1]).hexdigest()


def test_qemu_img_sees_the_same_disk(export: Export, ext4_backup: tuple[Path, bytes],
                                     tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(ext4_backup[1])
    compare = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", export.uri,
                              str(image)], capture_output=True, text=True, timeout=120,
                             check=False)
    assert compare.returncode == 0 and "identical" in compare.stdout.lower(), compare.stderr
    image.write_bytes(ext4_backup[1][:-1] + b"\x01")        # one byte differs: it must see it
    compare = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", export.uri,
                              str(image)], capture_output=True, text=True, timeout=120,
                             check=False)
    assert compare.returncode == 1


def test_several_readers_at_once_read_the_same_bytes(
        export: Export, ext4_backup: tuple[Path, bytes], tmp_path: Path) -> None:
    with ThreadPoolExecutor(4) as pool:
        digests = list(pool.map(lambda n: nbdcopy_sha256(export.uri, tmp_path / f"{n}.img"),
                                range(4)))
    assert set(digests) == {hashlib.sha256(ext4_backup[1]).hexdigest()}


def test_nbdinfo_map_shows_the_zero_blocks_as_holes(
        export: Export, ext4_backup: tuple[Path, bytes]) -> None:
    run = subprocess.run(["nbdinfo", "--map", "--json", export.uri], capture_output=True,
                         text=True, check=True, timeout=60)
    image = ext4_backup[1]
    zero_blocks = {b for b in range(len(image) // BS)
                   if image[b * BS : (b + 1) * BS].count(0) == BS}
    holes = set()
    for extent in json.loads(run.stdout):
        assert extent["offset"] % BS == 0 and extent["length"] % BS == 0
        blocks = range(extent["offset"] // BS, (extent["offset"] + extent["length"]) // BS)
        if extent["type"] == 3:             # hole, zero
            holes.update(blocks)
        else:
            assert extent["type"] == 0 and not zero_blocks.intersection(blocks)
    assert holes == zero_blocks and len(holes) > len(image) // BS // 2


def test_a_write_is_refused_and_changes_nothing(
        export: Export, ext4_backup: tuple[Path, bytes], tmp_path: Path) -> None:
    info = subprocess.run(["nbdinfo", "--json", export.uri], capture_output=True, text=True,
                          check=True, timeout=60)
    assert json.loads(info.stdout)["exports"][0]["is_read_only"] is True
    source = tmp_path / "new.img"
    source.write_bytes(b"\x55" * BS)
    copy = subprocess.run(["nbdcopy", str(source), export.uri], capture_output=True,
                          text=True, timeout=60, check=False)
    assert copy.returncode != 0 and "read-only" in copy.stderr
    rw = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x55 0 64k", export.uri],
                        capture_output=True, text=True, timeout=60, check=False)
    assert rw.returncode != 0 and "permission denied" in rw.stderr.lower()
    assert nbdcopy_sha256(export.uri, tmp_path / "copy.img") == hashlib.sha256(
        ext4_backup[1]).hexdigest()


@pytest.mark.skipif(not Path("/dev/fuse").exists() or shutil.which("nbdfuse") is None,
                    reason="needs FUSE and nbdfuse")
def test_one_file_is_copied_out_of_the_guest_file_system(export: Export,
                                                        tmp_path: Path) -> None:
    mount = tmp_path / "mnt"
    mount.mkdir()
    fuse = subprocess.Popen(["nbdfuse", "--readonly", str(mount), export.uri])
    try:
        for _ in range(100):        # nbdfuse mounts in the background
            if (mount / "nbd").exists():
                break
            subprocess.run(["sleep", "0.1"], check=True)
        out = tmp_path / "report.txt"
        subprocess.run(["debugfs", "-R", f"dump /etc/report.txt {out}", str(mount / "nbd")],
                       check=True, capture_output=True, timeout=60)
        assert out.read_bytes() == GUEST_FILE
    finally:
        subprocess.run(["fusermount3", "-u", str(mount)], check=False)
        fuse.wait(30)


def test_a_damaged_chunk_is_answered_with_an_error(ext4_backup: tuple[Path, bytes],
                                                   tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ext4_backup[0], repo)
    record = Repository.open(repo, create=False).get_backup(BACKUP)
    index: FixedIndex = Repository.open(repo, create=False).read_index(record, KEY)
    packs = sorted(p for p in (repo / "packs").rglob("*") if p.is_file())
    for pack in packs:                  # one flipped byte in the middle of every pack
        data = bytearray(pack.read_bytes())
        data[len(data) // 2] ^= 0xFF
        pack.write_bytes(bytes(data))
    running = serve(repo, tmp_path / "nbd.sock")
    try:
        run = subprocess.run(["nbdcopy", running.uri, str(tmp_path / "copy.img")],
                             capture_output=True, text=True, timeout=120, check=False)
        assert run.returncode != 0 and "Input/output error" in run.stderr
        assert len(index) > index.zero_blocks()
    finally:
        running.proc.send_signal(signal.SIGTERM)
        running.proc.wait(30)


def test_sigterm_stops_the_export_and_removes_the_socket(export: Export) -> None:
    os.kill(export.proc.pid, signal.SIGTERM)
    assert export.proc.wait(30) == 0
    assert export.proc.stdout is not None
    result = json.loads(export.proc.stdout.read().splitlines()[-1])
    assert (result["status"], result["stopped_by"]) == ("stopped", "SIGTERM")
    assert not export.socket.exists()
    run = subprocess.run(["nbdinfo", export.uri], capture_output=True, timeout=30, check=False)
    assert run.returncode != 0


def test_an_unknown_disk_fails_before_serving(ext4_backup: tuple[Path, bytes],
                                             tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "mover.cli", "serve", "--repo",
                          str(ext4_backup[0]), "--backup", BACKUP, "--disk", "2001",
                          "--socket", str(tmp_path / "s")], capture_output=True, text=True,
                         timeout=60, check=False)
    assert run.returncode == 5 and "has no disk 2001" in run.stderr


def test_nbdkit_gets_no_secret_from_the_environment(
        ext4_backup: tuple[Path, bytes], tmp_path: Path) -> None:
    running = serve(ext4_backup[0], tmp_path / "nbd.sock",
                    {**os.environ, "MOVER_PASSWORD": "hunter2-secret", "AWS_SECRET": "x"})
    try:
        children = Path(f"/proc/{running.proc.pid}/task/{running.proc.pid}/children")
        [nbdkit] = children.read_text().split()
        environ = dict(v.split(b"=", 1) for v in
                       Path(f"/proc/{nbdkit}/environ").read_bytes().split(b"\0") if v)
        assert {b"MOVER_PASSWORD", b"AWS_SECRET"} & environ.keys() == set()
        assert b"PYTHONPATH" in environ
        assert nbdcopy_sha256(running.uri, tmp_path / "copy.img") == hashlib.sha256(
            ext4_backup[1]).hexdigest()             # and the plugin still works without them
    finally:
        running.proc.send_signal(signal.SIGTERM)
        running.proc.wait(30)


def test_a_backup_in_an_s3_repository_is_served(
        s3_env: object, s3_bucket: str, ext4_backup: tuple[Path, bytes], tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    """The plugin opens the repository in nbdkit's process: for an s3:// one it gets the
    AWS SDK's variables (and only for such a one, see the test above)."""
    url = f"s3://{s3_bucket}/serve-{request.node.name[-20:]}-{os.getpid()}"
    write_backup(Repository.open(url, block_size=BS), BACKUP, ext4_backup[1], BS)
    running = serve(url, tmp_path / "nbd.sock", dict(os.environ))
    try:
        assert nbdcopy_sha256(running.uri, tmp_path / "copy.img") == hashlib.sha256(
            ext4_backup[1]).hexdigest()
    finally:
        running.proc.send_signal(signal.SIGTERM)
        running.proc.wait(30)
