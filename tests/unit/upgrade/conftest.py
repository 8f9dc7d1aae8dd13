"""A box in a temporary directory: GRUB env, kernel command line, release info, release keys, and two
regular files standing in for the root slot partitions (by-partlabel links)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from image.bundle import generate_key, make_bundle
from nsg.upgrade.grubenv import GrubEnv, create_env, read_env, write_env
from nsg.upgrade.install import Box
from nsg.upgrade.manifest import ReleaseInfo

MODEL = "nsg-atom-x86_64"
SLOT_SIZE = 512 * 1024
ROOTFS_SIZE = 200 * 1024 + 123  # not a multiple of the chunk size


def fake_ext4(size: int = ROOTFS_SIZE, seed: bytes = b"new") -> bytes:
    """Deterministic bytes with the ext4 superblock magic where image.bundle looks for it."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        counter += 1
    out = out[:size]
    out[1080:1082] = b"\x53\xef"
    return bytes(out)


@dataclass
class FakeBox:
    box: Box
    root: Path
    keys: Path  # the release private key
    other_key: Path  # a key whose public half the box does not have

    @property
    def slot_a(self) -> Path:
        return self.root / "dev" / "slot-a"

    @property
    def slot_b(self) -> Path:
        return self.root / "dev" / "slot-b"

    def env(self) -> GrubEnv:
        return read_env(self.box.grubenv)

    def snapshot(self) -> tuple[bytes, bytes, bytes]:
        """What must not change when a bundle is refused: the env block and both slots."""
        return self.box.grubenv.read_bytes(), self.slot_a.read_bytes(), self.slot_b.read_bytes()

    def bundle(self, name: str = "b.nsgb", *, version: str = "1.3.0", min_version: str = "1.0.0",
               model: str = MODEL, key: Path | None = None, rootfs: bytes | None = None) -> Path:
        img = self.root / f"{name}.rootfs"
        img.write_bytes(rootfs if rootfs is not None else fake_ext4(seed=version.encode()))
        out = self.root / name
        make_bundle(img, out, key or self.keys, version=version, min_version=min_version, model=model)
        return out

    def boot(self) -> str:
        """What grub.cfg (image/grub.py) does at a reset: boot nsg_try once (clearing it first), else nsg_slot."""
        env = self.env()
        slot = env.get("nsg_try") or env.get("nsg_slot")
        if env.get("nsg_try"):
            write_env(self.box.grubenv, env.set("nsg_try", ""))
        self.box.cmdline.write_text(f"BOOT_IMAGE=/boot/vmlinuz root=PARTLABEL=nsg-root-{slot} ro nsg.slot={slot}\n")
        return slot

    def release(self, version: str, min_version: str = "1.0.0") -> None:
        self.box.release.write_bytes(ReleaseInfo(model=MODEL, version=version, min_version=min_version).to_json())


@pytest.fixture(scope="session")
def release_keys(tmp_path_factory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("keys")
    key, pub = generate_key(d / "release", "release-2025")
    other, _ = generate_key(d / "other", "stranger")
    return key, pub, other


@pytest.fixture
def tbox(tmp_path, release_keys) -> FakeBox:
    key, pub, other = release_keys
    root = tmp_path
    (root / "dev").mkdir()
    (root / "by-partlabel").mkdir()
    for slot, fill in (("a", b"A"), ("b", b"B")):
        (root / "dev" / f"slot-{slot}").write_bytes(fill * SLOT_SIZE)
        os.symlink(root / "dev" / f"slot-{slot}", root / "by-partlabel" / f"nsg-root-{slot}")
    (root / "keys").mkdir()
    (root / "keys" / pub.name).write_bytes(pub.read_bytes())
    (root / "esp").mkdir()
    box = Box(grubenv=root / "esp" / "grubenv", cmdline=root / "cmdline", release=root / "release.json",
              keys_dir=root / "keys", state_dir=root / "data", partlabel_dir=root / "by-partlabel")
    create_env(box.grubenv, GrubEnv().set("nsg_slot", "a").set("nsg_try", ""))
    box.cmdline.write_text("BOOT_IMAGE=/boot/vmlinuz root=PARTLABEL=nsg-root-a ro nsg.slot=a\n")
    tb = FakeBox(box, root, key, other)
    tb.release("1.2.0")
    return tb
