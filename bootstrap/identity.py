"""The device's identities: the factory IDevID (from the manufacturer) and the LDevID (from the
controller's EST CA), kept in the state directory.

The store's interface is deliberately narrow — the serial, the certificates, and "sign these
bytes" / "give me a TLS context" — so a TPM-backed store can replace the file store without
callers noticing. Private keys are files of mode 0600 in a directory of mode 0700.
"""

from __future__ import annotations

import datetime
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DMI_SERIAL = Path("/sys/class/dmi/id/product_serial")
# Values firmware vendors put in DMI when nobody set a serial.
_DMI_PLACEHOLDERS = {"", "0", "none", "default string", "to be filled by o.e.m.", "not specified",
                     "system serial number", "0123456789"}


class IdentityError(RuntimeError):
    """The identity store is missing or inconsistent (a local fault)."""


class IdentityStore(Protocol):
    def serial(self) -> str: ...
    def idevid(self) -> x509.Certificate: ...
    def ldevid(self) -> x509.Certificate | None: ...
    def tls_context(self, purpose: str, cafile: Path | None = None) -> ssl.SSLContext: ...
    def private_key(self, which: str) -> ec.EllipticCurvePrivateKey: ...
    def store_ldevid(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None: ...


def write_private(path: Path, data: bytes) -> None:
    """Create the file 0600 from the start (no window where it is readable by others)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def serial_of(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    if not attrs:
        raise IdentityError("certificate has no serialNumber in its subject")
    return str(attrs[0].value)


@dataclass
class FileIdentityStore:
    directory: Path

    def _path(self, name: str) -> Path:
        return self.directory / name

    def serial(self) -> str:
        return serial_of(self.idevid())

    def idevid(self) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(self._path("idevid.pem").read_bytes())
        except (OSError, ValueError) as exc:
            raise IdentityError(f"no factory identity in {self.directory} ({exc}); run `nsg factory-init`") from None

    def ldevid(self) -> x509.Certificate | None:
        try:
            return x509.load_pem_x509_certificate(self._path("ldevid.pem").read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise IdentityError(f"ldevid.pem does not parse: {exc}") from None

    def private_key(self, which: str) -> ec.EllipticCurvePrivateKey:
        if which not in ("idevid", "ldevid"):
            raise IdentityError(f"unknown key {which!r}")
        path = self._path(f"{which}.key")
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise IdentityError(f"{path} is mode {oct(mode)}; private keys must be 0600")
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise IdentityError(f"{path} is not an EC key")
        return key

    def tls_context(self, purpose: str, cafile: Path | None = None) -> ssl.SSLContext:
        """A client context presenting the IDevID ("idevid") or LDevID ("ldevid"); server certificates
        are always verified, against ``cafile`` or the system store."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cafile) if cafile else None)
        ctx.load_cert_chain(str(self._path(f"{purpose}.pem")), str(self._path(f"{purpose}.key")))
        return ctx

    def store_ldevid(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        """Atomically: key first (0600), then the certificate that makes it current."""
        tmp_key, tmp_cert = self._path("ldevid.key.tmp"), self._path("ldevid.pem.tmp")
        write_private(tmp_key, _pem_key(key))
        tmp_cert.write_bytes(_pem_cert(cert))
        os.replace(tmp_key, self._path("ldevid.key"))
        os.replace(tmp_cert, self._path("ldevid.pem"))


# --- factory (labs and image builds) ---------------------------------------------------------


def make_manufacturer_ca(directory: Path, name: str = "nsg lab manufacturer") -> tuple[ec.EllipticCurvePrivateKey,
                                                                                         x509.Certificate]:
    """Load or create the (lab) manufacturer CA that signs IDevIDs."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path, cert_path = directory / "manufacturer.key", directory / "manufacturer.pem"
    if key_path.exists() and cert_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key, x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nsg"),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256()))
    write_private(key_path, _pem_key(key))
    cert_path.write_bytes(_pem_cert(cert))
    return key, cert


def factory_init(state_dir: Path, serial: str, manufacturer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
                 *, years: int = 20, force: bool = False) -> x509.Certificate:
    """Give a device its IDevID: a key made here and a certificate naming its serial."""
    if not serial or len(serial) > 64 or not serial.isprintable():
        raise IdentityError(f"serial {serial!r} must be 1-64 printable characters")
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if (state_dir / "idevid.pem").exists() and not force:
        raise IdentityError(f"{state_dir} already holds a factory identity (use --force to replace it)")
    ca_key, ca_cert = manufacturer
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nsg"),
                         x509.NameAttribute(NameOID.COMMON_NAME, serial),
                         x509.NameAttribute(NameOID.SERIAL_NUMBER, serial)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365 * years))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    write_private(state_dir / "idevid.key", _pem_key(key))
    (state_dir / "idevid.pem").write_bytes(_pem_cert(cert))
    (state_dir / "manufacturer-ca.pem").write_bytes(_pem_cert(ca_cert))
    return cert


def discover_serial(dmi: Path = DMI_SERIAL, store: FileIdentityStore | None = None,
                    aws_instance_id: str | None = None) -> tuple[str, str]:
    """(serial, where it came from): DMI first, else the IDevID, else the AWS instance ID."""
    try:
        value = dmi.read_text(errors="replace").strip()
    except OSError:
        value = ""
    if value.lower() not in _DMI_PLACEHOLDERS and value.isprintable() and len(value) <= 64:
        return value, "dmi"
    if store is not None:
        try:
            return store.serial(), "idevid"
        except IdentityError:
            pass
    if aws_instance_id:
        return aws_instance_id, "aws-instance-id"
    raise IdentityError("no serial number: DMI has none, there is no IDevID and no AWS instance ID")
