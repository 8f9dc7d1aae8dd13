"""Releases for the upgrade tests, made from the image's own root filesystem without another build.

A "respin" is a copy of the slot's ext4 whose /usr/share/nsg/release.json (written by image.bundle's
release-info, as a build writes it) names another version; the broken one also has a daemon that exits
at once (nsg/daemon.py replaced, its bytecode removed), so `nsg run` fails and nsg.service never gets
healthy, while `nsg upgrade settle` (which never imports the daemon) still runs. Written with debugfs
into a sparse copy and checked with e2fsck, so the result is a filesystem a kernel mounts as it would a
built one.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from image.bundle import make_bundle

REPO = Path(__file__).resolve().parents[3]
RELEASE = "/usr/share/nsg/release.json"
DAEMON = "/opt/nsg/venv/lib/python3.11/site-packages/nsg/daemon.py"
BROKEN_DAEMON = b'raise SystemExit("this release is broken on purpose (tests/e2e/appliance/releases.py)")\n'
MODEL = "nsg-atom-x86_64"


def _debugfs(fs: Path, cmds: list[str]) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".debugfs") as script:
        script.write("\n".join(cmds) + "\n")
        script.flush()
        p = subprocess.run(["debugfs", "-w", "-f", script.name, str(fs)], capture_output=True, text=True, check=False)
    if p.returncode or "Could not" in p.stderr or "not found" in p.stderr:
        raise RuntimeError(f"debugfs on {fs}: {p.stderr.strip()[-800:]}")


def respin(rootfs: Path, out: Path, version: str, *, min_version: str = "0.1.0", broken: bool = False) -> Path:
    subprocess.run(["cp", "--sparse=always", str(rootfs), str(out)], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        release = Path(tmp) / "release.json"
        subprocess.run([sys.executable, "-m", "image.bundle", "release-info", "--version", version, "--min-version",
                        min_version, "--model", MODEL, "--build", f"respin of {rootfs.name}", "--out", str(release)],
                       cwd=REPO, check=True, capture_output=True)
        cmds = [f"rm {RELEASE}", f"write {release} {RELEASE}", f"sif {RELEASE} mode 0100644"]
        if broken:
            daemon = Path(tmp) / "daemon.py"
            daemon.write_bytes(BROKEN_DAEMON)
            pyc = str(Path(DAEMON).parent / "__pycache__" / "daemon.cpython-311.pyc")
            cmds += [f"rm {DAEMON}", f"write {daemon} {DAEMON}", f"sif {DAEMON} mode 0100644", f"rm {pyc}"]
        _debugfs(out, cmds)
    fsck = subprocess.run(["e2fsck", "-fn", str(out)], capture_output=True, text=True, check=False)
    if fsck.returncode:
        raise RuntimeError(f"{out}: e2fsck after the respin: {fsck.stdout[-600:]}")
    return out


def bundle(rootfs: Path, work: Path, key: Path, version: str, *, broken: bool = False) -> Path:
    """A signed bundle of a respin of ``rootfs`` as ``version`` (the respun filesystem is removed after)."""
    fs = respin(rootfs, work / f"rootfs-{version}.img", version, broken=broken)
    out = work / f"nsg-{version}-{MODEL}.nsgb"
    try:
        make_bundle(fs, out, key, version=version, min_version="0.1.0", model=MODEL)
    finally:
        fs.unlink()
    return out
