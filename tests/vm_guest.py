"""A tiny VM guest for tests: Debian's kernel + a busybox initramfs under qemu's TCG (no usable KVM here,
../shared/PEERS.md). The guest's network comes from the kernel command line (nsg.ip=ADDR/PREFIX,
nsg.gw=ADDR, nsg.mtu=N); once eth0 is configured it prints ``NSG-GUEST-READY <addr>`` on ttyS0 and
serves a one-line page with busybox httpd on port 80. It sends nothing by itself.

The initramfs is written here in Python (newc cpio + gzip): besides the kernel
(linux-image-cloud-amd64) and /bin/busybox (busybox-static) no tool is needed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
from pathlib import Path

KERNEL_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX = Path("/bin/busybox")
QEMU = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
BIOS = Path("/usr/share/seabios/bios-256k.bin")  # what -machine pc boots (seabios, a dependency of qemu-system-x86)
READY = "NSG-GUEST-READY"
HTTP_PORT = 80

# What the NIC needs (Debian's cloud kernel builds virtio, virtio-pci and virtio-net as modules);
# their dependencies come from modules.dep.
NIC_MODULES = ("virtio_pci", "virtio_net")

APPLETS = ("sh", "mount", "mkdir", "cat", "insmod", "ip", "sleep", "httpd", "echo", "ls", "dmesg", "ping")

INIT = r"""#!/bin/sh
export PATH=/bin
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /etc/nsg-modules); do insmod "/lib/modules/$m" || echo "NSG-GUEST-ERROR insmod $m"; done
ip=; gw=; mtu=1500
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        nsg.ip=*) ip="${arg#nsg.ip=}" ;;
        nsg.gw=*) gw="${arg#nsg.gw=}" ;;
        nsg.mtu=*) mtu="${arg#nsg.mtu=}" ;;
    esac
done
n=0
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
ip link set lo up
if ip link set eth0 mtu "$mtu" up && ip addr add "$ip" dev eth0 &&
        { [ -z "$gw" ] || ip route add default via "$gw"; }; then
    echo "NSG-GUEST-NET eth0 $ip mtu $(cat /sys/class/net/eth0/mtu) gw ${gw:-none}"
    mkdir -p /www && echo "nsg-guest ${ip%/*}" > /www/index.html
    httpd -p HTTP_PORT -h /www
    echo "READY ${ip%/*}"
else
    echo "NSG-GUEST-ERROR network ip=$ip gw=$gw mtu=$mtu"
    ip addr
