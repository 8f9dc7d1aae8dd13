"""The controller's certificate authority: it turns a gateway's PKCS#10 request into its LDevID.

The CA is an ECDSA P-256 key and a self-signed certificate kept in one directory (mode 0700):

    <dir>/ca.key.pem   PKCS#8, mode 0600, refused at load if group/other can read it
    <dir>/ca.crt.pem   the trust anchor gateways and peers get (EST /cacerts, RFC 7030 4.1)

Issuing trusts the request for two things only: its public key (after checking the request's
self-signature, RFC 2986 section 3, which proves possession of the private key) and the device
serial in the subject, which must equal what the caller authorised. Everything else the gateway
might ask for — other subject attributes, requested extensions — is ignored; the subject, the
subjectAltName (the gateway's system IP, the IKE identity of RFC 7296 3.5), the key usages and
the validity are chosen here.

Sans-IO apart from load_or_create(): issue() takes the clock as an argument so tests control time.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KEY_FILE = "ca.key.pem"
CERT_FILE = "ca.crt.pem"

# Tuning, not protocol.
CA_LIFETIME = datetime.timedelta(days=3650)
BACKDATE = datetime.timedelta(minutes=5)  # tolerate gateways whose clock is a little behind
CRL_VALIDITY = datetime.timedelta(days=30)  # nextUpdate; a new list goes out with every revocation
MIN_RSA_BITS = 2048
ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)
MAX_SERIAL_LEN = 64  # X.520 ub-serial-number

# X.680 PrintableString alphabet; other serials are encoded as UTF8String.
_PRINTABLE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CaError(RuntimeError):
    """The CA's own files are missing, unreadable or inconsistent (a local fault of the controller)."""


class CsrRejected(ValueError):
    """The gateway's request cannot be honoured (a remote fault). ``code`` says why, for the HTTP
    layer to map: "encoding", "signature", "key" (bad requests) or "serial" (not authorised)."""

    def __init__(self, reason: str, code: str):
        super().__init__(reason)
        self.reason = reason
        self.code = code


def subject_serial(name: x509.Name) -> str | None:
    """The subject's serialNumber attribute (IEEE 802.1AR DevID convention); None if absent or repeated."""
    attrs = name.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    if len(attrs) != 1:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else None


def device_subject(serial: str) -> x509.Name:
    """The subject we give every device certificate: serialNumber=<serial>, CN=<serial>."""
    kind = _ASN1Type.PrintableString if set(serial) <= _PRINTABLE else _ASN1Type.UTF8String
    return x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, serial, _type=kind),
                      x509.NameAttribute(NameOID.COMMON_NAME, serial)])


