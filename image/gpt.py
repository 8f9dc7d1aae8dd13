"""GPT (UEFI 2.10 section 5.3) with a protective MBR (5.2.3), written and read in Python: the builder
needs no sgdisk/sfdisk and no loop device, and the factory step finds the data partition by name.

    LBA 0   protective MBR: one entry of type 0xEE covering the disk (boot code bytes 0-439 untouched)
    LBA 1   header:  "EFI PART" | revision | header size 92 | header CRC32 | 0 | my LBA | alternate LBA
                     | first usable | last usable | disk GUID | entries LBA | entry count | entry size
                     | entries CRC32
    LBA 2.. 128 entries of 128 bytes: type GUID | unique GUID | first LBA | last LBA (inclusive)
                     | attributes | name (36 UTF-16LE code units)
    the last 33 LBAs: the backup entries, then the backup header (my/alternate LBAs swapped)

GUIDs are stored in the mixed-endian form (``uuid.UUID.bytes_le``).
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from image.layout import SECTOR, MiB, PartSpec

SIGNATURE = b"EFI PART"
REVISION = 0x00010000
HEADER_SIZE = 92
ENTRY_COUNT = 128
ENTRY_SIZE = 128
ENTRY_SECTORS = ENTRY_COUNT * ENTRY_SIZE // SECTOR  # 32
ALIGN = MiB  # partitions start on 1 MiB boundaries
_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")
_ENTRY = struct.Struct("<16s16sQQQ72s")


class GptError(ValueError):
    """The disk holds no valid GPT (a local fault: the image, not a peer)."""


@dataclass(frozen=True)
class Partition:
    number: int
    label: str
    type_guid: uuid.UUID
    guid: uuid.UUID
    first_lba: int
    last_lba: int  # inclusive

    @property
    def offset(self) -> int:
        return self.first_lba * SECTOR

    @property
    def size(self) -> int:
        return (self.last_lba - self.first_lba + 1) * SECTOR


def plan(specs: Sequence[PartSpec], guids: Sequence[uuid.UUID] | None = None) -> tuple[list[Partition], int]:
    """Place the partitions back to back from 1 MiB on; returns them and the disk size in bytes
    (the last partition's end, 1 MiB aligned, plus room for the backup GPT)."""
    lba = ALIGN // SECTOR
    out = []
    for i, spec in enumerate(specs):
        if spec.size % ALIGN:
            raise GptError(f"partition {spec.label}: size {spec.size} is not a multiple of 1 MiB")
        n = spec.size // SECTOR
        guid = guids[i] if guids else uuid.uuid4()
        out.append(Partition(spec.number, spec.label, spec.type_guid, guid, lba, lba + n - 1))
        lba += n
    return out, lba * SECTOR + ALIGN  # the backup GPT (33 sectors) in a last aligned MiB


def protective_mbr(disk_sectors: int, boot_code: bytes = b"") -> bytes:
    """UEFI 5.2.3: one partition of type 0xEE from LBA 1 over the disk (capped at 2^32-1 sectors)."""
    mbr = bytearray(SECTOR)
    mbr[: len(boot_code)] = boot_code[:440]
    size = min(disk_sectors - 1, 0xFFFFFFFF)
    # status 0 (not bootable: some UEFI firmware treats an active 0xEE entry as a plain MBR disk),
    # CHS start 0/0/2, type 0xEE, CHS end "beyond", LBA 1, size
    mbr[446:462] = struct.pack("<B3sB3sII", 0, b"\x00\x02\x00", 0xEE, b"\xff\xff\xff", 1, size)
    mbr[510:512] = b"\x55\xaa"
    return bytes(mbr)


def _entries(parts: Sequence[Partition]) -> bytes:
    table = bytearray(ENTRY_COUNT * ENTRY_SIZE)
    for p in parts:
        if not 1 <= p.number <= ENTRY_COUNT:
            raise GptError(f"partition number {p.number} out of range")
        name = p.label.encode("utf-16-le")
        if len(name) > 72:
            raise GptError(f"partition name {p.label!r} longer than 36 UTF-16 code units")
        off = (p.number - 1) * ENTRY_SIZE
        table[off: off + ENTRY_SIZE] = _ENTRY.pack(p.type_guid.bytes_le, p.guid.bytes_le, p.first_lba,
                                                  p.last_lba, 0, name.ljust(72, b"\0"))
    return bytes(table)


def _header(my_lba: int, alt_lba: int, first_usable: int, last_usable: int, disk_guid: uuid.UUID,
            entries_lba: int, entries_crc: int) -> bytes:
    def pack(crc: int) -> bytes:
        return _HEADER.pack(SIGNATURE, REVISION, HEADER_SIZE, crc, 0, my_lba, alt_lba, first_usable, last_usable,
                            disk_guid.bytes_le, entries_lba, ENTRY_COUNT, ENTRY_SIZE, entries_crc)

    return pack(zlib.crc32(pack(0))).ljust(SECTOR, b"\0")


def write(f: BinaryIO, disk_size: int, parts: Sequence[Partition], disk_guid: uuid.UUID | None = None,
          boot_code: bytes = b"") -> None:
    """Write the protective MBR, primary and backup GPT into an open disk image of ``disk_size`` bytes."""
    if disk_size % SECTOR:
        raise GptError("disk size is not a multiple of 512")
    sectors = disk_size // SECTOR
    first_usable, last_usable = 2 + ENTRY_SECTORS, sectors - 2 - ENTRY_SECTORS
    for p in parts:
        if p.first_lba < first_usable or p.last_lba > last_usable or p.first_lba > p.last_lba:
            raise GptError(f"partition {p.label} ({p.first_lba}-{p.last_lba}) outside {first_usable}-{last_usable}")
    disk_guid = disk_guid or uuid.uuid4()
    table = _entries(parts)
    crc = zlib.crc32(table)
    backup_entries = sectors - 1 - ENTRY_SECTORS
    f.seek(0)
    f.write(protective_mbr(sectors, boot_code))
    f.write(_header(1, sectors - 1, first_usable, last_usable, disk_guid, 2, crc))
    f.write(table)
    f.seek(backup_entries * SECTOR)
    f.write(table)
    f.write(_header(sectors - 1, 1, first_usable, last_usable, disk_guid, backup_entries, crc))


def read(f: BinaryIO) -> list[Partition]:
    """The partitions of the primary GPT, checked (signature, header and entries CRC32)."""
    f.seek(SECTOR)
    raw = f.read(SECTOR)
    if len(raw) < HEADER_SIZE:
        raise GptError("disk too short for a GPT header")
    (sig, _rev, hsize, hcrc, _res, _my, _alt, _first, _last, _guid, entries_lba, count, esize,
     ecrc) = _HEADER.unpack_from(raw)
    if sig != SIGNATURE:
        raise GptError("no GPT signature at LBA 1")
    if hsize < HEADER_SIZE or hsize > SECTOR:
        raise GptError(f"GPT header size {hsize} invalid")
    check = bytearray(raw[:hsize])
    check[16:20] = b"\0\0\0\0"
    if zlib.crc32(check) != hcrc:
        raise GptError("GPT header CRC32 mismatch")
    if esize < _ENTRY.size or count * esize > 1024 * 1024:
        raise GptError(f"GPT entry table {count} x {esize} implausible")
    f.seek(entries_lba * SECTOR)
    table = f.read(count * esize)
    if len(table) != count * esize or zlib.crc32(table) != ecrc:
        raise GptError("GPT entry table CRC32 mismatch")
    out = []
    for i in range(count):
        tguid, pguid, first, last, _attrs, name = _ENTRY.unpack_from(table, i * esize)
        if tguid == bytes(16):
            continue
        label = name.decode("utf-16-le", errors="replace").split("\0", 1)[0]
        out.append(Partition(i + 1, label, uuid.UUID(bytes_le=tguid), uuid.UUID(bytes_le=pguid), first, last))
    return out


def find(parts: Sequence[Partition], label: str) -> Partition:
    hits = [p for p in parts if p.label == label]
    if len(hits) != 1:
        raise GptError(f"{len(hits)} partitions named {label!r} (expected one)")
    return hits[0]
