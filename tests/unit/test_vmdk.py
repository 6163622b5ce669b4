"""VMDK descriptors: which file holds a disk's bytes, and which disks /folder cannot serve."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mover.vmdk import Unservable, data_file, parse

GiB = 1 << 30
SECTORS = 2 * GiB // 512


def descriptor(extent: str, create_type: str = "vmfs", parent: str | None = None) -> str:
    """A descriptor as ESXi writes it on VMFS, with ``extent`` as its extent line(s)."""
    head = "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=fffffffe\n"
    head += (f"parentCID=12345678\nparentFileNameHint=\"{parent}\"\n" if parent
             else "parentCID=ffffffff\n")
    return (f"{head}createType=\"{create_type}\"\n\n# Extent description\n{extent}\n\n"
            "# The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\n"
            "ddb.thinProvisioned = \"1\"\nddb.uuid = \"60 00 C2 9b 6e 7f 25 3c-b0 24 b9 4e\"\n")


@pytest.mark.parametrize(
    ("extent", "path", "expected"),
    [
        pytest.param(f'RW {SECTORS} VMFS "web01-flat.vmdk"', "web01/web01.vmdk",
                     "web01/web01-flat.vmdk", id="vmfs-flat"),
        pytest.param(f'RW {SECTORS} VMFS "web01_1-flat.vmdk"', "web01/web01_3.vmdk",
                     "web01/web01_1-flat.vmdk", id="renamed-descriptor-keeps-its-flat-file"),
        pytest.param(f'RW {SECTORS} FLAT "disk-flat.vmdk" 0', "vm/disk.vmdk",
                     "vm/disk-flat.vmdk", id="monolithic-flat-offset-0"),
        pytest.param(f'RW {SECTORS} VMFS "my disk-flat.vmdk"', "my vm/my disk.vmdk",
                     "my vm/my disk-flat.vmdk", id="spaces-in-names"),
        pytest.param(f'RW {SECTORS} VMFS "d-flat.vmdk"', "d.vmdk", "d-flat.vmdk",
                     id="descriptor-at-datastore-root"),
    ],
)
def test_the_data_file_comes_from_the_extent_line(extent: str, path: str,
                                                   expected: str) -> None:
    assert data_file(descriptor(extent), path, 2 * GiB) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param(descriptor(f'RW {SECTORS} VMFSSPARSE "vm-000001-delta.vmdk"',
                                "vmfsSparse"), "VMFSSPARSE", id="vmfs-sparse-delta"),
        pytest.param(descriptor(f'RW {SECTORS} SESPARSE "vm-000001-sesparse.vmdk"',
                                "seSparse"), "SEsparse", id="sesparse"),
        pytest.param(descriptor(f'RW {SECTORS} SPARSE "vm-s001.vmdk"',
                                "twoGbMaxExtentSparse"), "hosted sparse", id="hosted-sparse"),
        pytest.param(descriptor(f'RW {SECTORS} VMFSRDM "vm-rdm.vmdk"', "vmfsRawDeviceMap"),
                     "raw device mapping", id="virtual-rdm"),
        pytest.param(descriptor(f'RW {SECTORS} VMFSPASSTHROUGHRDM "vm-rdmp.vmdk"',
                                "vmfsPassthroughRawDeviceMap"), "physical-mode",
                     id="physical-rdm"),
        pytest.param(descriptor(f'RW {SECTORS} VMFS "vsan://52b1c2d3e4f5a6b7-8c9d0e1f"'),
                     "vsan:// object", id="vsan-object"),
        pytest.param(descriptor(f'RW {SECTORS} VMFS "vvol://rfc4122.4d6f/naa.6000"'),
                     "vvol:// object", id="vvol-object"),
        pytest.param(descriptor(f'RW {SECTORS // 2} VMFS "a-flat.vmdk"\n'
                                f'RW {SECTORS // 2} VMFS "b-flat.vmdk"'), "2 extents",
                     id="two-extents"),
        pytest.param(descriptor(f'RW {SECTORS // 2} VMFS "vm-flat.vmdk"'),
                     "the disk's capacity is", id="extent-smaller-than-capacity"),
        pytest.param(descriptor(f'RW {SECTORS} FLAT "vm-flat.vmdk" 2048'), "starts 2048",
                     id="flat-extent-at-an-offset"),
        pytest.param(descriptor(f'RW {SECTORS} VMFS "/vmfs/volumes/ds2/vm-flat.vmdk"'),
                     "not a file next to the descriptor", id="absolute-extent-path"),
        pytest.param(descriptor(f'RW {SECTORS} VMFSSPARSE "vm-000002-delta.vmdk"',
                                "vmfsSparse", parent="vm-000001.vmdk"), "has a parent",
                     id="delta-with-parent"),
        pytest.param("# Disk DescriptorFile\nversion=1\n", "no extent", id="no-extent"),
        pytest.param("KDMV\x01\x00\x00\x00\x03", "binary", id="binary-sparse-header"),
    ],
)
def test_disks_folder_cannot_serve_are_refused_with_the_reason(text: str,
                                                               reason: str) -> None:
    with pytest.raises(Unservable, match=reason):
        data_file(text, "vm/vm.vmdk", 2 * GiB)


def test_the_parser_reads_fields_and_ignores_comments_and_the_ddb() -> None:
    desc = parse(descriptor(f'RW {SECTORS} VMFS "x-flat.vmdk"', "vmfs"))
    assert desc.create_type == "vmfs" and desc.parent_hint is None
    [extent] = desc.extents
    assert (extent.access, extent.sectors, extent.type, extent.file, extent.offset) == (
        "RW", SECTORS, "VMFS", "x-flat.vmdk", 0)


_names = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e,
                               exclude_characters='"/\\'), min_size=1, max_size=40)


@given(name=_names, sectors=st.integers(1, 1 << 40), folder=_names)
def test_any_flat_file_name_and_size_round_trips(name: str, sectors: int, folder: str) -> None:
    text = descriptor(f'RW {sectors} VMFS "{name}"')
    assert data_file(text, f"{folder}/d.vmdk", sectors * 512) == f"{folder}/{name}"


@given(sectors=st.integers(1, 1 << 40), capacity=st.integers(1, 1 << 49))
def test_a_size_mismatch_is_never_accepted(sectors: int, capacity: int) -> None:
    text = descriptor(f'RW {sectors} VMFS "d-flat.vmdk"')
    if sectors * 512 == capacity:
        assert data_file(text, "v/d.vmdk", capacity) == "v/d-flat.vmdk"
    else:
        with pytest.raises(Unservable, match="capacity"):
            data_file(text, "v/d.vmdk", capacity)
