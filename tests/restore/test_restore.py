"""The restore job onto each target (mover.pipeline.targets) from a real directory
repository: bytes, counts, what a failure leaves behind, and what is refused."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mover.errors import IntegrityError, RepositoryError, UsageError
from mover.jobs.restore import run_restore
from mover.jobs.settings import RestoreSettings
from mover.pipeline.targets import InPlace
from mover.repo import Repository

from .backups import KEY, write_backup

BS = 4096
BLOCKS = 24
CAPACITY = BLOCKS * BS - 1000          # the last block is short, as on a real odd-sized disk


def changed(image: bytes, rng: random.Random, blocks: list[int]) -> bytes:
    out = bytearray(image)
    for block in blocks:
        end = min(len(out), (block + 1) * BS)
        out[block * BS : end] = rng.randbytes(end - block * BS)
    return bytes(out)


@pytest.fixture
def repo_with_history(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """Backups b1 -> b2 -> b3 of one disk; b3 changes a few blocks, zeroes one, fills a hole."""
    rng = random.Random(7)
    b1 = bytearray(changed(bytes(CAPACITY), rng, [0, 1, 2, 5, 8, 13, 21, BLOCKS - 1]))
    b2 = changed(bytes(b1), rng, [2, 3])
    b3 = bytearray(changed(b2, rng, [8, 9, BLOCKS - 1]))
    b3[13 * BS : 14 * BS] = bytes(BS)                      # a block that became zero
    images = {"20261201T000000Z-aaaaa1": bytes(b1), "20261202T000000Z-aaaaa2": b2,
              "20261203T000000Z-aaaaa3": bytes(b3)}
    path = tmp_path / "repo"
    repo = Repository.open(path, block_size=BS)
    for backup_id, image in images.items():
        write_backup(repo, backup_id, image, BS)
    return path, images


def settings(repo: Path, backup_id: str, output: Path | None, **kw: object) -> RestoreSettings:
    return RestoreSettings(repo, backup_id, KEY, output, **kw)  # type: ignore[arg-type]


def test_new_file_is_the_image_and_leaves_no_temporary(
        repo_with_history: tuple[Path, dict[str, bytes]], tmp_path: Path) -> None:
    repo, images = repo_with_history
    out = tmp_path / "out" / "disk.img"
    out.parent.mkdir()
    for backup_id, image in images.items():
        result = run_restore(settings(repo, backup_id, out, force=True))
        assert out.read_bytes() == image
        assert result.blocks_written == BLOCKS
        assert os.listdir(out.parent) == ["disk.img"]


def test_an_existing_file_is_refused_without_force(
        repo_with_history: tuple[Path, dict[str, bytes]], tmp_path: Path) -> None:
    repo, images = repo_with_history
    out = tmp_path / "disk.img"
    out.write_bytes(b"precious")
    with pytest.raises(UsageError, match="refuses to overwrite"):
        run_restore(settings(repo, next(iter(images)), out))
    assert out.read_bytes() == b"precious"


def test_differential_writes_only_the_differing_blocks(
        repo_with_history: tuple[Path, dict[str, bytes]], tmp_path: Path) -> None:
    repo, images = repo_with_history
    (b1, i1), _, (b3, i3) = images.items()
    out = tmp_path / "disk.img"
    run_restore(settings(repo, b1, out))
    differing = [b for b in range(BLOCKS) if i1[b * BS : (b + 1) * BS] != i3[b * BS : (b + 1) * BS]]
    # A mark in a block both backups share: a block the restore rewrote would lose it.
    shared = next(b for b in range(BLOCKS) if b not in differing and i1[b * BS] != 0)
    with open(out, "r+b") as f:
        f.seek(shared * BS)
        f.write(bytes([i1[shared * BS] ^ 0xFF]))
    result = run_restore(settings(repo, b3, out, base_id=b1))
    assert result.blocks_written == len(differing) == 6
    assert result.bytes_written == sum(min(BS, CAPACITY - b * BS) for b in differing)
    data = bytearray(out.read_bytes())
    assert data[shared * BS] == i1[shared * BS] ^ 0xFF    # untouched: not written
    data[shared * BS] = i1[shared * BS]
    assert bytes(data) == i3


def test_differential_rolls_back_too_and_a_second_run_writes_nothing(
        repo_with_history: tuple[Path, dict[str, bytes]], tmp_path: Path) -> None:
    repo, images = repo_with_history
    (b1, i1), _, (b3, _) = images.items()
    out = tmp_path / "disk.img"
    run_restore(settings(repo, b3, out))
    run_restore(settings(repo, b1, out, base_id=b3, verify_base=8))
    assert out.read_bytes() == i1
    again = run_restore(settings(repo, b1, out, base_id=b1))
    assert (again.blocks_written, again.bytes_written) == (0, 0)


def test_verify_base_refuses_a_target_that_holds_another_backup(
        repo_with_history: tuple[Path, dict[str, bytes]], tmp_path: Path) -> None:
    repo, images = repo_with_history
    (b1, _), (b2, _), (b3, i3) = images.items()
    out = tmp_path / "disk.img"
    run_restore(settings(repo, b3, out))
    # b1 -> b2 rewrites blocks 2 and 3 only; the target differs from b1 in blocks it keeps
    with pytest.raises(UsageError, match=r"does not hold backup .* nothing was written"):
        run_restore(settings(repo, b2, out, base_id=b1, verify_base=BLOCKS))
    assert out.read_bytes() == i3


@pytest.mark.parametrize("size", [CAPACITY - 1, CAPACITY + BS], ids=["short", "long"])
def test_differential_refuses_a_target_of_another_size(
        repo_with_history: tuple[Path, dict[str, bytes]], tmp_path: Path, size: int) -> None:
    repo, images = repo_with_history
    (b1, _), _, (b3, _) = images.items()
    out = tmp_path / "disk.img"
    out.write_bytes(b"x" * size)
    with pytest.raises(UsageError, match="not an image of this disk"):
        run_restore(settings(repo, b3, out, base_id=b1))
    assert out.read_bytes() == b"x" * size


def test_differential_refuses_a_base_of_another_vm(
        repo_with_history: tuple[Path, dict[str, bytes]], tmp_path: Path) -> None:
    repo, images = repo_with_history
    other = "20261204T000000Z-bbbbb1"
    write_backup(Repository.open(repo, create=False), other, bytes(CAPACITY), BS,
                 vm="vm-uuid-2")
    out = tmp_path / "disk.img"
    run_restore(settings(repo, next(iter(images)), out))
    with pytest.raises(UsageError, match="same VM"):
        run_restore(settings(repo, next(iter(images)), out, base_id=other))


def _fail_after(monkeypatch: pytest.MonkeyPatch, reads: int) -> None:
    real = Repository.read_block
    count = [0]

    def read_block(self: Repository, digest: bytes) -> bytes:
        count[0] += 1
        if count[0] > reads:
            raise IntegrityError(f"chunk {digest.hex()} is damaged (injected)")
        return real(self, digest)

    monkeypatch.setattr(Repository, "read_block", read_block)


def test_a_failing_restore_leaves_no_new_file(
        repo_with_history: tuple[Path, dict[str, bytes]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    repo, images = repo_with_history
    _fail_after(monkeypatch, 3)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(IntegrityError, match="partial image was removed"):
        run_restore(settings(repo, next(iter(images)), out / "disk.img"))
    assert os.listdir(out) == []


def test_a_failing_in_place_restore_reports_the_offset(
        repo_with_history: tuple[Path, dict[str, bytes]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    repo, images = repo_with_history
    (b1, _), _, (b3, i3) = images.items()
    out = tmp_path / "disk.img"
    run_restore(settings(repo, b1, out))
    _fail_after(monkeypatch, 2)
    with pytest.raises(IntegrityError, match="PARTIALLY WRITTEN") as caught:
        run_restore(settings(repo, b3, out, base_id=b1, workers=1))
    below = caught.value.fields["partial_offset"]
    assert f"below offset {below}" in str(caught.value)
    data = out.read_bytes()
    assert 0 < below < CAPACITY and data[:below] == i3[:below]
    monkeypatch.undo()                      # the same restore again completes it
    run_restore(settings(repo, b3, out, base_id=b1))
    assert out.read_bytes() == i3


def test_stdout_is_every_byte_of_the_image(
        repo_with_history: tuple[Path, dict[str, bytes]]) -> None:
    repo, images = repo_with_history
    backup_id, image = list(images.items())[-1]
    run = subprocess.run([sys.executable, "-m", "mover.cli", "restore", "--repo", str(repo),
                          "--backup", backup_id, "--disk", str(KEY), "--output", "-",
                          "--json"], capture_output=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert hashlib.sha256(run.stdout).hexdigest() == hashlib.sha256(image).hexdigest()
    assert b'"status": "restored"' in run.stderr


def test_a_directory_is_refused_as_output(
        repo_with_history: tuple[Path, dict[str, bytes]], tmp_path: Path) -> None:
    repo, images = repo_with_history
    with pytest.raises(UsageError, match="is a directory"):
        run_restore(settings(repo, next(iter(images)), tmp_path, force=True))


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _symlink_to_file(path: Path) -> Path:
    path.with_name("real.img").write_bytes(b"precious")
    path.symlink_to(path.with_name("real.img"))
    return path


def _char_device(path: Path) -> Path:
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))   # what /dev/null is
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")
    return path


@pytest.mark.parametrize("make", [_fifo, _symlink_to_file, _char_device],
                         ids=["fifo", "symlink", "char-device"])
def test_force_replaces_only_a_regular_file(
        repo_with_history: tuple[Path, dict[str, bytes]], tmp_path: Path,
        make: object) -> None:
    repo, images = repo_with_history
    out = make(tmp_path / "out")  # type: ignore[operator]
    before = os.lstat(out)
    with pytest.raises(UsageError, match="not a regular file"):
        run_restore(settings(repo, next(iter(images)), out, force=True))
    after = os.lstat(out)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    assert not any(n.startswith("out.mover-tmp") for n in os.listdir(out.parent))


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[Path]:
    """A real block device (a loop device over a file of the disk's size), as root."""
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip("a loop device needs root and losetup")
    backing = tmp_path / "device-backing"
    backing.write_bytes(b"\xee" * BLOCKS * BS)          # a loop device is whole sectors
    made = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True,
                          text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"losetup: {made.stderr.strip()}")
    device = Path(made.stdout.strip())
    try:
        yield device
    finally:
        subprocess.run(["losetup", "--detach", str(device)], check=False)