def _check_public_key(key: object) -> None:
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ALLOWED_CURVES):
            raise CsrRejected(f"EC curve {key.curve.name} is not accepted (P-256 or P-384)", "key")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CsrRejected(f"RSA key of {key.key_size} bits is too short (minimum {MIN_RSA_BITS})", "key")
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        raise CsrRejected(f"public key type {type(key).__name__} is not accepted", "key")


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` via a temporary file created with ``mode`` (no readable window)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # also if a stale .tmp existed with other permissions
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class CertificateAuthority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    # --- files -----------------------------------------------------------------------------------

    @classmethod
    def load_or_create(cls, directory: Path, *, common_name: str = "nsg controller CA",
                       now: datetime.datetime | None = None) -> CertificateAuthority:
        """Load the CA from ``directory``, creating key and certificate on first use.

        A key without its certificate (or the reverse) is an error rather than a reason to make a
        new CA: a new CA would silently orphan every LDevID already issued.
        """
        directory = Path(directory)
        key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
        have_key, have_cert = key_path.exists(), cert_path.exists()
        if have_key and have_cert:
            return cls.load(directory)
        if have_key or have_cert:
            missing = cert_path if have_key else key_path
            raise CaError(f"CA directory {directory} is incomplete: {missing} is missing; "
                          "restore it from backup (making a new CA would invalidate every issued LDevID)")
        ca = cls.create(common_name=common_name, now=now)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Key first, certificate last: the certificate's presence marks a complete CA directory.
        _write_atomic(key_path, ca.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()), 0o600)
        _write_atomic(cert_path, ca.cert_pem, 0o644)
        return ca

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        directory = Path(directory)
        key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
        try:
            mode = key_path.stat().st_mode & 0o777
            if mode & 0o077:
                raise CaError(f"{key_path} is mode {oct(mode)}; the CA private key must be 0600")
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except OSError as exc:
            raise CaError(f"cannot read the CA from {directory}: {exc.strerror} ({exc.filename})") from None
        except (ValueError, TypeError) as exc:
            raise CaError(f"CA files in {directory} do not parse: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CaError(f"{key_path} is not an EC private key")
        if cert.public_key() != key.public_key():
            raise CaError(f"{cert_path} does not belong to the key in {key_path}")
        return cls(key, cert)

    @classmethod
    def create(cls, *, common_name: str = "nsg controller CA",
               now: datetime.datetime | None = None) -> CertificateAuthority:
        """A fresh self-signed CA in memory (load_or_create() persists one)."""
        now = now or datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nsg"),
                          x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - BACKDATE).not_valid_after(now + CA_LIFETIME)
                # path_length=0: this CA issues device certificates only, never other CAs.
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                                             key_cert_sign=True, crl_sign=True, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(ski, critical=False)
                .sign(key, hashes.SHA256()))
        return cls(key, cert)

    # --- trust anchor ------------------------------------------------------------------------------

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def cacerts_der(self) -> bytes:
        """The CA certificate as a degenerate CMS SignedData ("certs-only"), RFC 7030 4.1.3."""
        return pkcs7.serialize_certificates([self.cert], serialization.Encoding.DER)

    def issued(self, cert: x509.Certificate, *, now: datetime.datetime | None = None) -> bool:
        """True if ``cert`` is an end-entity certificate this CA signed and it is valid at ``now``."""
        now = now or datetime.datetime.now(datetime.UTC)
        if cert.issuer != self.cert.subject:
            return False
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc

    # --- revocation ---------------------------------------------------------------------------------

    def crl(self, revoked: Iterable[tuple[int, datetime.datetime]], *, now: datetime.datetime | None = None,
            valid_for: datetime.timedelta = CRL_VALIDITY) -> bytes:
        """A CRL (RFC 5280 section 5) of (certificate serial number, revocation time), signed by this CA,
        as PEM. Gateways get it with every config and refuse the listed certificates in IKE_AUTH."""
        now = now or datetime.datetime.now(datetime.UTC)
        b = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
             .last_update(now - BACKDATE).next_update(now + valid_for)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False))
        for serial, when in revoked:
            b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial)
                                          .revocation_date(when).build())
        return b.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    # --- issuing -----------------------------------------------------------------------------------

    def issue(self, csr: x509.CertificateSigningRequest | bytes, *, serial_expected: str,
              lifetime: datetime.timedelta, san_ip: IPAddress | str | None = None,
              now: datetime.datetime | None = None) -> x509.Certificate:
        """Issue a device certificate for ``csr`` (an object or DER bytes).

        Raises CsrRejected if the request does not parse, its signature does not verify, its key is
        unacceptable, or its subject serialNumber is not ``serial_expected``.
        """
        if not serial_expected or len(serial_expected) > MAX_SERIAL_LEN or not serial_expected.isprintable():
            raise ValueError(f"serial_expected {serial_expected!r} must be 1-{MAX_SERIAL_LEN} printable characters")
        if lifetime <= datetime.timedelta(0):
            raise ValueError(f"lifetime must be positive, not {lifetime}")
        if isinstance(csr, bytes | bytearray):
            try:
                csr = x509.load_der_x509_csr(bytes(csr))
            except ValueError as exc:
                raise CsrRejected(f"not a DER PKCS#10 request: {exc}", "encoding") from None
        # Proof of possession: the request is signed with the key it carries (RFC 2986 section 3).
        try:
            signature_ok = csr.is_signature_valid
        except (ValueError, TypeError, x509.UnsupportedGeneralNameType) as exc:
            raise CsrRejected(f"request signature cannot be checked: {exc}", "signature") from None
        if not signature_ok:
            raise CsrRejected("request signature does not verify with its own public key", "signature")
        try:
            public_key = csr.public_key()
        except (ValueError, x509.UnsupportedGeneralNameType) as exc:
            raise CsrRejected(f"request public key does not parse: {exc}", "key") from None
        _check_public_key(public_key)
        asked = subject_serial(csr.subject)
        if asked is None:
            raise CsrRejected("request subject needs exactly one serialNumber attribute", "serial")
        if asked != serial_expected:
            raise CsrRejected(f"request is for serial {asked!r}, but the client is authorised as "
                              f"{serial_expected!r}", "serial")

        now = now or datetime.datetime.now(datetime.UTC)
        not_after = min(now + lifetime, self.cert.not_valid_after_utc)  # never outlive the CA
        is_rsa = isinstance(public_key, rsa.RSAPublicKey)
        builder = (x509.CertificateBuilder()
                   .subject_name(device_subject(serial_expected))
                   .issuer_name(self.cert.subject)
                   .public_key(public_key)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - BACKDATE).not_valid_after(not_after)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   # keyEncipherment only matters for RSA key transport (TLS 1.2 RSA key exchange).
                   .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                key_encipherment=is_rsa, data_encipherment=False,
                                                key_agreement=False, key_cert_sign=False, crl_sign=False,
                                                encipher_only=False, decipher_only=False), critical=True)
                   # The LDevID is a TLS client identity (channel, EST, images) and an IKE identity, which
                   # needs no extended key usage (RFC 4945 5.1.3.12); a gateway serves no TLS: no serverAuth.
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                                  critical=False))
        if san_ip is not None:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(san_ip))]), critical=False)
        return builder.sign(self.key, hashes.SHA256())
