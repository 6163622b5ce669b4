"""VMDK text descriptors: which file holds a disk's data, and whether ``/folder`` can serve
it as the raw disk. Pure: no I/O.

A disk's ``backing.fileName`` names its descriptor (``[ds] vm/vm.vmdk``), a small text file::

    # Disk DescriptorFile
    version=1
    CID=fffffffe
    parentCID=ffffffff
    createType="vmfs"

    # Extent description
    RW 16777216 VMFS "vm-flat.vmdk"

The extent lines (``<access> <sectors> <type> "<file>" [<offset>]``) say where the data is.
Only one extent of type ``VMFS`` or ``FLAT`` (at offset 0) in a plain file next to the
descriptor is the raw disk that an HTTP GET of that file returns. Everything else is refused
with the reason: sparse and delta formats (``VMFSSPARSE``, ``SESPARSE``, ``SPARSE``,
``VSANSPARSE``: their bytes are grains and tables, not the disk), raw device mappings
(``VMFSRDM``, ``VMFSPASSTHROUGHRDM``: the data is on a LUN, not in a file), vSAN and vVols
objects (``vsan://``, ``vvol://``: no file on ``/folder``), several extents, and an extent
whose size is not the disk's capacity.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass

SECTOR = 512
_EXTENT = re.compile(r"^(RW|RDONLY|NOACCESS)\s+(\d+)\s+([A-Z]+)(?:\s+(.*))?$")
_READABLE = {"VMFS", "FLAT"}
_WHY_NOT = {
    "VMFSSPARSE": "a VMFS sparse (delta) extent holds grains and tables, not the disk",
    "SESPARSE": "a SEsparse extent holds grains and tables, not the disk",
    "SPARSE": "a hosted sparse extent holds grains and tables, not the disk",
    "VSANSPARSE": "a vSAN sparse extent is an object, not a file",
    "VMFSRDM": "a raw device mapping keeps the data on a LUN, not in a file",
    "VMFSPASSTHROUGHRDM": "a physical-mode raw device mapping keeps the data on a LUN",
    "VMFSRAW": "a raw device extent keeps the data on a device, not in a file",
    "ZERO": "a zero extent has no data file",
}


class Unservable(ValueError):
    """The descriptor describes a disk that ``/folder`` cannot serve raw; the message says
    why (for a person, without the disk's name)."""


@dataclass(frozen=True, slots=True)
class ExtentLine:
    access: str
    sectors: int
    type: str
    file: str           # as written: relative to the descriptor, or an URI
    offset: int = 0     # sectors into the file (FLAT extents only)


@dataclass(frozen=True, slots=True)
class Descriptor:
    create_type: str
    extents: tuple[ExtentLine, ...]
    parent_hint: str | None


def parse(text: str) -> Descriptor:
    """The fields mover uses; Unservable if ``text`` is not a text descriptor."""
    if "\x00" in text:
        raise Unservable("the descriptor is binary (a monolithic sparse disk, or not a VMDK)")
    fields: dict[str, str] = {}
    extents = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _EXTENT.match(line)
        if match is not None:
            extents.append(_extent(match, line))
            continue
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"')
    if not extents:
        raise Unservable("the descriptor lists no extent")
    return Descriptor(fields.get("createType", ""), tuple(extents),
                      fields.get("parentFileNameHint"))


def _extent(match: re.Match[str], line: str) -> ExtentLine:
    access, sectors, kind, rest = match[1], int(match[2]), match[3], match[4] or ""
    try:
        words = shlex.split(rest)
    except ValueError as exc:
        raise Unservable(f"extent line {line!r} cannot be read: {exc}") from exc
    file = words[0] if words else ""
    try:
        offset = int(words[1]) if len(words) > 1 else 0
    except ValueError as exc:
        raise Unservable(f"extent line {line!r} has no numeric offset") from exc
    return ExtentLine(access, sectors, kind, file, offset)


def data_file(text: str, descriptor_path: str, capacity: int) -> str:
    """The datastore path of the file holding the raw bytes of the disk whose descriptor is
    ``text`` (at ``descriptor_path``, relative to the datastore) and whose capacity is
    ``capacity`` bytes; Unservable with the reason if there is none ``/folder`` can serve."""
    desc = parse(text)
    if desc.parent_hint:
        raise Unservable(f"the descriptor has a parent ({desc.parent_hint!r}): it is a delta "
                         "of a snapshot, not a base disk")
    if len(desc.extents) != 1:
        raise Unservable(f"the disk has {len(desc.extents)} extents; the datastore transport "
                         "reads disks of one extent only")
    extent = desc.extents[0]
    if "://" in extent.file:
        scheme = extent.file.split("://", 1)[0]
        raise Unservable(f"the data is a {scheme}:// object ({extent.file!r}), not a file "
                         "the datastore serves (vSAN and vVols disks need the NBD transport)")
    if extent.type not in _READABLE:
        why = _WHY_NOT.get(extent.type, "mover knows no other extent type to read raw")
        raise Unservable(f"its extent is {extent.type} ({why})")
    if extent.access != "RW" and extent.access != "RDONLY":
        raise Unservable(f"its extent is {extent.access}")
    if extent.offset:
        raise Unservable(f"its extent starts {extent.offset} sectors into {extent.file!r}; "
                         "the datastore transport reads extents at offset 0 only")
    if not extent.file or extent.file.startswith("/") or "/" in extent.file:
        raise Unservable(f"its extent file {extent.file!r} is not a file next to the "
                         "descriptor")
    if extent.sectors * SECTOR != capacity:
        raise Unservable(f"its extent holds {extent.sectors} sectors ({extent.sectors * SECTOR}"
                         f" bytes), the disk's capacity is {capacity} bytes")
    return posixpath.join(posixpath.dirname(descriptor_path), extent.file)
