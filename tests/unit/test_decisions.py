"""Full or incremental, change IDs, and the --server address."""

from __future__ import annotations

import pytest

from mover.changeid import ChangeId, incremental_base
from mover.errors import UsageError
from mover.jobs.modes import decide
from mover.repo import BackupRecord, DiskRecord
from mover.vsphere.address import ServerAddress, TlsPolicy
from mover.vsphere.disks import DiskInfo

EPOCH = "52 de c0 d9 3e 4d 58 a8-62 9a 1c 61 7e 2b 83 58"
OTHER = "52 00 c0 d9 3e 4d 58 a8-62 9a 1c 61 7e 2b 83 58"
MiB = 1 << 20


def test_change_id_parses_vmwares_form() -> None:
    cid = ChangeId.parse(f"{EPOCH}/17")
    assert cid is not None and cid.sequence == 17 and str(cid) == f"{EPOCH}/17"
    assert ChangeId.parse("") is None
    assert ChangeId.parse("*") is None
    assert ChangeId.parse(f"{EPOCH}/x") is None


@pytest.mark.parametrize(
    ("previous", "current", "sound", "why"),
    [
        pytest.param(f"{EPOCH}/3", f"{EPOCH}/5", True, "changes since", id="same-epoch"),
        pytest.param(f"{EPOCH}/3", f"{OTHER}/5", False, "reset", id="new-epoch"),
        pytest.param(f"{EPOCH}/3", "", False, "no change ID", id="cbt-off-now"),
        pytest.param("", f"{EPOCH}/5", False, "previous backup", id="no-previous-id"),
        pytest.param(f"{EPOCH}/9", f"{EPOCH}/5", False, "newer", id="previous-newer"),
    ],
)
def test_incremental_base(previous: str, current: str, sound: bool, why: str) -> None:
    ok, reason = incremental_base(previous, current)
    assert ok is sound and why in reason


def disk(**over: object) -> DiskInfo:
    fields = dict(key=2000, label="Hard disk 1", uuid="u1", capacity=64 * MiB,
                  file="[ds] vm/vm.vmdk", change_id=f"{EPOCH}/5", thin=True,
                  eager_zeroed=False, is_delta=False, independent=False)
    fields.update(over)
    return DiskInfo(**fields)  # type: ignore[arg-type]


def record(**over: object) -> BackupRecord:
    d = dict(key=2000, label="Hard disk 1", uuid="u1", capacity=64 * MiB, file="[ds] vm/vm.vmdk",
             change_id=f"{EPOCH}/3", mode="full", reason="", block_size=MiB, changed_bytes=0,
             bytes_read=0, bytes_stored=0, blocks=64, zero_blocks=0, new_chunks=0,
             dedup_chunks=0, seconds=0.0)
    d.update(over)
    return BackupRecord(id="B1", vm_name="vm", vm_instance_uuid="i", vm_moref="vm-1",
                        created="2026-11-25T00:00:00Z", finished="2026-11-25T00:00:00Z",
                        parent=None, snapshot={}, disks=[DiskRecord(**d)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("current", "parent", "full", "mode", "why"),
    [
        pytest.param(disk(), record(), False, "incremental", "changes since", id="incremental"),
        pytest.param(disk(), None, False, "full", "no previous backup", id="first-backup"),
        pytest.param(disk(), record(), True, "full", "--full", id="forced"),
        pytest.param(disk(key=2001), record(), False, "full", "new", id="new-disk"),
        pytest.param(disk(uuid="u2"), record(), False, "full", "replaced", id="new-disk-uuid"),
        pytest.param(disk(capacity=128 * MiB), record(), False, "full", "capacity",
                     id="capacity-changed"),
        pytest.param(disk(change_id=f"{OTHER}/1"), record(), False, "full", "reset",
                     id="cbt-reset"),
        pytest.param(disk(), record(block_size=4 * MiB), False, "full", "block size",
                     id="block-size-changed"),
    ],
)
def test_decide(current: DiskInfo, parent: BackupRecord | None, full: bool, mode: str,
                why: str) -> None:
    decision = decide(current, parent, full, MiB)
    assert decision.mode == mode and why in decision.reason
    if mode == "incremental":
        assert decision.since == f"{EPOCH}/3" and decision.parent is not None
    else:
        assert decision.since == "*" and decision.parent is None


def test_a_disk_without_change_id_is_read_whole() -> None:
    assert decide(disk(change_id=""), None, False, MiB).since is None


@pytest.mark.parametrize(
    ("text", "url"),
    [
        pytest.param("vc.example", "https://vc.example:443/sdk", id="bare-host"),
        pytest.param("http://127.0.0.1:8989/sdk", "http://127.0.0.1:8989/sdk", id="lab-url"),
        pytest.param("https://esx1:8443", "https://esx1:8443/sdk", id="https-port"),
        pytest.param("https://[::1]/sdk", "https://[::1]:443/sdk", id="ipv6"),
    ],
)
def test_server_address(text: str, url: str) -> None:
    assert str(ServerAddress.parse(text)) == url


@pytest.mark.parametrize("text", ["", "ftp://x", "https://:80"])
def test_bad_server_address(text: str) -> None:
    with pytest.raises(UsageError):
        ServerAddress.parse(text)


def test_thumbprint_is_sha256_or_sha1() -> None:
    with pytest.raises(UsageError, match="SHA-256"):
        TlsPolicy(thumbprint="AB:CD")
    with pytest.raises(UsageError, match="SHA-1"):
        TlsPolicy(thumbprint="ab" * 21)
    strong = TlsPolicy(thumbprint=":".join(["ab"] * 32))
    assert strong.thumbprint_bytes == b"\xab" * 32 and not strong.weak
    weak = TlsPolicy(thumbprint=":".join(["cd"] * 20))
    assert weak.thumbprint_bytes == b"\xcd" * 20 and weak.algorithm == "sha1" and weak.weak
    assert not TlsPolicy().weak
