"""board/nsg-atom: the A/B disk its post-build and post-image scripts lay out, booted in qemu (BIOS and UEFI).

A Buildroot build cannot run here, so the inputs it would leave behind are made with Debian's GRUB (2.06
standing in for Buildroot's 2.12), built exactly as boot/grub2/grub2.mk would from nsg_atom_defconfig's
GRUB options, and Debian's kernel as the slots' /boot/bzImage. Then the board's own scripts run: post-build.sh
on a stand-in TARGET_DIR, post-image.sh (and through it Buildroot's support/scripts/genimage.sh and
genimage.cfg) from the unpacked Buildroot tree. The disk is checked byte by byte against the A/B scheme,
and booted: GRUB must pick the slot grubenv says, clear a trial before booting it, fall back when the trial
never commits or has no kernel, and hand the kernel the slot's command line.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import struct
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.build.conftest import BOARD, DEFCONFIG, expand, parse_config
from tests.peers import missing_commands, require_peer
from tests.vm_guest import QEMU, guest_kernel

GRUB_LIB = Path("/usr/lib/grub")
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
SECTOR = 512
MiB = 1 << 20

# The A/B scheme shared with the image builder: (PARTLABEL, GPT type, size or None for "slot").
LAYOUT = [
    ("nsg-bios", "21686148-6449-6e6f-744e-656564454649", 1 * MiB),   # BIOS boot
    ("nsg-esp", "c12a7328-f81f-11d2-ba4b-00a0c93ec93b", 64 * MiB),   # EFI system
    ("nsg-root-a", "0fc63daf-8483-4772-8e79-3d69d8477de4", None),
    ("nsg-root-b", "0fc63daf-8483-4772-8e79-3d69d8477de4", None),
    ("nsg-data", "0fc63daf-8483-4772-8e79-3d69d8477de4", None),
]


def _missing() -> list[str]:
    out = missing_commands({"genimage": "genimage", "mkfs.vfat": "dosfstools", "mcopy": "mtools",
                            "mkfs.ext4": "e2fsprogs", "grub-mkimage": "grub-common",
                            "grub-editenv": "grub-common", "qemu-system-x86_64": "qemu-system-x86",
                            "getopt": "util-linux", "fakeroot": "fakeroot", "debugfs": "e2fsprogs"})
    for path, pkg in ((GRUB_LIB / "i386-pc" / "boot.img", "grub-pc-bin"),
                      (GRUB_LIB / "x86_64-efi" / "linux.mod", "grub-efi-amd64-bin"), (OVMF_CODE, "ovmf")):
        if not path.exists():
            out.append(f"{path} not found (Debian package {pkg})")
    if not list(Path("/boot").glob("vmlinuz-*")):
        out.append("no /boot/vmlinuz-* (Debian package linux-image-cloud-amd64)")
    return out


pytestmark = require_peer(_missing())


def run(*argv: str, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, **kw)
    assert proc.returncode == 0, f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def grub_images(binaries: Path) -> None:
    """grub.img (i386-pc) and efi-part/EFI/BOOT/bootx64.efi, as grub2.mk's GRUB2_INSTALL_IMAGES_CMDS makes
    them from the defconfig: the builtin modules and config, and the prefix it derives."""
    cfg = parse_config(DEFCONFIG)
    boot_part = cfg["BR2_TARGET_GRUB2_BOOT_PARTITION"].strip('"')
    for tuple_, out, prefix, suffix in (("i386-pc", binaries / "grub.img", f"({boot_part})/boot/grub", "PC"),
                                        ("x86_64-efi", binaries / "efi-part/EFI/BOOT/bootx64.efi", "/EFI/BOOT",
                                         "EFI")):
        out.parent.mkdir(parents=True, exist_ok=True)
        [builtin_cfg] = expand(cfg[f"BR2_TARGET_GRUB2_BUILTIN_CONFIG_{suffix}"])
        modules = cfg[f"BR2_TARGET_GRUB2_BUILTIN_MODULES_{suffix}"].strip('"').split()
        run("grub-mkimage", "-d", str(GRUB_LIB / tuple_), "-O", tuple_, "-o", str(out), "-p", prefix,
            "-c", str(builtin_cfg), *modules)


@pytest.fixture(scope="module")
def image(buildroot_tree, tmp_path_factory) -> Path:
    """nsg-atom.img as post-build.sh + post-image.sh make it (both scripts run twice: re-runnable)."""
    base = tmp_path_factory.mktemp("nsg-atom")
    binaries, target, host, build = (base / d for d in ("images", "target", "host", "build"))
    for d in (binaries, target / "boot" / "grub", target / "usr/lib/grub/i386-pc", target / "etc", host / "bin",
              build):
        d.mkdir(parents=True)
    # what the packages leave in TARGET_DIR: the kernel, GRUB's tools' files, the skeleton's fstab
    shutil.copy(guest_kernel(), target / "boot" / "bzImage")
    shutil.copy(GRUB_LIB / "i386-pc" / "boot.img", target / "usr/lib/grub/i386-pc/boot.img")
    (target / "boot/grub/grub.cfg").write_text("# boot/grub2/grub.cfg\n")
    (target / "etc/fstab").write_text("/dev/root / auto ro 0 1\n")
    grub_images(binaries)
    os.symlink(shutil.which("grub-editenv"), host / "bin" / "grub-editenv")  # host-grub2's

    # Buildroot runs the scripts with its host tools first on PATH: fakeroot, mkfs.ext4, genimage
    env = {"PATH": f"{host / 'bin'}:{os.environ['PATH']}:/usr/sbin:/sbin", "LC_ALL": "C",
           "BINARIES_DIR": str(binaries), "TARGET_DIR": str(target), "HOST_DIR": str(host), "BUILD_DIR": str(build)}
    for _ in range(2):
        run(str(BOARD / "post-build.sh"), str(target), env=env, cwd=buildroot_tree)
    fstab = [line.split() for line in (target / "etc/fstab").read_text().splitlines()]
    mounts = [(f[0], f[1], f[2]) for f in fstab]
    assert mounts == [("/dev/root", "/", "auto"), ("PARTLABEL=nsg-esp", "/boot/efi", "vfat"),
                      ("PARTLABEL=nsg-data", "/data", "ext4"), ("/data/nsg", "/var/lib/nsg", "none"),
                      ("/data/docker", "/var/lib/docker", "none"),
                      ("/data/containerd", "/var/lib/containerd", "none")], fstab
    assert (target / "data").is_dir() and (target / "boot/efi").is_dir()
    assert (target / "boot/vmlinuz").is_file() and not (target / "boot/bzImage").exists()
    assert not (target / "usr/lib/grub").exists() and not (target / "boot/grub").exists()

    # the root filesystem image fs/ext2 would make (rootfs.ext2, rootfs.ext4 its link)
    run("mkfs.ext4", "-q", "-L", "rootfs", "-d", str(target), str(binaries / "rootfs.ext2"), "96M")
    os.symlink("rootfs.ext2", binaries / "rootfs.ext4")
    for _ in range(2):
        run(str(BOARD / "post-image.sh"), env=env, cwd=buildroot_tree)
    return binaries / "nsg-atom.img"


def gpt(disk: Path) -> list[dict]:
    """The GPT's used entries (UEFI spec 5.3), read here rather than by a partitioning tool."""
    with disk.open("rb") as f:
        f.seek(SECTOR)
        hdr = f.read(92)
        assert hdr[:8] == b"EFI PART", "no GPT header at LBA 1"
        entries_lba, count, size = struct.unpack_from("<QII", hdr, 72)
        f.seek(entries_lba * SECTOR)
        raw = f.read(count * size)
    out = []
    for i in range(count):
        e = raw[i * size:(i + 1) * size]
        if e[:16] == bytes(16):
            continue
        first, last = struct.unpack_from("<QQ", e, 32)
        out.append({"type": str(uuid.UUID(bytes_le=e[:16])), "first": first, "last": last,
                    "name": e[56:128].decode("utf-16-le").rstrip("\0")})
    return out


