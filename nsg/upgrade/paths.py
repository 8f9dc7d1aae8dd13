"""Where a box keeps what an upgrade reads and writes (the disk contract with the image builder), and
the upgrade's defaults. No imports beyond pathlib: `nsg`'s parser reads it."""

from pathlib import Path

GRUBENV = Path("/boot/efi/grub/grubenv")  # on the ESP (PARTLABEL nsg-esp), mounted on /boot/efi
CMDLINE = Path("/proc/cmdline")  # carries nsg.slot=a|b
RELEASE_FILE = Path("/usr/share/nsg/release.json")  # in each root slot: what it runs
KEYS_DIR = Path("/usr/share/nsg/release-keys")  # in each root slot: release public keys, *.pem
STATE_DIR = Path("/var/lib/nsg")  # the data partition (PARTLABEL nsg-data): upgrade.json, downloads
PARTLABEL_DIR = Path("/dev/disk/by-partlabel")  # nsg-root-a, nsg-root-b

DEFAULT_COMMIT_AFTER_S = 300.0  # seconds a trial boot has to become healthy (nsg upgrade --commit-after)
