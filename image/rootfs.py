"""The root tree of an nsg image: Debian 12 packages through mmdebstrap, nsg and its Python
dependencies in /opt/nsg/venv (a wheel of this project, the rest from PyPI as wheels), the files of
image/rootfs/, and the manifest that records what went in.

Everything runs inside mmdebstrap's hooks (it mounts /proc, /sys and /dev for them and removes
them again), so the builder never mounts anything itself.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from image.layout import DATA_BINDS

OVERLAY = Path(__file__).with_name("rootfs")
CONSTRAINTS = "deps/python-constraints.txt"  # the pinned runtime dependencies (relative to the source tree)
SUITE = "bookworm"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
KERNELS = {"amd64": "linux-image-amd64", "cloud": "linux-image-cloud-amd64"}
PACKAGES = (
    "systemd-sysv", "udev", "kmod", "dbus", "initramfs-tools",  # init; dbus: docker's systemd cgroup driver
    "iproute2", "nftables", "busybox",  # ip/tc/bridge, nft, udhcpc
    "python3", "python3-venv",  # /opt/nsg/venv (python3.11, as on the build host)
    "ca-certificates", "e2fsprogs", "fdisk",  # fdisk: sfdisk, to grow the data partition at first boot
    "docker.io",  # tenant containers
    # the hypervisor's agent (guest-exec): started by udev only when a virtio port named
    # org.qemu.guest_agent.0 exists, i.e. under qemu/KVM; a physical box or EC2 has none
    "qemu-guest-agent",
)
QEMU_PACKAGES = ("qemu-system-x86",)  # VM workloads (optional: --with-qemu)
# Kernel modules the box needs (nsg's probes and docker): the build fails if one is missing.
REQUIRED_MODULES = ("esp4", "xfrm_user", "xfrm_algo", "gcm", "vxlan", "bridge", "nf_tables", "nft_meta_bridge",
                    "sch_htb", "ifb", "tun", "veth", "overlay", "cls_u32", "sch_tbf", "act_mirred", "sch_ingress")
# Module trees no gateway uses: sound, graphics, cameras/TV, wireless, bluetooth, infiniband, ...
MODULE_PRUNE = ("sound", "drivers/gpu", "drivers/media", "drivers/infiniband", "drivers/net/wireless",
                "net/wireless", "net/mac80211", "net/bluetooth", "drivers/bluetooth", "drivers/iio",
                "drivers/staging", "drivers/isdn", "drivers/net/can", "net/can", "drivers/nfc", "net/nfc",
                "drivers/input/touchscreen", "drivers/input/joystick", "drivers/hwmon/pmbus", "drivers/comedi")
# Files left out at unpack time (dpkg path-exclude): documentation, and docker's/containerd's test
# and debugging tools (dnet, ovrouter, ctr) and legacy shims docker 20.10 does not use.
PATH_EXCLUDES = (
    "/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*", "/usr/share/lintian/*",
    "/usr/share/zsh/*", "/usr/share/bug/*",
    "/usr/bin/dnet", "/usr/sbin/ovrouter", "/usr/bin/ctr", "/usr/bin/containerd-shim",
    "/usr/bin/containerd-shim-runc-v1",
    *(f"/lib/modules/*/kernel/{d}/*" for d in MODULE_PRUNE),  # bookworm's packages still say /lib
)
PATH_INCLUDES = ("/usr/share/doc/*/copyright", "/usr/share/locale/locale.alias")
# Timers and services that make no sense on a read-only root (apt, dpkg backups, e2scrub of LVM).
DISABLE = ("apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
           "e2scrub_reap.service")
ENABLE = ("nsg.service", "nsg-ready.service", "nsg-upgrade-settle.service", "nsg-grow-data.service",
          "serial-getty@ttyS0.service")
VENV = "/opt/nsg/venv"
MANIFEST = "/usr/share/nsg/manifest.json"
RELEASE_INFO = "/usr/share/nsg/release.json"  # nsg.upgrade.paths.RELEASE_FILE: what this slot runs
RELEASE_KEYS = "/usr/share/nsg/release-keys"  # nsg.upgrade.paths.KEYS_DIR: who may sign upgrades
# CPython 3.11 on glibc 2.36 (bookworm). pip does not widen a given manylinux tag to older glibcs:
# every tag the target accepts is listed, newest first (pip prefers earlier ones).
WHEEL_PLATFORM = (*(a for v in range(36, 16, -1) for a in ("--platform", f"manylinux_2_{v}_x86_64")),
                  "--platform", "manylinux2014_x86_64", "--platform", "manylinux2010_x86_64",
                  "--platform", "manylinux1_x86_64",
                  "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "--abi", "abi3",
                  "--abi", "none", "--only-binary=:all:")


class BuildError(RuntimeError):
    """The image cannot be built here (a local fault: a tool, a package, the source tree)."""


@dataclass(frozen=True)
class RootOptions:
    kernel: str = "amd64"
    with_qemu: bool = False
    compress_modules: bool = True
    notify: bool = True  # nsg speaks sd_notify (READY=1, WATCHDOG=1): nsg.service is Type=notify
    debug_console: bool = False  # root logged in on ttyS0, emergency shells open (lab images only)


def source_files(src: Path) -> list[str]:
    """The files of the project as git sees them (tracked, and new files not ignored): what a
    clean checkout of this working tree holds. Without git: everything but venvs and builds."""
    if (src / ".git").exists():
        out = subprocess.run(["git", "-C", str(src), "ls-files", "-z", "-c", "-o", "--exclude-standard"],
                             check=True, capture_output=True).stdout
        return [f for f in out.decode().split("\0") if f and (src / f).is_file()]
    skip = {".venv", "build", ".git", "__pycache__"}
    return [str(p.relative_to(src)) for p in src.rglob("*") if p.is_file() and not skip & set(p.relative_to(src).parts)]


def git_info(src: Path) -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(src), *args], check=True, capture_output=True, text=True).stdout.strip()

    if not (src / ".git").exists():
        return {"commit": None, "dirty": None}
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def wheelhouse(src: Path, out: Path, log) -> Path:
    """nsg's wheel (from a copy of the source files, so the build leaves no build/ or egg-info in
    the tree) and every dependency as a binary wheel for CPython 3.11 on glibc 2.36 (bookworm), at the
    version deps/python-constraints.txt pins (what the test suite ran with)."""
    copy = out / "src"
    for rel in source_files(src):
        dst = copy / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dst)
    wh = out / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    log("wheel: building nsg")
    # stdout is the build's JSON report: what the tools say goes to stderr, with the log
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wh), str(copy)], check=True, stdout=sys.stderr)
    wheels = list(wh.glob("nsg-*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"expected one nsg wheel, got {wheels}")
    log("wheel: downloading dependencies (PyPI, binary wheels only, the versions deps/python-constraints.txt pins)")
    subprocess.run([*pip, "download", "-d", str(wh), *WHEEL_PLATFORM, "-c", str(src / CONSTRAINTS), str(wheels[0])],
                   check=True, stdout=sys.stderr)
    return wheels[0]


def _sh(*argv: str) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def mmdebstrap_argv(root: Path, wheel: Path, opts: RootOptions) -> list[str]:
    pkgs = [KERNELS[opts.kernel], *PACKAGES, *(QEMU_PACKAGES if opts.with_qemu else ())]
    wh = wheel.parent
    hooks = [
        # the image's own files, then nsg into its venv from the wheelhouse only (no index)
        f'cp -a --no-preserve=ownership {shlex.quote(str(OVERLAY))}/. "$1/"',
        f'mkdir -p "$1/tmp/nsg-wheels" && cp {shlex.quote(str(wh))}/*.whl "$1/tmp/nsg-wheels/"',
        f'chroot "$1" python3 -m venv {VENV}',
        'chroot "$1" ' + _sh(f"{VENV}/bin/pip", "install", "-q", "--no-index", "--no-cache-dir",
                             "--disable-pip-version-check", "--find-links", "/tmp/nsg-wheels",
                             f"/tmp/nsg-wheels/{wheel.name}"),
        'rm -rf "$1/tmp/nsg-wheels"',
        # a read-only root never installs anything: pip and setuptools go (23 MB)
        'chroot "$1" ' + _sh(f"{VENV}/bin/python", "-m", "pip", "uninstall", "-q", "-y", "pip", "setuptools"),
        # mount points of the read-only root (fstab)
        'mkdir -p "$1/data" "$1/boot/efi" ' + " ".join(f'"$1{p}"' for p in DATA_BINDS.values()),
        # logind's StateDirectory: systemd cannot create it on a read-only root, but takes it as it is
        'mkdir -p -m 0755 "$1/var/lib/systemd/linger"',
        f'ln -sf {VENV}/bin/nsg "$1/usr/local/sbin/nsg"',
        'chroot "$1" systemctl disable -q ' + " ".join(DISABLE),
        'chroot "$1" systemctl enable -q ' + " ".join(ENABLE),
        'chroot "$1" systemctl set-default -q multi-user.target',
    ]
    if not opts.notify:  # the daemon does not notify yet: a plain service, no watchdog
        hooks.append('mkdir -p "$1/etc/systemd/system/nsg.service.d" && printf "%s\\n" "[Service]" "Type=exec" '
                     '"WatchdogSec=0" > "$1/etc/systemd/system/nsg.service.d/no-notify.conf"')
    if opts.debug_console:
        hooks.append(_debug_console_hook())
    if opts.compress_modules:  # xz as the kernel's own `make modules_install` would; kmod reads them
        hooks.append('find "$1"/usr/lib/modules -name "*.ko" -print0 | xargs -0 -r -P "$(nproc)" -n 64 '
                     'xz --check=crc32 --lzma2=dict=1MiB -T1')
    hooks += [
        'for v in $(ls "$1/usr/lib/modules"); do chroot "$1" depmod -a "$v"; done',
        'chroot "$1" update-initramfs -u -k all >/dev/null',
        # the slot's kernel and initrd under the fixed names grub.cfg boots (relative links)
        'cd "$1/boot" && ln -sf "$(ls vmlinuz-* | sort -V | tail -1)" vmlinuz'
        ' && ln -sf "$(ls initrd.img-* | sort -V | tail -1)" initrd.img',
        # a read-only root: empty machine-id (systemd makes a transient one per boot), no host leftovers
        ': > "$1/etc/machine-id"; ln -sf /etc/machine-id "$1/var/lib/dbus/machine-id"',
        'ln -sf ../run/nsg/resolv.conf "$1/etc/resolv.conf"',
        'rm -rf "$1"/var/log/* "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/tmp/* "$1"/var/tmp/*',
    ]
    argv = ["mmdebstrap", "--mode=root", "--variant=minbase", "--format=directory", "--include=" + ",".join(pkgs),
            # usr-is-merged from the start: else apt takes init-system-helpers' `usrmerge | usr-is-merged`
            # as usrmerge, and that brings all of perl (55 MB)
            "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
            "--aptopt=APT::Install-Recommends false",
            *(f"--dpkgopt=path-exclude={p}" for p in PATH_EXCLUDES),
            *(f"--dpkgopt=path-include={p}" for p in PATH_INCLUDES),
            *(f"--customize-hook={h}" for h in hooks),
            SUITE, str(root), *MIRRORS]
    return argv


def _debug_console_hook() -> str:
    files = {
        "serial-getty@ttyS0.service.d/autologin.conf":
            "[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 "
            "%I $TERM\n",
        "emergency.service.d/open.conf": "[Service]\nEnvironment=SYSTEMD_SULOGIN_FORCE=1\n",
        "rescue.service.d/open.conf": "[Service]\nEnvironment=SYSTEMD_SULOGIN_FORCE=1\n",
    }
    return " && ".join(f'mkdir -p "$1/etc/systemd/system/{Path(name).parent}" && printf %s {shlex.quote(text)} '
                       f'> "$1/etc/systemd/system/{name}"' for name, text in files.items())


def build_root(root: Path, wheel: Path, opts: RootOptions, work: Path, log) -> None:
    log(f"rootfs: mmdebstrap {SUITE} ({opts.kernel} kernel{', qemu' if opts.with_qemu else ''})")
    env = dict(os.environ, LC_ALL="C.UTF-8")
    env.pop("PYTHONPATH", None)
    with (work / "mmdebstrap.log").open("w") as logf:
        p = subprocess.run(mmdebstrap_argv(root, wheel, opts), stdout=logf, stderr=subprocess.STDOUT, env=env,
                           check=False)
    if p.returncode:
        tail = (work / "mmdebstrap.log").read_text(errors="replace").splitlines()[-25:]
        raise BuildError("mmdebstrap failed:\n  " + "\n  ".join(tail))
    check_modules(root)


def check_modules(root: Path) -> None:
    missing = []
    for kdir in (root / "usr/lib/modules").iterdir():
        dep = (kdir / "modules.dep").read_text()
        have = {Path(line.split(":", 1)[0]).name.split(".ko")[0].replace("-", "_") for line in dep.splitlines()}
        builtin = (kdir / "modules.builtin").read_text() if (kdir / "modules.builtin").exists() else ""
        have |= {Path(x).name.split(".ko")[0].replace("-", "_") for x in builtin.split()}
        missing += [f"{kdir.name}:{m}" for m in REQUIRED_MODULES if m not in have]
    if missing:
        raise BuildError(f"kernel modules missing: {', '.join(missing)}")


def _dpkg_packages(status: Path) -> dict[str, str]:
    pkgs, name, version, installed = {}, None, None, False
    for line in [*status.read_text().splitlines(), ""]:
        if not line:
            if name and version and installed:
                pkgs[name] = version
            name, version, installed = None, None, False
        elif line.startswith("Package: "):
            name = line.split(": ", 1)[1]
        elif line.startswith("Version: "):
            version = line.split(": ", 1)[1]
        elif line.startswith("Status: "):
            installed = line.endswith(" installed")
    return dict(sorted(pkgs.items()))


def _python_packages(root: Path) -> dict[str, str]:
    """pip freeze, read from the venv's dist-info directories (no interpreter of the image needed)."""
    out = {}
    for meta in (root / VENV.lstrip("/")).glob("lib/python3*/site-packages/*.dist-info/METADATA"):
        fields = {}
        for line in meta.read_text(errors="replace").splitlines():
            if not line:
                break
            k, _, v = line.partition(": ")
            fields.setdefault(k, v)
        out[fields["Name"]] = fields["Version"]
    return dict(sorted(out.items(), key=lambda kv: kv[0].lower()))


