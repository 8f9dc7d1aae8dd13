"""The image builder's own writers, without building an image (fast, no root): the GPT against sfdisk,
the GRUB environment block against grub-editenv, the BIOS boot sector patching against GRUB's images."""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import uuid
from pathlib import Path

import pytest

from image import gpt, grub, layout
from tests.peers import require_peer


def needs(absent: bool, reason: str) -> pytest.MarkDecorator:
    """The independent tool is missing: skip locally, fail under CI=true (tests/peers.py)."""
    return require_peer([reason] if absent else [])


@needs(shutil.which("sfdisk") is None, "sfdisk (Debian package fdisk): the independent GPT reader")
def test_gpt_round_trip_and_sfdisk_agrees(tmp_path: Path):
    parts, size = gpt.plan(layout.partitions(root_mib=64, data_mib=32))
    disk_guid = uuid.uuid4()
    img = tmp_path / "disk.img"
    with img.open("wb") as f:
        f.truncate(size)
        gpt.write(f, size, parts, disk_guid=disk_guid, boot_code=b"\xeb\x63" + bytes(438))
    with img.open("rb") as f:
        assert gpt.read(f) == parts
        f.seek(0)
        mbr = f.read(512)
    assert mbr[:2] == b"\xeb\x63" and mbr[510:] == b"\x55\xaa" and mbr[450] == 0xEE
    assert [p.label for p in parts] == ["nsg-bios", "nsg-esp", "nsg-root-a", "nsg-root-b", "nsg-data"]
    assert all(p.offset % layout.MiB == 0 for p in parts)
    table = json.loads(subprocess.run(["sfdisk", "--json", str(img)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    assert table["id"].lower() == str(disk_guid)
    assert [(p["name"], p["start"], p["size"], p["type"].lower(), p["uuid"].lower()) for p in table["partitions"]] \
        == [(p.label, p.first_lba, p.last_lba - p.first_lba + 1, str(p.type_guid), str(p.guid)) for p in parts]
    verify = subprocess.run(["sfdisk", "--verify", str(img)], capture_output=True, text=True, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_gpt_read_refuses_damage():
    parts, size = gpt.plan(layout.partitions(root_mib=8, data_mib=8))
    buf = io.BytesIO(bytes(size))
    gpt.write(buf, size, parts)
    raw = bytearray(buf.getvalue())
    raw[1024 + 40] ^= 1  # a byte of the first entry: the entries' CRC32 no longer matches
    with pytest.raises(gpt.GptError, match="entry table CRC32"):
        gpt.read(io.BytesIO(bytes(raw)))
    raw = bytearray(buf.getvalue())
    raw[512 + 24] ^= 1  # my_lba in the header
    with pytest.raises(gpt.GptError, match="header CRC32"):
        gpt.read(io.BytesIO(bytes(raw)))


@needs(shutil.which("grub-editenv") is None, "grub-editenv (Debian package grub-common)")
def test_grubenv_block_is_grub_editenvs(tmp_path: Path):
    env = tmp_path / "grubenv"
    subprocess.run(["grub-editenv", str(env), "create"], check=True)
    subprocess.run(["grub-editenv", str(env), "set", "nsg_slot=a", "nsg_try="], check=True)
    block = grub.grubenv_block({layout.ENV_SLOT: "a", layout.ENV_TRY: ""})
    assert block == env.read_bytes() and len(block) == layout.GRUBENV_SIZE
    assert grub.parse_grubenv(block) == {"nsg_slot": "a", "nsg_try": ""}
    with pytest.raises(ValueError):
        grub.grubenv_block({"nsg-slot": "a"})


def test_grub_cfg_names_the_contract():
    cfg = grub.grub_cfg()
    for needle in ("load_env --file $envfile nsg_slot nsg_try", "save_env --file $envfile nsg_try",
                   "root=PARTLABEL=$slot_label ro nsg.slot=$slot console=tty0 console=ttyS0,115200",
                   "set slot_part=3", "set slot_part=4", "nsg-root-a", "nsg-root-b"):
        assert needle in cfg, needle
    # the trial is cleared and saved before any menuentry can boot it
    assert cfg.index("save_env") < cfg.index("menuentry")


@needs(not (grub.GRUB_LIB / "i386-pc" / "boot.img").exists(), "GRUB i386-pc boot.img (Debian package grub-pc-bin)")
def test_bios_boot_sector_and_core_blocklist(tmp_path: Path):
    code = grub.bios_boot_code(2048)
    assert len(code) == 0x1B8 and struct.unpack_from("<Q", code, grub.BOOT_KERNEL_SECTOR)[0] == 2048
    core = grub.mkimage("i386-pc", tmp_path / "core.img", "(,gpt2)/grub").read_bytes()
    placed = grub.place_core(core, 2048, layout.MiB)
    start, length, segment = struct.unpack_from("<QHH", placed, grub.DISKBOOT_BLOCKLIST)
    assert (start, segment) == (2049, 0x820) and length == len(placed) // 512 - 1
    assert placed[512:] == core[512:] + bytes(len(placed) - len(core))
    with pytest.raises(ValueError, match="does not fit"):
        grub.place_core(core, 2048, 64 * 1024)
