"""The disk and boot contract of an nsg box, shared by the image builder, the factory step and the
upgrade code (which writes the other root slot and flips GRUB's environment).

    LBA 0         protective MBR (GRUB's boot.img code in its first 440 bytes)
    LBA 1..33     primary GPT header + 128 entries
    1 nsg-bios      1 MiB   BIOS boot partition: GRUB i386-pc core.img, patched to find itself
    2 nsg-esp      64 MiB   FAT32 EFI system partition, /boot/efi on the box:
                            EFI/BOOT/BOOTX64.EFI (removable path), grub/grub.cfg, grub/grubenv (1024 B),
                            grub/i386-pc/, grub/x86_64-efi/ (modules, so `insmod` works from the menu)
    3 nsg-root-a           ext4, mounted read-only; /boot/vmlinuz and /boot/initrd.img in it
    4 nsg-root-b           ext4, the other slot (empty in a fresh image)
    5 nsg-data             ext4, persistent: /data on the box (/var/lib/nsg, docker, containerd)
    last 33 LBAs  backup GPT entries + header

GRUB's environment (grubenv on the ESP): ``nsg_slot`` = a|b, the committed slot; ``nsg_try`` = a|b
or empty, a slot to boot once. grub.cfg clears nsg_try and saves the environment *before* booting
the trial slot, so a trial that never commits falls back to nsg_slot at the next reset.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

MiB = 1024 * 1024
SECTOR = 512

# GPT partition type GUIDs (UEFI 2.10 table 5.7; BIOS boot: GRUB's; Linux: the generic data type, so
# systemd-gpt-auto-generator never mounts a slot on its own)
TYPE_BIOS_BOOT = uuid.UUID("21686148-6449-6e6f-744e-656564454649")
TYPE_ESP = uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
TYPE_LINUX = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4")

LABEL_BIOS = "nsg-bios"
LABEL_ESP = "nsg-esp"
LABEL_DATA = "nsg-data"
SLOTS = ("a", "b")
DEFAULT_SLOT = "a"


def root_label(slot: str) -> str:
    if slot not in SLOTS:
        raise ValueError(f"slot {slot!r} is not one of {SLOTS}")
    return f"nsg-root-{slot}"


# GRUB environment: variable names, the block's size, where grub.cfg and the block live on the ESP
ENV_SLOT = "nsg_slot"
ENV_TRY = "nsg_try"
GRUBENV_SIZE = 1024
ESP_GRUB_DIR = "grub"  # /grub on the ESP; /boot/efi/grub on the box
ESP_EFI_LOADER = "EFI/BOOT/BOOTX64.EFI"
ESP_MOUNT = "/boot/efi"
DATA_MOUNT = "/data"
KERNEL = "/boot/vmlinuz"
INITRD = "/boot/initrd.img"

# Where the data partition's directories appear on the box (bind mounts from DATA_MOUNT)
DATA_BINDS = {"nsg": "/var/lib/nsg", "docker": "/var/lib/docker", "containerd": "/var/lib/containerd"}
DATA_MODES = {"nsg": 0o700, "docker": 0o710, "containerd": 0o711}


@dataclass(frozen=True)
class PartSpec:
    number: int  # 1-based GPT entry index
    label: str
    type_guid: uuid.UUID
    size: int  # bytes, a multiple of 1 MiB


def partitions(esp_mib: int = 64, root_mib: int = 1536, data_mib: int = 256) -> tuple[PartSpec, ...]:
    """The partition table, in its fixed order (the upgrade code and grub.cfg address slots by
    number as well as by PARTLABEL: gpt3 = slot a, gpt4 = slot b)."""
    return (
        PartSpec(1, LABEL_BIOS, TYPE_BIOS_BOOT, 1 * MiB),
        PartSpec(2, LABEL_ESP, TYPE_ESP, esp_mib * MiB),
        PartSpec(3, root_label("a"), TYPE_LINUX, root_mib * MiB),
        PartSpec(4, root_label("b"), TYPE_LINUX, root_mib * MiB),
        PartSpec(5, LABEL_DATA, TYPE_LINUX, data_mib * MiB),
    )


def slot_partition(slot: str) -> int:
    """GPT partition number of a root slot (GRUB's (hdN,gptK))."""
    root_label(slot)  # refuses anything but a and b
    return 3 + SLOTS.index(slot)
