"""GRUB for both firmwares from one grub.cfg: the i386-pc core.img in the BIOS boot partition (with
boot.img in the protective MBR, patched here as grub-bios-setup would), and x86_64-efi at the
removable path of the ESP. The slot choice (layout.py) is grub.cfg's.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

from image.layout import (
    ENV_SLOT,
    ENV_TRY,
    ESP_GRUB_DIR,
    INITRD,
    KERNEL,
    SECTOR,
    SLOTS,
    root_label,
    slot_partition,
)
from nsg.upgrade.grubenv import GrubEnv

GRUB_LIB = Path("/usr/lib/grub")

# What both core images carry, so grub.cfg runs without loading anything from the ESP
_COMMON = ("part_gpt", "part_msdos", "fat", "ext2", "normal", "configfile", "loadenv", "test", "echo", "linux",
           "regexp", "search", "search_label", "search_fs_uuid", "serial", "terminal", "halt", "reboot", "sleep",
           "minicmd", "ls", "cat")
MODULES = {"i386-pc": ("biosdisk", *_COMMON), "x86_64-efi": ("efi_gop", "efi_uga", *_COMMON)}

# boot.img (include/grub/i386/pc/boot.h): where the LBA of core.img's first sector goes, the
# boot-drive check patched to NOPs for hard disks, and the MBR range that boot.img must not overwrite
BOOT_KERNEL_SECTOR = 0x5C
BOOT_DRIVE_CHECK = 0x66
BOOT_KEEP_FROM = 0x1B8  # NT disk signature + partition table + 0x55AA stay the disk's
# diskboot.img (the first sector of core.img) ends with a blocklist {u64 start, u16 len, u16 segment}
DISKBOOT_BLOCKLIST = SECTOR - 12


def grubenv_block(values: dict[str, str]) -> bytes:
    """A GRUB environment block, byte for byte what grub-editenv writes, by the codec the box edits
    it with (nsg.upgrade.grubenv): the image's first block and every later one have one format."""
    env = GrubEnv()
    for name, value in values.items():
        env = env.set(name, value)
    return env.to_bytes()


def parse_grubenv(block: bytes) -> dict[str, str]:
    return GrubEnv.parse(block).as_dict()


def grub_cfg(timeout: int = 1) -> str:
    """The one grub.cfg (BIOS and UEFI). ``$root`` is the ESP when it runs; the slots are partitions
    3 and 4 of the same disk, their kernels found by partition number, their root by PARTLABEL."""
    a, b = slot_partition("a"), slot_partition("b")
    la, lb = root_label("a"), root_label("b")
    assert SLOTS == ("a", "b")
    return f"""\
# nsg: A/B root slots. {ENV_SLOT} = the committed slot (a|b); {ENV_TRY} = a slot to boot once.
# The trial is cleared and saved *before* it boots: if it never commits, the next reset is {ENV_SLOT}.
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set envfile=($root)/{ESP_GRUB_DIR}/grubenv
load_env --file $envfile {ENV_SLOT} {ENV_TRY}
regexp --set=1:nsg_disk '^\\(?([^,)]+)' "$root"
if [ "${ENV_SLOT}" != a -a "${ENV_SLOT}" != b ]; then set {ENV_SLOT}=a; fi
set slot=${ENV_SLOT}
set trial=
if [ "${ENV_TRY}" = a -o "${ENV_TRY}" = b ]; then
  set slot=${ENV_TRY}
  set trial=" (trial)"
fi
if [ -n "${ENV_TRY}" ]; then
  set {ENV_TRY}=
  save_env --file $envfile {ENV_TRY}
fi
if [ "$slot" = b ]; then set slot_part={b}; set slot_label={lb}; else set slot_part={a}; set slot_label={la}; fi
if [ ! -f ($nsg_disk,gpt$slot_part){KERNEL} ]; then
  echo "nsg: slot $slot has no kernel, booting slot ${ENV_SLOT}"
  set slot=${ENV_SLOT}
  set trial=
  if [ "$slot" = b ]; then set slot_part={b}; set slot_label={lb}; else set slot_part={a}; set slot_label={la}; fi
fi
set default=0
set timeout={timeout}

menuentry "nsg slot $slot$trial" {{
  set root=($nsg_disk,gpt$slot_part)
  echo "nsg: booting slot $slot from ($nsg_disk,gpt$slot_part)"
  linux {KERNEL} root=PARTLABEL=$slot_label ro nsg.slot=$slot console=tty0 console=ttyS0,115200 panic=10
  initrd {INITRD}
}}
menuentry "nsg slot a (once, env untouched)" {{
  set root=($nsg_disk,gpt{a})
  linux {KERNEL} root=PARTLABEL={la} ro nsg.slot=a console=tty0 console=ttyS0,115200 panic=10
  initrd {INITRD}
}}
menuentry "nsg slot b (once, env untouched)" {{
  set root=($nsg_disk,gpt{b})
  linux {KERNEL} root=PARTLABEL={lb} ro nsg.slot=b console=tty0 console=ttyS0,115200 panic=10
  initrd {INITRD}
}}
"""


def mkimage(fmt: str, out: Path, prefix: str, lib: Path = GRUB_LIB) -> Path:
    """grub-mkimage with the modules grub.cfg needs built in."""
    subprocess.run(["grub-mkimage", "-O", fmt, "-d", str(lib / fmt), "-o", str(out), "-p", prefix, *MODULES[fmt]],
                   check=True)
    return out


def bios_boot_code(core_lba: int, lib: Path = GRUB_LIB) -> bytes:
    """boot.img for the MBR, pointing at core.img's first sector (bytes 0..0x1b7 only)."""
    boot = bytearray((lib / "i386-pc" / "boot.img").read_bytes())
    if len(boot) != SECTOR:
        raise ValueError("boot.img is not one sector")
    struct.pack_into("<Q", boot, BOOT_KERNEL_SECTOR, core_lba)
    boot[BOOT_DRIVE_CHECK:BOOT_DRIVE_CHECK + 2] = b"\x90\x90"  # trust the BIOS's drive number: a hard disk
    return bytes(boot[:BOOT_KEEP_FROM])


def place_core(core: bytes, core_lba: int, room: int) -> bytes:
    """core.img as it must sit at ``core_lba``: the blocklist in its first sector (diskboot.img)
    names the sectors after it, which grub-mkimage assumed to start at LBA 2."""
    if len(core) % SECTOR:
        core = core + bytes(SECTOR - len(core) % SECTOR)
    if len(core) > room:
        raise ValueError(f"core.img ({len(core)} bytes) does not fit the BIOS boot partition ({room})")
    start, length, segment = struct.unpack_from("<QHH", core, DISKBOOT_BLOCKLIST)
    if start != 2 or length != len(core) // SECTOR - 1 or segment != 0x820:
        raise ValueError(f"unexpected diskboot blocklist {start}/{length}/{segment:#x}: GRUB version mismatch")
    patched = bytearray(core)
    struct.pack_into("<Q", patched, DISKBOOT_BLOCKLIST, core_lba + 1)
    return bytes(patched)
