"""`python -m image.build --out build/nsg-V-x86_64.img`: a bootable raw GPT disk of nsg (layout.py).

    rootfs.py   Debian 12 root tree (mmdebstrap) + nsg's venv + image/rootfs/ + manifest
    here        root slot a: mkfs.ext4 -d (no journal: it is never written); slot b: left empty;
                ESP: mkfs.vfat + mtools (GRUB EFI, grub.cfg, grubenv); data: mkfs.ext4 -d;
                then the disk: GPT and boot.img written by gpt.py/grub.py, each filesystem copied in
                at its offset, sparse. No loop device and no mount anywhere.

Needs root (mmdebstrap --mode=root, chroot) and the Debian packages in TOOLS.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from image import gpt, grub, layout, rootfs
from image.rootfs import BuildError, RootOptions

REPO = Path(__file__).resolve().parent.parent
# tool -> the Debian package that has it
TOOLS = {"mmdebstrap": "mmdebstrap", "mkfs.ext4": "e2fsprogs", "mkfs.vfat": "dosfstools", "mcopy": "mtools",
         "mmd": "mtools", "grub-mkimage": "grub-common", "xz": "xz-utils", "git": "git"}
GRUB_DIRS = {"i386-pc": "grub-pc-bin", "x86_64-efi": "grub-efi-amd64-bin"}
CHUNK = 1 << 20


def missing_tools() -> list[str]:
    pkgs = {pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None}
    pkgs |= {pkg for d, pkg in GRUB_DIRS.items() if not (grub.GRUB_LIB / d / "moddep.lst").exists()}
    return sorted(pkgs)


def source_version(src: Path) -> str:
    m = re.search(r'^__version__\s*=\s*"([^"]+)"', (src / "nsg" / "__init__.py").read_text(), re.M)
    if not m:
        raise BuildError(f"no __version__ in {src}/nsg/__init__.py")
    return m.group(1)


def source_notifies(src: Path) -> bool:
    """Does this nsg speak sd_notify (READY=1 and WATCHDOG=1)? Then nsg.service is Type=notify."""
    text = "".join(p.read_text(errors="replace") for p in (src / "nsg").rglob("*.py"))
    return "READY=1" in text and "WATCHDOG=1" in text


# --- filesystems ----------------------------------------------------------------------------


def make_ext4(out: Path, size: int, tree: Path, *, label: str | None, journal: bool, reserved: int) -> None:
    argv = ["mkfs.ext4", "-q", "-F", "-b", "4096", "-m", str(reserved), "-U", str(uuid.uuid4()), "-d", str(tree),
            "-E", "root_owner=0:0"]
    if label:
        argv += ["-L", label]
    if not journal:
        argv += ["-O", "^has_journal"]
    subprocess.run([*argv, str(out), f"{size // 1024}k"], check=True, stdout=sys.stderr)  # stdout: the report


def root_fs_size(tree: Path) -> int:
    """A root filesystem just big enough: the tree's 4 KiB blocks, plus room for ext4's own metadata
    (inode tables, bitmaps, directories' slack) and a margin, in whole 4 MiB. The slot's partition
    is bigger (room for later releases); the slot's filesystem is this, and so is a bundle's rootfs."""
    blocks = subprocess.run(["du", "-s", "-x", "--block-size=4096", str(tree)], check=True, capture_output=True,
                            text=True).stdout.split()[0]
    want = int(blocks) * 4096 * 110 // 100 + 64 * 1024 * 1024
    step = 4 * 1024 * 1024
    return -(-want // step) * step


def make_esp(out: Path, size: int, work: Path, env_values: dict[str, str]) -> None:
    """FAT32 (512-byte clusters: 64 MiB is then well above FAT32's cluster minimum) with GRUB for
    UEFI at the removable path, the shared grub.cfg, the environment block and both module sets."""
    stage = work / "esp"
    gdir = stage / layout.ESP_GRUB_DIR
    (stage / "EFI" / "BOOT").mkdir(parents=True)
    gdir.mkdir()
    grub.mkimage("x86_64-efi", stage / layout.ESP_EFI_LOADER, f"/{layout.ESP_GRUB_DIR}")
    (gdir / "grub.cfg").write_text(grub.grub_cfg())
    (gdir / "grubenv").write_bytes(grub.grubenv_block(env_values))
    for fmt in GRUB_DIRS:
        (gdir / fmt).mkdir()
        for f in (grub.GRUB_LIB / fmt).iterdir():
            if f.suffix in (".mod", ".lst"):
                shutil.copy2(f, gdir / fmt / f.name)
    subprocess.run(["mkfs.vfat", "-F", "32", "-s", "1", "-S", "512", "-n", "NSG-ESP", "-C", str(out),
                    str(size // 1024)], check=True, stdout=subprocess.DEVNULL)
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    entries = [str(p) for p in sorted(stage.iterdir())]
    subprocess.run(["mcopy", "-s", "-m", "-i", str(out), *entries, "::/"], check=True, env=env, stdout=sys.stderr)


def data_tree(work: Path) -> Path:
    tree = work / "data"
    for name, mode in layout.DATA_MODES.items():
        (tree / name).mkdir(parents=True)
        os.chmod(tree / name, mode)
    return tree


# --- the disk -------------------------------------------------------------------------------


def sparse_copy(src: Path, dst, offset: int, limit: int) -> int:
    """Copy ``src`` into the open ``dst`` at ``offset``, skipping holes and all-zero MiBs (the disk
    file stays sparse). Returns the bytes written."""
    size = src.stat().st_size
    if size > limit:
        raise BuildError(f"{src.name} ({size} bytes) does not fit its partition ({limit})")
    written = 0
    with src.open("rb") as f:
        fd = f.fileno()
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            f.seek(start)
            while start < end:
                chunk = f.read(min(CHUNK, end - start))
                if chunk.count(0) != len(chunk):
                    dst.seek(offset + start)
                    dst.write(chunk)
                    written += len(chunk)
                start += len(chunk)
            pos = end
    return written


def assemble(out: Path, parts: list[gpt.Partition], disk_size: int, files: dict[str, Path], core: bytes) -> None:
    by_label = {p.label: p for p in parts}
    bios = by_label[layout.LABEL_BIOS]
    with out.open("wb") as f:
        f.truncate(disk_size)
        gpt.write(f, disk_size, parts, boot_code=grub.bios_boot_code(bios.first_lba))
        f.seek(bios.offset)
        f.write(grub.place_core(core, bios.first_lba, bios.size))
        for label, path in files.items():
            sparse_copy(path, f, by_label[label].offset, by_label[label].size)


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def _mounted_under(path: Path) -> list[str]:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == real or p.startswith(real + "/")]


def build(args: argparse.Namespace) -> dict:
    started = time.time()
    phases: dict[str, float] = {}

    def log(msg: str) -> None:
        print(f"[{time.time() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    def phase(name: str, t0: float) -> None:
        phases[name] = round(time.time() - t0, 1)

    if os.geteuid() != 0:
        raise BuildError("needs root (mmdebstrap --mode=root, chroot)")
    if missing := missing_tools():
        raise BuildError(f"missing Debian packages: {' '.join(missing)}")
    src = args.src.resolve()
    version = args.version or source_version(src)
    if not re.fullmatch(r"[0-9A-Za-z.+~_-]+", version):
        raise BuildError(f"version {version!r}: only [0-9A-Za-z.+~_-]")
    out = (args.out or REPO / "build" / f"nsg-{version}-x86_64.img").resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    rootfs_out = (args.rootfs_out or out.with_name(f"nsg-{version}-rootfs.img")).resolve()
    for key in args.release_key:
        if not key.is_file():
            raise BuildError(f"--release-key {key}: no such file")
    opts = RootOptions(kernel=args.kernel, with_qemu=args.with_qemu, compress_modules=not args.no_compress_modules,
                       notify=source_notifies(src), debug_console=args.debug_console)
    if not opts.notify:
        log("nsg does not send sd_notify READY/WATCHDOG: nsg.service becomes Type=exec without a watchdog")
    work = Path(tempfile.mkdtemp(prefix="nsg-image.", dir=args.workdir))
    try:
        t0 = time.time()
        wheel = rootfs.wheelhouse(src, work, log)
        phase("wheels", t0)
        t0 = time.time()
        root = work / "root"
        rootfs.build_root(root, wheel, opts, work, log)
        rootfs.install_release(root, version=version, min_version=args.min_version or version, model=args.model,
                               build=rootfs.git_describe(src), keys=args.release_key)
        if not args.release_key:
            log("no --release-key: this image refuses every upgrade bundle")
        manifest = rootfs.write_manifest(root, image_version=version, model=args.model, src=src, opts=opts,
                                         started=started)
        phase("rootfs", t0)
        t0 = time.time()
        specs = layout.partitions(esp_mib=args.esp_mib, root_mib=args.root_mib, data_mib=args.data_mib)
        parts, disk_size = gpt.plan(specs)
        size = {p.label: p.size for p in parts}
        root_img, esp_img, data_img = rootfs_out, work / "esp.vfat", work / "data.ext4"
        fs_size = root_fs_size(root)
        if fs_size > size[layout.root_label("a")]:
            raise BuildError(f"the root tree needs a {fs_size >> 20} MiB filesystem; the slots have "
                             f"{args.root_mib} MiB (--root-mib)")
        log(f"filesystems: root slot a (ext4 of {fs_size >> 20} MiB, no journal), ESP (FAT32), data (ext4)")
        make_ext4(root_img, fs_size, root, label=None, journal=False, reserved=0)
        make_esp(esp_img, size[layout.LABEL_ESP], work, {layout.ENV_SLOT: layout.DEFAULT_SLOT, layout.ENV_TRY: ""})
        make_ext4(data_img, size[layout.LABEL_DATA], data_tree(work), label=layout.LABEL_DATA, journal=True,
                  reserved=1)
        core = grub.mkimage("i386-pc", work / "core.img", f"(,gpt2)/{layout.ESP_GRUB_DIR}").read_bytes()
        phase("filesystems", t0)
        t0 = time.time()
        log(f"disk: {out}")
        tmp = out.with_name(out.name + ".tmp")
        log(f"root slot image (for `make bundle`): {rootfs_out}")
        assemble(tmp, parts, disk_size, {layout.LABEL_ESP: esp_img, layout.root_label("a"): root_img,
                                         layout.LABEL_DATA: data_img}, core)
        os.replace(tmp, out)
        out.with_suffix(".manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        phase("disk", t0)
        used = subprocess.run(["du", "-sb", "--apparent-size", str(root)], check=True, capture_output=True,
                              text=True).stdout.split()[0]
        report = {
            "image": str(out), "version": version, "apparent_bytes": out.stat().st_size,
            "allocated_bytes": allocated(out), "root_tree_bytes": int(used),
            "rootfs": str(rootfs_out), "rootfs_bytes": fs_size, "rootfs_allocated_bytes": allocated(root_img),
            "partitions": {p.label: p.size for p in parts},
            "packages": len(manifest["packages"]), "python_packages": len(manifest["python"]),
            "kernels": manifest["image"]["kernels"], "sd_notify": opts.notify,
            "nsg_commit": manifest["nsg"]["commit"], "build_seconds": round(time.time() - started, 1),
            "phases": phases,
        }
        log(f"done: {report['allocated_bytes'] / 1e6:.0f} MB allocated, {report['apparent_bytes'] / 1e6:.0f} MB "
            f"apparent, in {report['build_seconds']} s")
        return report
    finally:
        if args.keep_work:
            log(f"work directory kept: {work}")
        elif busy := _mounted_under(work):
            log(f"NOT removing {work}: still mounted: {busy}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m image.build", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="the disk image (default: build/nsg-VERSION-x86_64.img)")
    p.add_argument("--version", help="image version (default: nsg's __version__)")
    p.add_argument("--src", type=Path, default=REPO, help="the nsg source tree to build the wheel from")
    p.add_argument("--kernel", choices=sorted(rootfs.KERNELS), default="amd64",
                   help="Debian kernel flavour: amd64 (appliance NICs, SATA, USB) or cloud (VMs only)")
    p.add_argument("--with-qemu", action="store_true", help="also install qemu-system-x86 (VM workloads)")
    p.add_argument("--no-compress-modules", action="store_true", help="keep kernel modules uncompressed")
    p.add_argument("--rootfs-out", type=Path,
                   help="where the root slot's ext4 image also goes (default: build/nsg-VERSION-rootfs.img, what "
                        "`make bundle` signs)")
    p.add_argument("--model", default="nsg-atom-x86_64", help="hardware model in release.json (upgrade bundles "
                                                                "must name the same)")
    p.add_argument("--min-version", help="release.json's min_version: the floor of downgrades (default: --version)")
    p.add_argument("--release-key", type=Path, action="append", default=[], metavar="PEM",
                   help="a release public key the box accepts upgrade bundles from (repeatable)")
    p.add_argument("--debug-console", action="store_true",
                   help="lab images only: root logged in on ttyS0 without a password, emergency shells open")
    p.add_argument("--root-mib", type=int, default=1536, help="size of each root slot")
    p.add_argument("--data-mib", type=int, default=512, help="size of the data partition in the image")
    p.add_argument("--esp-mib", type=int, default=64)
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp"), help="where the temporary tree goes")
    p.add_argument("--keep-work", action="store_true", help="keep the work directory (debugging)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        report = build(args)
    except (BuildError, subprocess.CalledProcessError, OSError) as exc:
        print(f"image.build: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