def _device_bytes(device: Path) -> bytes:
    with open(device, "rb") as f:
        return f.read(CAPACITY)


def test_a_full_restore_onto_a_device_needs_force(
        repo_with_history: tuple[Path, dict[str, bytes]], loop_device: Path) -> None:
    repo, images = repo_with_history
    (b1, i1), _, (b3, i3) = images.items()
    with pytest.raises(UsageError, match="--force"):
        run_restore(settings(repo, b1, loop_device))
    assert _device_bytes(loop_device) == b"\xee" * CAPACITY
    run_restore(settings(repo, b1, loop_device, force=True))
    assert _device_bytes(loop_device) == i1
    run_restore(settings(repo, b3, loop_device, base_id=b1))   # the base names what it holds
    assert _device_bytes(loop_device) == i3


def test_a_device_in_use_is_refused(
        repo_with_history: tuple[Path, dict[str, bytes]], loop_device: Path) -> None:
    repo, images = repo_with_history
    holder = os.open(loop_device, os.O_RDONLY | os.O_EXCL)   # as a mount or LVM holds it
    try:
        with pytest.raises(UsageError, match="in use"):
            run_restore(settings(repo, next(iter(images)), loop_device, force=True))
    finally:
        os.close(holder)
    assert _device_bytes(loop_device) == b"\xee" * CAPACITY


