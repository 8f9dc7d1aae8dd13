"""`nsg-image factory`: what a factory station does to one box. It copies the built image (sparse)
and writes into the copy's data partition the box's factory identity, the way nsg keeps it
(bootstrap/identity.py): /var/lib/nsg/identity/ (0700) with idevid.key (0600), idevid.pem and
manufacturer-ca.pem, owned by root. The IDevID names the box's serial and is signed by the
manufacturer CA given here. One build, many boxes, each its own identity.

The data partition is changed in place inside the copy with debugfs (at the partition's offset):
no loop device, no mount, no root needed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from image import gpt, layout

# where nsg's identity store is inside the data filesystem (/data/nsg = /var/lib/nsg on the box)
IDENTITY_DIR = "/nsg/identity"
IDENTITY_FILES = {"idevid.key": 0o100600, "idevid.pem": 0o100644, "manufacturer-ca.pem": 0o100644}


class FactoryError(RuntimeError):
    """The box cannot be made from these inputs (a local fault: the image, the CA, the serial)."""


def load_ca(cert_path: Path, key_path: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise FactoryError(f"manufacturer CA: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise FactoryError(f"{key_path}: not an EC private key")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():
        raise FactoryError(f"{key_path} is not the key of {cert_path}")
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise FactoryError(f"{cert_path} is not a CA certificate")
    return key, cert


def data_partition(image: Path) -> gpt.Partition:
    with image.open("rb") as f:
        try:
            return gpt.find(gpt.read(f), layout.LABEL_DATA)
        except gpt.GptError as exc:
            raise FactoryError(f"{image}: {exc}") from None


def _debugfs(target: str, commands: list[str], write: bool = False) -> str:
    """Run debugfs commands; debugfs exits 0 whatever happened, so its stderr is the verdict."""
    with tempfile.NamedTemporaryFile("w", suffix=".debugfs") as script:
        script.write("\n".join(commands) + "\n")
        script.flush()
        p = subprocess.run(["debugfs", *(["-w"] if write else []), "-f", script.name, target],
                           capture_output=True, text=True, check=False)
    errors = [line for line in p.stderr.splitlines() if line.strip() and not line.startswith("debugfs ")]
    if p.returncode or errors:
        raise FactoryError(f"debugfs on {target}: {'; '.join(errors) or p.returncode}")
    return p.stdout


def _read(target: str, path: str) -> bytes:
    p = subprocess.run(["debugfs", "-R", f"cat {path}", target], capture_output=True, check=False)
    if p.returncode:
        raise FactoryError(f"debugfs: cannot read {path}: {p.stderr.decode(errors='replace')[-200:]}")
    return p.stdout


def _exists(target: str, path: str) -> bool:
    p = subprocess.run(["debugfs", "-R", f"stat {path}", target], capture_output=True, text=True, check=False)
    return p.returncode == 0 and "Inode:" in p.stdout


def make_box(image: Path, out: Path, serial: str, ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], *,
             force: bool = False) -> dict:
    from bootstrap.identity import IdentityError, factory_init

    if out.exists() and not force:
        raise FactoryError(f"{out} exists (use --force to replace it)")
    if out.resolve() == image.resolve():
        raise FactoryError("--out must not be the image itself")
    part = data_partition(image)
    tmp_out = out.with_name(out.name + ".tmp")
    try:
        subprocess.run(["cp", "--sparse=always", str(image), str(tmp_out)], check=True)
        target = f"{tmp_out}?offset={part.offset}"
        if _exists(target, f"{IDENTITY_DIR}/idevid.pem") and not force:
            raise FactoryError(f"{image} already holds a factory identity (a box's image, not a build?); --force "
                               "replaces it")
        with tempfile.TemporaryDirectory(prefix="nsg-factory.") as tmp:
            ident = Path(tmp) / "identity"
            try:
                cert = factory_init(ident, serial, ca)
            except IdentityError as exc:
                raise FactoryError(str(exc)) from None
            cmds = [] if _exists(target, IDENTITY_DIR) else [f"mkdir {IDENTITY_DIR}"]
            cmds += [f"sif {IDENTITY_DIR} mode 040700", f"sif {IDENTITY_DIR} uid 0", f"sif {IDENTITY_DIR} gid 0"]
            for name, mode in IDENTITY_FILES.items():
                dst = f"{IDENTITY_DIR}/{name}"
                if _exists(target, dst):
                    cmds.append(f"rm {dst}")
                cmds += [f"write {ident / name} {dst}", f"sif {dst} mode {mode:#o}".replace("0o", "0"),
                         f"sif {dst} uid 0", f"sif {dst} gid 0"]
            _debugfs(target, cmds, write=True)
            for name in IDENTITY_FILES:  # read back what the box will read
                if _read(target, f"{IDENTITY_DIR}/{name}") != (ident / name).read_bytes():
                    raise FactoryError(f"{name} read back from the data partition differs from what was written")
        fsck = subprocess.run(["e2fsck", "-fn", target], capture_output=True, text=True, check=False)
        if fsck.returncode:
            raise FactoryError(f"data filesystem inconsistent after writing: {fsck.stdout[-400:]}")
        os.replace(tmp_out, out)
    finally:
        tmp_out.unlink(missing_ok=True)
    return {"box": str(out), "serial": serial, "idevid_issuer": cert.issuer.rfc4514_string(),
            "idevid_serial_number": format(cert.serial_number, "x"),
            "not_after": cert.not_valid_after_utc.isoformat(), "data_partition_offset": part.offset}


def add_factory_parser(sub) -> argparse.ArgumentParser:
    f = sub.add_parser("factory", help="copy an image and write one box's IDevID into the copy's data partition")
    f.add_argument("image", type=Path, help="the built image (build/nsg-VERSION-x86_64.img)")
    f.add_argument("--serial", required=True, help="the box's serial number (1-64 printable characters)")
    f.add_argument("--idevid-ca", type=Path, required=True, help="manufacturer CA certificate (PEM)")
    f.add_argument("--idevid-ca-key", type=Path, required=True, help="its private key (PEM, EC, unencrypted)")
    f.add_argument("--out", type=Path, required=True, help="the box's disk image (a sparse copy)")
    f.add_argument("--force", action="store_true", help="replace --out, or an identity already in the image")
    return f


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="nsg-image", description="nsg disk images: factory step")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    add_factory_parser(sub)
    args = p.parse_args(argv)
    if shutil.which("debugfs") is None or shutil.which("e2fsck") is None:
        print("nsg-image: needs debugfs and e2fsck (Debian package e2fsprogs)", file=sys.stderr)
        return 1
    try:
        ca = load_ca(args.idevid_ca, args.idevid_ca_key)
        doc = make_box(args.image, args.out, args.serial, ca, force=args.force)
    except (FactoryError, OSError, subprocess.CalledProcessError) as exc:
        print(f"nsg-image factory: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
