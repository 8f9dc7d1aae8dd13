"""`python -m image.bundle`: release keys, the release info of a root filesystem, signed upgrade bundles.

    keygen        --out-dir DIR [--name NAME]     a release key pair: NAME.key (private, 0600), NAME.pem
    release-info  --version V --min-version M --model MODEL --out ROOT/usr/share/nsg/release.json
    make          --rootfs ROOTFS.img --version V --min-version M --model MODEL --key KEY --out FILE
    verify        FILE --keys-dir DIR [--model MODEL]

The format and its verification are nsg.upgrade.bundle's (the box runs that code); this module only
writes it. The private key is an unencrypted PKCS#8 PEM readable by its owner only: keep it off build
machines that do not release (an HSM-backed signer can replace sign() without changing the format).
Bundles are reproducible: the same rootfs, versions, key and --created give the same tar bytes up to
the signature (ECDSA signatures are randomised).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from nsg.upgrade.bundle import ECDSA, MANIFEST, ROOTFS, SIGNATURE, key_id, load_release_keys, verify_file
from nsg.upgrade.errors import UpgradeError
from nsg.upgrade.manifest import Manifest, ReleaseInfo, Rootfs

EXT4_MAGIC_OFFSET, EXT4_MAGIC = 1080, b"\x53\xef"  # the superblock (at 1024) s_magic 0xEF53, little endian
CHUNK = 1 << 20


class BuildError(Exception):
    """The release engineer's input is wrong (a missing file, a key of the wrong type)."""


def generate_key(out_dir: Path, name: str = "release") -> tuple[Path, Path]:
    key_path, pub_path = out_dir / f"{name}.key", out_dir / f"{name}.pem"
    for p in (key_path, pub_path):
        if p.exists():
            raise BuildError(f"{p} exists; a release key is never overwritten")
    out_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_path, pub_path


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise BuildError(f"cannot load the release key {path}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise BuildError(f"{path} is not an ECDSA P-256 private key")
    return key


def sign(manifest: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.sign(manifest, ECDSA)  # DER


def digest(path: Path) -> tuple[int, str]:
    h, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def check_ext4(path: Path) -> None:
    try:
        with path.open("rb") as f:
            f.seek(EXT4_MAGIC_OFFSET)
            magic = f.read(2)
    except OSError as exc:
        raise BuildError(f"cannot read the rootfs {path}: {exc.strerror}") from None
    if magic != EXT4_MAGIC:
        raise BuildError(f"{path} is not an ext2/3/4 image (no superblock magic at byte {EXT4_MAGIC_OFFSET})")


def make_manifest(rootfs: Path, *, version: str, min_version: str, model: str, build: str = "", notes: str = "",
                  created: datetime | None = None) -> Manifest:
    check_ext4(rootfs)
    size, sha = digest(rootfs)
    try:
        return Manifest(model=model, version=version, min_version=min_version, build=build, notes=notes,
                        created=created or datetime.now(UTC).replace(microsecond=0),
                        rootfs=Rootfs(size=size, sha256=sha))
    except ValidationError as exc:
        raise BuildError(f"invalid manifest: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None


def write_bundle(out: Path, manifest: bytes, signature: bytes, rootfs: Path, mtime: int) -> None:
    """The tar, members in the order the box reads them; written to a temporary file, then renamed."""
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with tmp.open("wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tf:
            tf.addfile(_info(MANIFEST, len(manifest), mtime), io.BytesIO(manifest))
            tf.addfile(_info(SIGNATURE, len(signature), mtime), io.BytesIO(signature))
            with rootfs.open("rb") as img:
                tf.addfile(_info(ROOTFS, rootfs.stat().st_size, mtime), img)
            tf.close()
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:  # cleanup only: re-raised
        tmp.unlink(missing_ok=True)
        raise


def _info(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = size, mtime, 0o644, 0, 0, "", ""
    return ti


def make_bundle(rootfs: Path, out: Path, key_path: Path, **fields) -> tuple[Manifest, str]:
    """Build and sign; returns the manifest and the signing key's id."""
    key = load_private_key(key_path)
    manifest = make_manifest(rootfs, **fields)
    raw = manifest.to_json()
    write_bundle(out, raw, sign(raw, key), rootfs, int(manifest.created.timestamp()))
    return manifest, key_id(key.public_key())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m image.bundle", description="nsg release keys and upgrade bundles")
    sub = p.add_subparsers(dest="cmd", required=True)
    kg = sub.add_parser("keygen", help="create a release key pair (NAME.key private 0600, NAME.pem public)")
    kg.add_argument("--out-dir", type=Path, required=True)
    kg.add_argument("--name", default="release")
    for name, what in (("make", "build and sign a bundle"), ("release-info", "write a rootfs's release.json")):
        sp = sub.add_parser(name, help=what)
        sp.add_argument("--version", required=True, help="this release, MAJOR.MINOR.PATCH[-PRE][+BUILD]")
        sp.add_argument("--min-version", required=True, help="the oldest release compatible with this one")
        sp.add_argument("--model", required=True, help="hardware model, e.g. nsg-atom-x86_64")
        sp.add_argument("--build", default="", help="where it was built from (e.g. `git describe`)")
        sp.add_argument("--out", type=Path, required=True)
    mk = sub.choices["make"]
    mk.add_argument("--rootfs", type=Path, required=True, help="the ext4 image of a root slot")
    mk.add_argument("--key", type=Path, required=True, help="the release private key (PEM)")
    mk.add_argument("--notes", default="", help="release notes or their URL")
    mk.add_argument("--created", type=datetime.fromisoformat, help="ISO 8601 with zone (default: now)")
    vf = sub.add_parser("verify", help="verify a bundle's signature and image hash")
    vf.add_argument("file", type=Path)
    vf.add_argument("--keys-dir", type=Path, required=True, help="directory of release public keys (*.pem)")
    vf.add_argument("--model", help="also require this hardware model")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "keygen":
            key_path, pub_path = generate_key(args.out_dir, args.name)
            print(f"{key_path} (private, keep it secret), {pub_path} (put it in /usr/share/nsg/release-keys/)")
        elif args.cmd == "release-info":
            try:
                info = ReleaseInfo(model=args.model, version=args.version, min_version=args.min_version,
                                   build=args.build)
            except ValidationError as exc:
                raise BuildError(f"invalid release info: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_bytes(info.to_json())
            print(f"{args.out}: {info.model} {info.version} (min {info.min_version})")
        elif args.cmd == "make":
            m, kid = make_bundle(args.rootfs, args.out, args.key, version=args.version, min_version=args.min_version,
                                 model=args.model, build=args.build, notes=args.notes, created=args.created)
            print(f"{args.out}: {m.model} {m.version} (min {m.min_version}), rootfs {m.rootfs.size} bytes "
                  f"sha256 {m.rootfs.sha256}, signed by key {kid}")
        else:
            def model_check(m: Manifest) -> None:
                if args.model and m.model != args.model:
                    raise BuildError(f"bundle is for model {m.model}, not {args.model}")
            v = verify_file(args.file, load_release_keys(args.keys_dir), check=model_check)
            m = v.manifest
            print(f"{args.file}: ok: {m.model} {m.version} (min {m.min_version}) built {m.created.isoformat()} "
                  f"{m.build}; signed by {v.key.path.name} ({v.key.key_id}); rootfs sha256 {m.rootfs.sha256}")
    except (BuildError, UpgradeError) as exc:
        print(f"image.bundle: {args.cmd}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