def read_at(disk: Path, offset: int, n: int) -> bytes:
    with disk.open("rb") as f:
        f.seek(offset)
        return f.read(n)


def esp_offset(disk: Path) -> int:
    return gpt(disk)[1]["first"] * SECTOR


def esp_read(disk: Path, path: str, dest: Path) -> Path:
    run("mcopy", "-n", "-i", f"{disk}@@{esp_offset(disk)}", f"::{path}", str(dest),
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    return dest


def grubenv(disk: Path, tmp: Path, **values: str) -> dict[str, str]:
    """Set values in the ESP's grubenv (none: just read); returns what it holds."""
    env = esp_read(disk, "/grub/grubenv", tmp / "grubenv")
    if values:
        run("grub-editenv", str(env), "set", *(f"{k}={v}" for k, v in values.items()))
        run("mcopy", "-o", "-i", f"{disk}@@{esp_offset(disk)}", str(env), "::/grub/grubenv",
            env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    listed = run("grub-editenv", str(env), "list").stdout.splitlines()
    return dict(line.split("=", 1) for line in listed)


def test_disk_is_the_ab_layout(image):
    parts = gpt(image)
    assert [p["name"] for p in parts] == [name for name, _, _ in LAYOUT]
    cfg = parse_config(DEFCONFIG)
    size = cfg["BR2_TARGET_ROOTFS_EXT2_SIZE"].strip('"')
    rootfs = int(size[:-1]) << {"K": 10, "M": 20, "G": 30}[size[-1]]
    for p, (name, ptype, size) in zip(parts, LAYOUT, strict=True):
        assert p["type"] == ptype, f"{name}: type {p['type']}"
        length = (p["last"] - p["first"] + 1) * SECTOR
        assert p["first"] * SECTOR % MiB == 0, f"{name} is not 1 MiB aligned"
        if size is not None:
            assert length == size, f"{name}: {length} bytes"
        elif name.startswith("nsg-root"):
            assert length >= rootfs, f"{name} ({length}) cannot hold BR2_TARGET_ROOTFS_EXT2_SIZE ({rootfs})"
    assert parts[2]["last"] - parts[2]["first"] == parts[3]["last"] - parts[3]["first"], "slots differ in size"
    bios, esp, slot_a, slot_b, data = (p["first"] * SECTOR for p in parts)

    mbr = read_at(image, 0, SECTOR)
    assert mbr[510:] == b"\x55\xaa" and mbr[450] == 0xEE, "no protective MBR"
    # GRUB i386-pc: boot sector -> first core sector at the BIOS boot partition -> the rest right after it
    assert struct.unpack_from("<Q", mbr, 0x5C)[0] == parts[0]["first"]
    assert mbr[0x66:0x68] == b"\x90\x90", "boot drive check not patched out (grub-bios-setup does)"
    pristine = (GRUB_LIB / "i386-pc" / "boot.img").read_bytes()
    assert mbr[:0x5C] == pristine[:0x5C] and mbr[0x68:440] == pristine[0x68:440], "boot.img code altered"
    assert struct.unpack_from("<Q", read_at(image, bios, SECTOR), 0x1F4)[0] == parts[0]["first"] + 1
    assert read_at(image, esp + 82, 8) == b"FAT32   " and read_at(image, esp + 71, 11) == b"NSG-ESP    "
    for offset, label in ((slot_a, b"rootfs"), (data, b"nsg-data")):
        sb = read_at(image, offset + 1024, 136)
        assert sb[56:58] == b"\x53\xef" and sb[120:136].rstrip(b"\0") == label, f"no ext4 '{label}' at {offset}"
    assert read_at(image, slot_b, 4096) == bytes(4096), "slot b is not empty in a fresh image"


def test_data_partition_holds_the_bound_directories(image, tmp_path):
    """/data/{nsg,docker,containerd}, root's, with the image builder's modes (fstab binds them)."""
    part = gpt(image)[4]
    data = tmp_path / "data.ext4"
    run("dd", f"if={image}", f"of={data}", f"bs={SECTOR}", f"skip={part['first']}",
        f"count={part['last'] - part['first'] + 1}", "status=none")
    listing = run("debugfs", "-R", "ls -l /", str(data)).stdout
    found = {f[-1]: (f[1], f[3], f[4]) for f in (ln.split() for ln in listing.splitlines()) if len(f) >= 8}
    for name, mode in (("nsg", "40700"), ("docker", "40710"), ("containerd", "40711")):
        assert found.get(name) == (mode, "0", "0"), f"/data/{name}: {found.get(name)} (mode, uid, gid)"


def test_esp_holds_grub_its_config_and_a_fresh_grubenv(image, tmp_path):
    assert esp_read(image, "/EFI/BOOT/BOOTX64.EFI", tmp_path / "boot.efi").read_bytes()[:2] == b"MZ"
    assert esp_read(image, "/grub/grub.cfg", tmp_path / "grub.cfg").read_bytes() == (BOARD / "grub.cfg").read_bytes()
    assert esp_read(image, "/grub/grubenv", tmp_path / "env").stat().st_size == 1024  # GRUB's env block
    assert grubenv(image, tmp_path) == {"nsg_slot": "a", "nsg_try": ""}


def boot(disk: Path, firmware: str, timeout: float = 90.0) -> tuple[list[str], str]:
    """Boot the disk until the kernel prints its command line; (GRUB's "nsg:" lines, that command line)."""
    argv = [QEMU, "-m", "512", "-nodefaults", "-display", "none", "-serial", "stdio", "-monitor", "none",
            "-nic", "none", "-no-reboot", "-drive", f"file={disk},format=raw,if=virtio"]
    if firmware == "uefi":
        argv += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, deadline = b"", time.monotonic() + timeout
    try:
        while (m := re.search(rb"Kernel command line: ([^\r\n]*)[\r\n]", out)) is None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
                pytest.fail(f"{firmware}: no kernel command line within {timeout} s:\n{out[-3000:]!r}")
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                pytest.fail(f"{firmware}: qemu exited {proc.wait()} before the kernel ran:\n{out[-3000:]!r}")
            out += chunk
    finally:
        proc.kill()
        proc.wait()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.decode(errors="replace"))
    said = sorted(set(re.findall(r"nsg: [^\r\n]*?(?=nsg:|[\r\n]|$)", text)))
    return said, m[1].decode()


@pytest.fixture
def disk(image, tmp_path) -> Path:
    """A scratch copy of the image (sparse), next to the rootfs.ext4 it was made from."""
    copy = tmp_path / "disk.img"
    run("cp", "--sparse=always", str(image), str(copy))
    (tmp_path / "rootfs.ext4").symlink_to(image.parent / "rootfs.ext2")
    return copy


def assert_booted(said: list[str], cmdline: str, slot: str) -> None:
    dev = {"a": "gpt3", "b": "gpt4"}[slot]
    assert f"nsg: booting slot {slot} from (hd0,{dev})" in said, said
    assert f"root=PARTLABEL=nsg-root-{slot} " in cmdline and f"nsg.slot={slot}" in cmdline.split(), cmdline
    assert cmdline.startswith(f"BOOT_IMAGE=(hd0,{dev})/boot/vmlinuz "), cmdline


def fill_slot_b(disk: Path) -> None:
    """What an upgrade does first: the new root filesystem into the other slot."""
    rootfs = disk.parent / "rootfs.ext4"
    run("dd", f"if={rootfs}", f"of={disk}", f"bs={SECTOR}", f"seek={gpt(disk)[3]['first']}", "conv=notrunc",
        "status=none")


def test_bios_boots_a_trial_once_and_never_an_empty_slot(disk, tmp_path):
    grubenv(disk, tmp_path, nsg_try="b")  # slot b is still empty
    said, cmdline = boot(disk, "bios")
    assert "nsg: slot b has no /boot/vmlinuz, not tried" in said, said
    assert_booted(said, cmdline, "a")
    assert grubenv(disk, tmp_path) == {"nsg_slot": "a", "nsg_try": ""}, "an unbootable trial must be used up"

    fill_slot_b(disk)
    grubenv(disk, tmp_path, nsg_try="b")
    assert_booted(*boot(disk, "bios"), "b")
    assert grubenv(disk, tmp_path) == {"nsg_slot": "a", "nsg_try": ""}, "GRUB did not clear the trial"
    assert_booted(*boot(disk, "bios"), "a")  # the trial never committed: back to a


def test_uefi_boots_a_trial_and_the_committed_slot(disk, tmp_path):
    fill_slot_b(disk)
    grubenv(disk, tmp_path, nsg_slot="b", nsg_try="a")
    assert_booted(*boot(disk, "uefi"), "a")
    assert grubenv(disk, tmp_path) == {"nsg_slot": "b", "nsg_try": ""}, "GRUB did not clear the trial"
    assert_booted(*boot(disk, "uefi"), "b")