fi
while :; do sleep 3600; done
""".replace("HTTP_PORT", str(HTTP_PORT)).replace("READY ", READY + " ")


class GuestError(RuntimeError):
    pass


def _version_key(path: Path) -> list[tuple[int, int | str]]:
    parts = re.split(r"[.\-+~]", path.name.removeprefix("vmlinuz-"))
    return [(1, int(p)) if p.isdigit() else (0, p) for p in parts]


def guest_kernel() -> Path:
    """The newest /boot/vmlinuz-* (Debian's, with its modules in /lib/modules/<version>)."""
    kernels = sorted(Path("/boot").glob("vmlinuz-*"), key=_version_key)
    if not kernels:
        raise GuestError(f"no guest kernel in /boot: apt-get install {KERNEL_PACKAGE} (deps/apt-packages.txt)")
    return kernels[-1]


def missing() -> list[str]:
    """What the guest lacks here (each line names the Debian package); empty when all is there."""
    out = []
    if not os.access(QEMU, os.X_OK):
        out.append(f"{QEMU} missing (Debian package qemu-system-x86)")
    if not BIOS.exists():
        out.append(f"{BIOS} missing (Debian package seabios, a dependency of qemu-system-x86)")
    if not BUSYBOX.exists():
        out.append(f"{BUSYBOX} missing (Debian package busybox-static)")
    try:
        kernel = guest_kernel()
    except GuestError as exc:
        out.append(str(exc))
    else:
        moddir = Path("/lib/modules") / kernel_version(kernel)
        if not (moddir / "modules.dep").exists():
            out.append(f"{moddir}/modules.dep missing (the modules of {kernel}: Debian package {KERNEL_PACKAGE})")
    return out


def available() -> bool:
    return not missing()


def kernel_version(kernel: Path) -> str:
    return kernel.name.removeprefix("vmlinuz-")


def module_order(moddir: Path, names: tuple[str, ...] = NIC_MODULES) -> list[Path]:
    """The module files for ``names`` and everything they depend on, dependencies first (modules.dep)."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
        by_name[re.sub(r"\.ko(\.[a-z]+)?$", "", mod.rsplit("/", 1)[-1]).replace("-", "_")] = mod
    order: list[str] = []

    def visit(mod: str, stack: tuple[str, ...] = ()) -> None:
        if mod in order:
            return
        if mod in stack:
            raise GuestError(f"dependency cycle in modules.dep: {' -> '.join((*stack, mod))}")
        for d in deps.get(mod, []):
            visit(d, (*stack, mod))
        order.append(mod)

    builtin = (moddir / "modules.builtin").read_text() if (moddir / "modules.builtin").exists() else ""
    for name in names:
        if name in by_name:
            visit(by_name[name])
        elif not re.search(rf"/{name}\.ko\b", builtin.replace("-", "_")):
            raise GuestError(f"module {name} is neither in {moddir}/modules.dep nor built in")
    return [moddir / m for m in order]


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)  # busybox insmod loads plain ELF only
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko.zst"):
        raise GuestError(f"{path}: zstd-compressed modules are not supported")
    return data


class Newc:
    """A minimal writer of the kernel's initramfs format: "newc" cpio (070701), no checksums."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        fields = (self.ino, mode, 0, 0, 2 if mode & 0o040000 else 1, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(name) + 1, 0)
        self.ino += 1
        head = b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
        self.buf.write(head + b"\0" * (-len(head) % 4))
        self.buf.write(data + b"\0" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def build_initramfs(dest: Path, kernel: Path | None = None) -> Path:
    """Write (once; named by the hash of what goes in) the guest's initramfs into directory ``dest``."""
    kernel = kernel or guest_kernel()
    if not BUSYBOX.exists():
        raise GuestError(f"{BUSYBOX} missing: apt-get install busybox-static")
    moddir = Path("/lib/modules") / kernel_version(kernel)
    if not (moddir / "modules.dep").exists():
        raise GuestError(f"{moddir}/modules.dep missing: the modules of {kernel} are not installed")
    mods = [(re.sub(r"\.ko(\.[a-z]+)?$", ".ko", p.name), _module_bytes(p)) for p in module_order(moddir)]
    busybox = BUSYBOX.read_bytes()
    h = hashlib.sha256(INIT.encode() + busybox)
    for name, data in mods:
        h.update(name.encode() + b"\0" + data)
    out = Path(dest) / f"nsg-guest-{h.hexdigest()[:16]}.cpio.gz"
    if out.exists():
        return out
    cpio = Newc()
    for d in ("bin", "dev", "etc", "lib", "lib/modules", "proc", "sys", "tmp", "www"):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.file("bin/busybox", busybox, 0o755)
    for applet in APPLETS:
        cpio.symlink(f"bin/{applet}", "busybox")
    for name, data in mods:
        cpio.file(f"lib/modules/{name}", data)
    cpio.file("etc/nsg-modules", "".join(f"{name}\n" for name, _ in mods).encode())
    cpio.file("init", INIT.encode(), 0o755)
    Path(dest).mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    tmp.write_bytes(gzip.compress(cpio.finish(), compresslevel=6, mtime=0))
    tmp.replace(out)
    return out


def _opt(value: str | Path) -> str:
    return str(value).replace(",", ",,")  # qemu's option syntax: a literal comma is doubled


def qemu_argv(kernel: Path, initrd: Path, *, tap: str, mac: str, ip: str, gw: str, mtu: int,
              memory_mb: int = 256, console_log: Path) -> list[str]:
    """qemu-system-x86_64 for the guest: TCG, no display, serial console into ``console_log``, virtio-net
    on the existing TAP device ``tap`` (opened by name: run it in the TAP's namespace)."""
    if not os.access(QEMU, os.X_OK) or not BIOS.exists():
        raise GuestError("cannot run the guest here: " + "; ".join(m for m in missing() if "qemu" in m))
    # cryptomgr.notests: the crypto self-tests cost ~0.5 s under TCG; ipv6.disable: the guest sends
    # nothing by itself (no DAD, no router solicitations); panic=-1 + -no-reboot: a dead init ends qemu.
    append = (f"console=ttyS0 quiet panic=-1 cryptomgr.notests ipv6.disable=1 "
              f"nsg.ip={ip} nsg.gw={gw} nsg.mtu={mtu}")
    return [
        # pc (not q35, not microvm: Debian's kernel hangs there without a calibration timer), the
        # default qemu64 CPU (boots a little faster under TCG than -cpu max), no option ROM for the NIC.
        QEMU, "-accel", "tcg", "-machine", "pc", "-cpu", "qemu64", "-smp", "1", "-m", str(memory_mb),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-chardev", f"file,id=con0,path={_opt(console_log)}", "-serial", "chardev:con0",
        "-netdev", f"tap,id=n0,ifname={_opt(tap)},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=n0,mac={mac},romfile=",
        "-kernel", str(kernel), "-initrd", str(initrd), "-append", append,
    ]
