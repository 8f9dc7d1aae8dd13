"""Throwaway X.509 credentials for IKEv2 pubkey tests: a CA and ECDSA P-256 / RSA-2048 end-entity certs.

Written as PEM files; private keys are 0600 and in the traditional formats ("EC PRIVATE KEY",
"RSA PRIVATE KEY") so charon's vici load-key gets an explicit key type (see :func:`key_type`).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Credential:
    cert: Path
    key: Path
    identity: str  # what to put in swanctl's local.id / remote.id (the subjectAltName)


def write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)  # also when the file existed with wider permissions


def _new_key(kind: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if kind == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"key kind must be ecdsa or rsa, not {kind!r}")


def _save(directory: Path, stem: str, cert: Any, key: Any) -> Credential:
    from cryptography.hazmat.primitives import serialization

    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{stem}.crt.pem", directory / f"{stem}.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    # Traditional formats ("EC PRIVATE KEY" / "RSA PRIVATE KEY") so vici load-key gets an explicit type.
    write_private(key_path, key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.TraditionalOpenSSL,
                                               serialization.NoEncryption()))
    return Credential(cert_path, key_path, stem)


@dataclass(frozen=True)
class CertificateAuthority:
    credential: Credential
    cert: Any  # cryptography x509.Certificate
    key: Any

    @property
    def cert_path(self) -> Path:
        return self.credential.cert


def make_ca(directory: Path, common_name: str = "nsg interop test CA", kind: str = "ecdsa") -> CertificateAuthority:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = _new_key(kind)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nsg tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return CertificateAuthority(_save(directory, "ca", cert, key), cert, key)


def issue_cert(ca: CertificateAuthority, directory: Path, *, kind: str = "ecdsa", ip: str | None = None,
               dns: str | None = None, stem: str | None = None) -> Credential:
    """An end-entity cert for ``ip`` and/or ``dns`` (subjectAltName); identity = the IP if given, else the DNS."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not (ip or dns):
        raise ValueError("issue_cert needs ip or dns for the subjectAltName")
    identity = ip or dns
    assert identity is not None
    sans: list[x509.GeneralName] = []
    if ip:
        sans.append(x509.IPAddress(ipaddress.ip_address(ip)))
    if dns:
        sans.append(x509.DNSName(dns))
    key = _new_key(kind)
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nsg tests"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
            .issuer_name(ca.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
            .sign(ca.key, hashes.SHA256()))
    cred = _save(directory, stem or f"{kind}-{identity}", cert, key)
    return Credential(cred.cert, cred.key, identity)


def key_type(path: Path) -> str:
    head = path.read_text(errors="replace")[:100]
    if "EC PRIVATE KEY" in head:
        return "ecdsa"
    if "RSA PRIVATE KEY" in head:
        return "rsa"
    return "any"
