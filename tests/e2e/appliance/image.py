"""The appliance image the qemu tests boot: built once per test run and shared (tests/e2e/appliance,
tests/image).

``NSG_IMAGE=FILE`` names one already built (with ``NSG_RELEASE_KEY=FILE.key``, the private key whose
public half the image trusts, for the upgrade tests). Otherwise the image is
build/appliance-test/nsg-VERSION-x86_64.img, built here (as root, ~2 minutes: Debian packages and PyPI
wheels from the registries) with a release key made for it, and reused by later runs while the
tracked source it was built from is unchanged (a digest of `git ls-files -s` and `git diff HEAD`, the
files the image's wheel is made of).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from image.build import missing_tools
from tests.peers import missing_commands

REPO = Path(__file__).resolve().parents[3]
BUILD_DIR = REPO / "build" / "appliance-test"
OVMF = (Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.fd"))
SEABIOS = Path("/usr/share/seabios/bios-256k.bin")


@dataclass(frozen=True)
class Image:
    path: Path
    rootfs: Path | None  # the slot's ext4 (what a bundle carries); None when NSG_IMAGE has none beside it
    release_key: Path | None  # private key the image's /usr/share/nsg/release-keys trusts
    version: str
    built_s: float | None  # seconds this run spent building it (None: reused)


def version() -> str:
    return re.search(r'__version__ = "([^"]+)"', (REPO / "nsg" / "__init__.py").read_text()).group(1)


def missing() -> list[str]:
    """What this machine lacks to boot (and, without NSG_IMAGE, build) the image."""
    out = missing_commands({"qemu-system-x86_64": "qemu-system-x86", "debugfs": "e2fsprogs", "sfdisk": "fdisk",
                            "tcpdump": "tcpdump", "dnsmasq": "dnsmasq-base"})
    for path, pkg in ((OVMF[0], "ovmf"), (SEABIOS, "seabios")):
        if not path.exists():
            out.append(f"{path} not found (Debian package {pkg})")
    if not os.environ.get("NSG_IMAGE"):
        if os.geteuid() != 0:
            out.append("building the image needs root (or NSG_IMAGE=FILE)")
        out += [f"building the image needs Debian package {p}" for p in missing_tools()]
    return out


def source_digest() -> str | None:
    """None outside a git work tree (a source archive, as `make fresh-check` copies): then nothing says
    an image already built is of this source, and it is built again."""
    h = hashlib.sha256()
    for argv in (["git", "ls-files", "-s"], ["git", "diff", "--binary", "HEAD"]):
        try:
            p = subprocess.run(argv, cwd=REPO, capture_output=True, check=False)
        except FileNotFoundError:
            return None
        if p.returncode:
            return None
        h.update(p.stdout)
    return h.hexdigest()


def get() -> Image:
    if os.environ.get("NSG_IMAGE"):
        path = Path(os.environ["NSG_IMAGE"])
        rootfs = path.with_name(path.name.replace("-x86_64.img", "-rootfs.img"))
        key = os.environ.get("NSG_RELEASE_KEY")
        return Image(path, rootfs if rootfs.exists() else None, Path(key) if key else None, version(), None)
    v = version()
    path = BUILD_DIR / f"nsg-{v}-x86_64.img"
    key = BUILD_DIR / "release-keys" / "lab-release.key"
    stamp = BUILD_DIR / "source.sha256"
    digest = source_digest()
    built_s = None
    if not (digest and path.exists() and key.exists() and stamp.exists() and stamp.read_text().strip() == digest):
        BUILD_DIR.mkdir(parents=True, exist_ok=True)
        stamp.unlink(missing_ok=True)
        if not key.exists():
            subprocess.run([sys.executable, "-m", "image.bundle", "keygen", "--out-dir", str(key.parent), "--name",
                            "lab-release"], cwd=REPO, check=True, capture_output=True)
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "image.build", "--out", str(path), "--release-key",
                            str(key.with_suffix(".pem"))], cwd=REPO, capture_output=True, text=True, check=False)
        if p.returncode:
            raise RuntimeError(f"the image build failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
        built_s = round(time.monotonic() - t0, 1)
        try:
            report = json.loads(p.stdout)  # the build's report: its only output on stdout
        except ValueError:
            raise RuntimeError(f"the image build's stdout is not its JSON report: {p.stdout[:500]!r}") from None
        print(json.dumps({"image_build_s": built_s, "image_allocated_mb": round(report["allocated_bytes"] / 1e6),
                          "phases": report.get("phases")}))
        if digest:
            stamp.write_text(digest + "\n")
    return Image(path, BUILD_DIR / f"nsg-{v}-rootfs.img", key, v, built_s)
