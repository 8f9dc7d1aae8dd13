#!/bin/sh
# Buildroot post-build script (BR2_ROOTFS_POST_BUILD_SCRIPT): shapes
# TARGET_DIR ($1) into an nsg root slot. Safe to run again.
set -eu

TARGET_DIR=$1

# Each slot boots its own kernel: grub.cfg loads /boot/vmlinuz from the
# slot it picked (and /boot/initrd.img when a slot has one; this
# kernel mounts its root without).
if [ -f "$TARGET_DIR/boot/bzImage" ]; then
	mv -f "$TARGET_DIR/boot/bzImage" "$TARGET_DIR/boot/vmlinuz"
fi

# GRUB's tools come along for grub-editenv (nsg_slot/nsg_try from
# Linux). Keep the i386-pc boot sector for post-image.sh, then drop the
# modules and the default config: both GRUB images are self-contained
# and a slot carries no bootloader of its own.
if [ -f "$TARGET_DIR/usr/lib/grub/i386-pc/boot.img" ]; then
	cp -f "$TARGET_DIR/usr/lib/grub/i386-pc/boot.img" \
		"$BINARIES_DIR/grub-boot-pristine.img"
fi
rm -rf "$TARGET_DIR/usr/lib/grub" "$TARGET_DIR/boot/grub"

# The root slot stays read-only. The ESP (grubenv) is /boot/efi; what
# must persist lives on nsg-data, mounted on /data and bound where the
# daemons look (the image builder's fstab, the same on every nsg box).
mkdir -p "$TARGET_DIR/boot/efi" "$TARGET_DIR/data"
add_fstab() {
	grep -q "^$1 " "$TARGET_DIR/etc/fstab" || echo "$*" >>"$TARGET_DIR/etc/fstab"
}
add_fstab PARTLABEL=nsg-esp /boot/efi vfat \
	umask=0077,shortname=mixed,noatime,nofail,x-systemd.device-timeout=30s 0 0
add_fstab PARTLABEL=nsg-data /data ext4 \
	noatime,x-systemd.device-timeout=30s 0 2
for dir in nsg docker containerd; do
	add_fstab "/data/$dir" "/var/lib/$dir" none bind 0 0
done