def install_release(root: Path, *, version: str, min_version: str, model: str, build: str,
                    keys: list[Path]) -> None:
    """release.json (through image.bundle, the writer the bundles' manifests share) and the release
    public keys the box verifies upgrade bundles with."""
    out = root / RELEASE_INFO.lstrip("/")
    subprocess.run([sys.executable, "-m", "image.bundle", "release-info", "--version", version, "--min-version",
                    min_version, "--model", model, "--build", build, "--out", str(out)], check=True,
                   cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.DEVNULL)
    kdir = root / RELEASE_KEYS.lstrip("/")
    kdir.mkdir(parents=True, exist_ok=True)
    for key in keys:
        if b"PUBLIC KEY" not in key.read_bytes():
            raise BuildError(f"{key}: not a PEM public key (the box must never hold a release private key)")
        shutil.copyfile(key, kdir / key.name)
        os.chmod(kdir / key.name, 0o644)


def git_describe(src: Path) -> str:
    if not (src / ".git").exists():
        return ""
    return subprocess.run(["git", "-C", str(src), "describe", "--always", "--dirty"], capture_output=True, text=True,
                          check=False).stdout.strip()


def write_manifest(root: Path, *, image_version: str, model: str, src: Path, opts: RootOptions,
                   started: float) -> dict:
    kernels = sorted(p.name for p in (root / "usr/lib/modules").iterdir())
    keys = sorted(p.name for p in (root / RELEASE_KEYS.lstrip("/")).glob("*.pem"))
    doc = {
        "image": {"name": "nsg", "version": image_version, "model": model, "arch": "x86_64", "release_keys": keys,
                  "built": datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat(timespec="seconds"),
                  "builder": "image/build.py", "suite": SUITE, "mirrors": list(MIRRORS), "variant": "minbase",
                  "kernel_flavour": opts.kernel, "kernels": kernels, "with_qemu": opts.with_qemu,
                  "modules_compressed": opts.compress_modules, "modules_pruned": list(MODULE_PRUNE),
                  "sd_notify": opts.notify, "debug_console": opts.debug_console},
        "nsg": {"version": _python_packages(root).get("nsg"), **git_info(src)},
        "packages": _dpkg_packages(root / "var/lib/dpkg/status"),
        "python": _python_packages(root),
    }
    path = root / MANIFEST.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return doc