def test_a_verified_differential_stopped_half_way_is_completed_by_the_same_command(
        repo_with_history: tuple[Path, dict[str, bytes]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    repo, images = repo_with_history
    (b1, _), _, (b3, i3) = images.items()
    out = tmp_path / "disk.img"
    run_restore(settings(repo, b1, out))
    _fail_after(monkeypatch, 2)
    with pytest.raises(IntegrityError, match=f"PARTIALLY WRITTEN.*--base {b1}. again"):
        run_restore(settings(repo, b3, out, base_id=b1, workers=1, verify_base=BLOCKS))
    monkeypatch.undo()
    result = run_restore(settings(repo, b3, out, base_id=b1, verify_base=BLOCKS))
    assert out.read_bytes() == i3
    assert result.verified_blocks == BLOCKS - 6                 # every block left alone


def test_a_failing_read_of_the_target_in_the_base_check_is_a_mover_error(
        repo_with_history: tuple[Path, dict[str, bytes]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    repo, images = repo_with_history
    (b1, i1), _, (b3, _) = images.items()
    out = tmp_path / "disk.img"
    run_restore(settings(repo, b1, out))

    def read(self: InPlace, offset: int, length: int) -> bytes:   # a failing disk
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(InPlace, "read", read)
    with pytest.raises(RepositoryError, match=rf"cannot read {out} at offset \d+ .*Input/output "
                       "error.*nothing was written") as caught:
        run_restore(settings(repo, b3, out, base_id=b1, verify_base=4))
    assert caught.value.exit_code == 9
    assert out.read_bytes() == i1


def test_a_failing_rename_is_a_mover_error_and_leaves_nothing(
        repo_with_history: tuple[Path, dict[str, bytes]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    repo, images = repo_with_history

    def replace(src: object, dst: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RepositoryError, match=r"making it durable.*Input/output error"):
        run_restore(settings(repo, next(iter(images)), out / "disk.img"))
    assert os.listdir(out) == []


def test_an_output_that_appears_during_the_restore_is_kept(
        repo_with_history: tuple[Path, dict[str, bytes]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    repo, images = repo_with_history
    out = tmp_path / "disk.img"
    real = Repository.read_block

    def read_block(self: Repository, digest: bytes) -> bytes:
        if not out.exists():
            out.write_bytes(b"someone else's")
        return real(self, digest)

    monkeypatch.setattr(Repository, "read_block", read_block)
    with pytest.raises(UsageError, match="appeared while the restore wrote"):
        run_restore(settings(repo, next(iter(images)), out))
    assert out.read_bytes() == b"someone else's"
    assert sorted(os.listdir(tmp_path)) == ["disk.img", "repo"]   # no temporary left
