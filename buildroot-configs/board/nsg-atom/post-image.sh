#!/bin/sh
# Buildroot post-image script (BR2_ROOTFS_POST_IMAGE_SCRIPT): lays out
# the A/B disk image nsg-atom.img (genimage.cfg) from what the build left
# in BINARIES_DIR:
#   efi-part/EFI/BOOT/bootx64.efi  GRUB x86_64-efi (grub2)
#   grub.img                       GRUB i386-pc core (grub2)
#   grub-boot-pristine.img         GRUB i386-pc boot sector (post-build.sh)
#   rootfs.ext4                    root slot a (slot b stays empty)
# and makes nsg-data.ext4 itself. Runs from the Buildroot top directory
# with BINARIES_DIR, BUILD_DIR and HOST_DIR set, host tools on PATH.
set -eu

BOARD_DIR=$(cd "$(dirname "$0")" && pwd)
TOP_DIR=$(pwd)
GRUB_EDITENV=${GRUB_EDITENV:-$HOST_DIR/bin/grub-editenv}

# Where genimage.cfg puts the BIOS boot partition (offset = 1M).
BIOS_PART_LBA=2048
BIOS_PART_BYTES=1048576

# GRUB i386-pc, as grub-bios-setup would do for a BIOS boot partition:
# the boot sector (MBR code) reads the first sector of the core image
# from the LBA at 0x5c; that first sector reads the rest of the core
# from the blocklist at its end (start LBA at 0x1f4). grub-mkimage
# leaves them at 1 and 2 (core right after the MBR), where GPT keeps its
# header, so point them at the BIOS boot partition instead. Like
# grub-bios-setup for a hard disk, also turn the jump over the boot
# drive check (0x66) into NOPs: the drive is a disk, whatever the BIOS says.
KERNEL_SECTOR_OFFSET=92
DRIVE_CHECK_OFFSET=102
BLOCKLIST_START_OFFSET=500

get_le64() {
	od -An -tu8 -j "$2" -N 8 "$1" | tr -d ' '
}

put_le64() {
	v=$3
	bytes=""
	for _ in 1 2 3 4 5 6 7 8; do
		bytes="$bytes$(printf '\\0%03o' $((v % 256)))"
		v=$((v / 256))
	done
	printf '%b' "$bytes" | dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null
}

patch_bytes() {
	was=$(od -An -tx1 -j "$2" -N 2 "$1" | tr -d ' ')
	if [ "$was" != "$3" ]; then
		echo "post-image: $1: expected $3 at byte $2, found $was (GRUB layout changed?)" >&2
		exit 1
	fi
	printf '%b' "$4" | dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null
}

patch_le64() {
	was=$(get_le64 "$1" "$2")
	if [ "$was" != "$3" ]; then
		echo "post-image: $1: expected $3 at byte $2, found $was (GRUB layout changed?)" >&2
		exit 1
	fi
	put_le64 "$1" "$2" "$4"
}

cd "$BINARIES_DIR"
cp -f grub-boot-pristine.img nsg-grub-boot.img
patch_le64 nsg-grub-boot.img "$KERNEL_SECTOR_OFFSET" 1 "$BIOS_PART_LBA"
patch_bytes nsg-grub-boot.img "$DRIVE_CHECK_OFFSET" eb05 '\0220\0220'
cp -f grub.img nsg-grub-core.img
patch_le64 nsg-grub-core.img "$BLOCKLIST_START_OFFSET" 2 $((BIOS_PART_LBA + 1))
if [ "$(wc -c <nsg-grub-core.img)" -gt "$BIOS_PART_BYTES" ]; then
	echo "post-image: grub.img does not fit the 1 MiB nsg-bios partition" >&2
	exit 1
fi

# The ESP: GRUB for UEFI at the removable-media path, the A/B grub.cfg
# and a fresh environment block (slot a committed, no trial).
rm -rf nsg-esp
mkdir -p nsg-esp/EFI/BOOT nsg-esp/grub
cp efi-part/EFI/BOOT/bootx64.efi nsg-esp/EFI/BOOT/BOOTX64.EFI
cp "$BOARD_DIR/grub.cfg" nsg-esp/grub/grub.cfg
"$GRUB_EDITENV" nsg-esp/grub/grubenv create
"$GRUB_EDITENV" nsg-esp/grub/grubenv set nsg_slot=a nsg_try=

# nsg-data: the directories fstab binds onto /var/lib, owned by root
# (fakeroot: the build does not run as root).
rm -rf nsg-data nsg-data.ext4
fakeroot -- sh -c '
	set -e
	mkdir -p nsg-data
	mkdir -m 0700 nsg-data/nsg
	mkdir -m 0710 nsg-data/docker
	mkdir -m 0711 nsg-data/containerd
	chown -R 0:0 nsg-data
	mkfs.ext4 -q -L nsg-data -d nsg-data nsg-data.ext4 256M
'
cd "$TOP_DIR"

support/scripts/genimage.sh -c "$BOARD_DIR/genimage.cfg"
