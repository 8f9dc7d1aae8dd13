"""CMS SignedData (RFC 5652 section 5): sign, verify, the certs-only form, and the unsigned
ContentInfo wrapper; plus the X.509 path check that says whether a signer is trusted.

What is read and written, with the RFC 5652 sections that define each part:

    ContentInfo ::= SEQUENCE {                                   -- section 3
        contentType           OID (id-signedData),
        content           [0] EXPLICIT SignedData }
    SignedData ::= SEQUENCE {                                    -- section 5.1
        version               INTEGER (1 | 3),
        digestAlgorithms      SET OF AlgorithmIdentifier,
        encapContentInfo      SEQUENCE {                         -- section 5.2
            eContentType      OID,
            eContent      [0] EXPLICIT OCTET STRING OPTIONAL },
        certificates      [0] IMPLICIT SET OF Certificate OPTIONAL,  -- section 10.2.3
        crls              [1] IMPLICIT ... OPTIONAL,             -- parsed, ignored
        signerInfos           SET OF SignerInfo }
    SignerInfo ::= SEQUENCE {                                    -- section 5.3
        version               INTEGER (1: issuerAndSerialNumber, 3: subjectKeyIdentifier),
        sid                   SEQUENCE { issuer Name, serialNumber INTEGER }
                            | [0] IMPLICIT OCTET STRING,
        digestAlgorithm       AlgorithmIdentifier,
        signedAttrs       [0] IMPLICIT SET OF Attribute OPTIONAL,
        signatureAlgorithm    AlgorithmIdentifier,
        signature             OCTET STRING,
        unsignedAttrs     [1] IMPLICIT SET OF Attribute OPTIONAL }  -- parsed, ignored

The signature covers the DER of signedAttrs re-tagged as a universal SET (0x31), exactly as
received (section 5.4); signedAttrs must then carry content-type and message-digest (11.1, 11.2).
Without signedAttrs -- allowed only for id-data -- it covers the content itself.
"""

from __future__ import annotations

import datetime
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bootstrap import der
from bootstrap.errors import CmsError, LocalBootstrapError, Reason, RemoteBootstrapError

# --- RFC constants -----------------------------------------------------------------------------

ID_DATA = "1.2.840.113549.1.7.1"                 # RFC 5652 section 4
ID_SIGNED_DATA = "1.2.840.113549.1.7.2"          # RFC 5652 section 5.1
ID_CONTENT_TYPE = "1.2.840.113549.1.9.3"         # RFC 5652 section 11.1
ID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"       # RFC 5652 section 11.2
ID_SIGNING_TIME = "1.2.840.113549.1.9.5"         # RFC 5652 section 11.3
SHA256 = "2.16.840.1.101.3.4.2.1"                # RFC 5754 section 2
SHA384 = "2.16.840.1.101.3.4.2.2"
SHA512 = "2.16.840.1.101.3.4.2.3"
ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2"        # RFC 5758 section 3.2, RFC 5753 section 7.1.3
ECDSA_WITH_SHA384 = "1.2.840.10045.4.3.3"
ECDSA_WITH_SHA512 = "1.2.840.10045.4.3.4"
ID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"           # some signers name the key, not the scheme
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"          # RFC 3370 section 3.2
SHA256_WITH_RSA = "1.2.840.113549.1.1.11"        # RFC 5754 section 3.2
SHA384_WITH_RSA = "1.2.840.113549.1.1.12"
SHA512_WITH_RSA = "1.2.840.113549.1.1.13"

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {SHA256: hashes.SHA256, SHA384: hashes.SHA384,
                                                  SHA512: hashes.SHA512}
_DIGEST_BY_NAME = {"sha256": SHA256, "sha384": SHA384, "sha512": SHA512}
# Signature algorithms that fix their hash: it must equal the SignerInfo's digestAlgorithm.
_ECDSA = {ECDSA_WITH_SHA256: SHA256, ECDSA_WITH_SHA384: SHA384, ECDSA_WITH_SHA512: SHA512}
_RSA = {SHA256_WITH_RSA: SHA256, SHA384_WITH_RSA: SHA384, SHA512_WITH_RSA: SHA512}
# Names for error messages only (RFC 5652, RFC 8366 section 8.3, RFC 8572 section 10.3).
_OID_NAMES = {ID_DATA: "id-data", ID_SIGNED_DATA: "id-signedData", "1.2.840.113549.1.7.3": "id-envelopedData",
              "1.2.840.113549.1.9.16.1.40": "id-ct-animaJSONVoucher",
              "1.2.840.113549.1.9.16.1.42": "id-ct-sztpConveyedInfoXML",
              "1.2.840.113549.1.9.16.1.43": "id-ct-sztpConveyedInfoJSON"}

# --- tuning ------------------------------------------------------------------------------------

MAX_CHAIN_DEPTH = 8

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
# A trust callback gets the signer and all certificates the CMS carried; it accepts by returning
# exactly True (anything else rejects) and may raise a RemoteBootstrapError of its own.
TrustCheck = Callable[[x509.Certificate, tuple[x509.Certificate, ...]], bool]


def oid_name(oid: str) -> str:
    return f"{_OID_NAMES[oid]} ({oid})" if oid in _OID_NAMES else oid


@dataclass(frozen=True)
class VerifiedCms:
    content: bytes
    content_type: str
    signer: x509.Certificate
    certs: tuple[x509.Certificate, ...]       # every certificate the CMS carried, in its order
    signing_time: datetime.datetime | None


@dataclass(frozen=True)
class _SignerInfo:
    version: int
    issuer: bytes | None       # DER Name, with serial: issuerAndSerialNumber
    serial: int | None
    ski: bytes | None          # or subjectKeyIdentifier
    digest: str
    signed_attrs: der.Tlv | None
    signature_algorithm: str
    signature: bytes


@dataclass(frozen=True)
class _SignedData:
    content_type: str
    content: bytes | None
    certificates: tuple[bytes, ...]
    signers: tuple[_SignerInfo, ...]


# --- parsing -----------------------------------------------------------------------------------


def _content_info(data: bytes) -> tuple[str, der.Tlv]:
    """(contentType, the single element inside content [0] EXPLICIT)."""
    f = der.Fields(der.parse(data, "ContentInfo"), "ContentInfo")
    content_type = der.as_oid(f.take(der.OBJECT_IDENTIFIER, "contentType"), "ContentInfo.contentType")
    wrapper = f.take(der.CONTEXT | der.CONSTRUCTED | 0, "content")
    f.end()
    inner = der.children(wrapper, "ContentInfo.content")
    if len(inner) != 1:
        raise CmsError(f"ContentInfo.content holds {len(inner)} elements, expected 1")
    return content_type, inner[0]


def _algorithm(tlv: der.Tlv, what: str) -> str:
    """AlgorithmIdentifier; we use none with parameters other than absent or NULL."""
    items = der.children(der.expect(tlv, der.SEQUENCE, what), what)
    if not items:
        raise CmsError(f"{what}: empty AlgorithmIdentifier")
    oid = der.as_oid(items[0], f"{what}.algorithm")
    if len(items) > 2 or (len(items) == 2 and items[1].tag != der.NULL):
        raise CmsError(f"{what}: algorithm {oid} with parameters is not supported", reason=Reason.UNSUPPORTED_CMS)
    if len(items) == 2:
        der.as_null(items[1], f"{what}.parameters")
    return oid


def _signer_info(tlv: der.Tlv, what: str) -> _SignerInfo:
    f = der.Fields(tlv, what)
    version = der.as_int(f.take(der.INTEGER, "version"), f"{what}.version")
    issuer = serial = ski = None
    by_name = f.maybe(der.SEQUENCE)
    if by_name is not None:
        g = der.Fields(by_name, f"{what}.issuerAndSerialNumber")
        issuer = g.take(der.SEQUENCE, "issuer").encoded
        serial = der.as_int(g.take(der.INTEGER, "serialNumber"), f"{what}.serialNumber")
        g.end()
    else:
        ski = f.take(der.CONTEXT | 0, "sid").content
        if not ski:
            raise CmsError(f"{what}: empty subjectKeyIdentifier")
    if version != (1 if by_name is not None else 3):
        raise CmsError(f"{what}: version {version} does not go with its signer identifier (RFC 5652 5.3)")
    digest = _algorithm(f.take(der.SEQUENCE, "digestAlgorithm"), f"{what}.digestAlgorithm")
    signed_attrs = f.maybe(der.CONTEXT | der.CONSTRUCTED | 0)
    algorithm = _algorithm(f.take(der.SEQUENCE, "signatureAlgorithm"), f"{what}.signatureAlgorithm")
    signature = der.as_octets(f.take(der.OCTET_STRING, "signature"), f"{what}.signature")
    unsigned = f.maybe(der.CONTEXT | der.CONSTRUCTED | 1)
    if unsigned is not None:
        der.children(unsigned, f"{what}.unsignedAttrs")
    f.end()
    return _SignerInfo(version, issuer, serial, ski, digest, signed_attrs, algorithm, signature)


def _signed_data(body: der.Tlv) -> _SignedData:
    f = der.Fields(body, "SignedData")
    version = der.as_int(f.take(der.INTEGER, "version"), "SignedData.version")
    if version not in (1, 3):
        raise CmsError(f"SignedData version {version}: only 1 and 3 are supported (no attribute certificates)",
                       reason=Reason.UNSUPPORTED_CMS)
    for i, alg in enumerate(der.children(f.take(der.SET, "digestAlgorithms"), "SignedData.digestAlgorithms")):
        _algorithm(alg, f"SignedData.digestAlgorithms[{i}]")
    encap = der.Fields(f.take(der.SEQUENCE, "encapContentInfo"), "EncapsulatedContentInfo")
    content_type = der.as_oid(encap.take(der.OBJECT_IDENTIFIER, "eContentType"), "eContentType")
    wrapper = encap.maybe(der.CONTEXT | der.CONSTRUCTED | 0)
    encap.end()
    content = None
    if wrapper is not None:
        inner = der.children(wrapper, "eContent")
        if len(inner) != 1:
            raise CmsError(f"eContent holds {len(inner)} elements, expected one OCTET STRING")
        content = der.as_octets(inner[0], "eContent")
    certificates: list[bytes] = []
    certs_tlv = f.maybe(der.CONTEXT | der.CONSTRUCTED | 0)
    if certs_tlv is not None:
        # CertificateChoices other than a plain Certificate (tagged [0]..[3]) cannot name a
        # signer we could verify with; they are skipped rather than refused.
        certificates = [c.encoded for c in der.children(certs_tlv, "SignedData.certificates") if c.tag == der.SEQUENCE]
    crls = f.maybe(der.CONTEXT | der.CONSTRUCTED | 1)
    if crls is not None:
        der.children(crls, "SignedData.crls")
    signer_tlvs = der.children(f.take(der.SET, "signerInfos"), "SignedData.signerInfos")
    f.end()
    signers = tuple(_signer_info(t, f"SignerInfo[{i}]") for i, t in enumerate(signer_tlvs))
    return _SignedData(content_type, content, tuple(certificates), signers)


def _parse_signed(data: bytes, expected: str | None) -> _SignedData:
    content_type, body = _content_info(data)
    if content_type != ID_SIGNED_DATA:
        if content_type == expected:
            raise CmsError(f"{oid_name(expected)} arrived unsigned; signed data is required", reason=Reason.UNSIGNED)
        raise CmsError(f"ContentInfo holds {oid_name(content_type)}, expected {oid_name(ID_SIGNED_DATA)}",
                       reason=Reason.WRONG_CONTENT_TYPE)
    return _signed_data(body)


def load_certificates(blobs: Sequence[bytes], what: str = "certificate") -> tuple[x509.Certificate, ...]:
    out: list[x509.Certificate] = []
    for i, blob in enumerate(blobs):
        try:
            cert = x509.load_der_x509_certificate(blob)
            # cryptography parses some parts lazily; touch them now, so that a malformed
            # certificate fails here as a remote fault and not later as a surprise.
            _touched = (cert.version, cert.public_key(), cert.subject, cert.issuer, cert.extensions)
        except (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion, x509.DuplicateExtension,
                x509.UnsupportedGeneralNameType) as exc:
            # TypeError: cryptography's verdict on a name attribute of the wrong ASN.1 type;
            # DuplicateExtension (found by the fuzz test) is not a ValueError either
            raise CmsError(f"{what} {i + 1} does not parse: {exc}", reason=Reason.BAD_CERTIFICATE) from None
        if cert not in out:
            out.append(cert)
    return tuple(out)


def issuer_der(cert: x509.Certificate) -> bytes:
    """The issuer Name exactly as encoded in the certificate (RFC 5280 4.1): what
    issuerAndSerialNumber must repeat, byte for byte."""
    f = der.Fields(der.parse(cert.tbs_certificate_bytes, "tbsCertificate"), "tbsCertificate")
    f.maybe(der.CONTEXT | der.CONSTRUCTED | 0)  # version
    f.take(der.INTEGER, "serialNumber")
    f.take(der.SEQUENCE, "signature")
    return f.take(der.SEQUENCE, "issuer").encoded


def _subject_key_id(cert: x509.Certificate) -> bytes:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest  # type: ignore[arg-type]
    except ValueError as exc:
        raise CmsError(f"certificate extensions do not parse: {exc}", reason=Reason.BAD_CERTIFICATE) from None


def _find_signer(info: _SignerInfo, candidates: Sequence[x509.Certificate]) -> x509.Certificate:
    for cert in candidates:
        if info.ski is not None:
            if hmac.compare_digest(_subject_key_id(cert), info.ski):
                return cert
        elif cert.serial_number == info.serial and issuer_der(cert) == info.issuer:
            return cert
    sid = f"subjectKeyIdentifier {info.ski.hex()}" if info.ski is not None else f"serial {info.serial}"
    raise RemoteBootstrapError(f"no certificate for the signer ({sid}) among the {len(candidates)} available",
                               reason=Reason.SIGNER_NOT_FOUND)


def _single_attribute(attrs: dict[str, list[der.Tlv]], oid: str, name: str) -> der.Tlv | None:
    values = attrs.get(oid)
    if values is None:
        return None
    if len(values) != 1:
        raise CmsError(f"signed attribute {name} must have exactly one value, has {len(values)} (RFC 5652 11)",
                       reason=Reason.BAD_ATTRIBUTES)
    return values[0]


def _attributes(tlv: der.Tlv) -> dict[str, list[der.Tlv]]:
    out: dict[str, list[der.Tlv]] = {}
    for i, attr in enumerate(der.children(tlv, "signedAttrs")):
        f = der.Fields(attr, f"signedAttrs[{i}]")
        oid = der.as_oid(f.take(der.OBJECT_IDENTIFIER, "attrType"), f"signedAttrs[{i}].attrType")
        values = der.children(f.take(der.SET, "attrValues"), f"signedAttrs[{i}].attrValues")
        f.end()
        if oid in out:
            raise CmsError(f"signed attribute {oid} appears twice (RFC 5652 11)", reason=Reason.BAD_ATTRIBUTES)
        out[oid] = values
    return out


def _check_signature(signer: x509.Certificate, info: _SignerInfo, signed: bytes) -> None:
    algorithm, digest = info.signature_algorithm, info.digest
    fixed = _ECDSA.get(algorithm) or _RSA.get(algorithm)
    if fixed is not None and fixed != digest:
        raise CmsError(f"signature algorithm {algorithm} does not use the digest algorithm {digest}",
                       reason=Reason.BAD_SIGNATURE)
    hash_alg = _HASHES[digest]()
    key = signer.public_key()
    try:
        if algorithm in _ECDSA or algorithm == ID_EC_PUBLIC_KEY:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise CmsError(f"ECDSA signature, but the signer has a {type(key).__name__}",
                               reason=Reason.BAD_SIGNATURE)
            key.verify(info.signature, signed, ec.ECDSA(hash_alg))
        elif algorithm in _RSA or algorithm == RSA_ENCRYPTION:
            if not isinstance(key, rsa.RSAPublicKey):
                raise CmsError(f"RSA signature, but the signer has a {type(key).__name__}",
                               reason=Reason.BAD_SIGNATURE)
            key.verify(info.signature, signed, padding.PKCS1v15(), hash_alg)
        else:
            raise CmsError(f"signature algorithm {algorithm} is not supported (ECDSA and RSA PKCS#1 v1.5 are)",
                           reason=Reason.UNSUPPORTED_CMS)
    except (InvalidSignature, ValueError):
        raise CmsError(f"signature by {signer.subject.rfc4514_string()} does not verify",
                       reason=Reason.BAD_SIGNATURE) from None


def _check_attributes(info: _SignerInfo, content_type: str, content: bytes) -> datetime.datetime | None:
    """RFC 5652 5.3/5.4/11: content-type equals eContentType, message-digest equals our digest
    of the content. Returns the signing-time, if the signer put one in."""
    assert info.signed_attrs is not None
    attrs = _attributes(info.signed_attrs)
    ctype = _single_attribute(attrs, ID_CONTENT_TYPE, "content-type")
    digest = _single_attribute(attrs, ID_MESSAGE_DIGEST, "message-digest")
    if ctype is None or digest is None:
        missing = "content-type" if ctype is None else "message-digest"
        raise CmsError(f"signed attributes lack {missing} (RFC 5652 5.3)", reason=Reason.BAD_ATTRIBUTES)
    claimed = der.as_oid(ctype, "content-type attribute")
    if claimed != content_type:
        raise CmsError(f"content-type attribute says {claimed}, eContentType is {content_type} (RFC 5652 11.1)",
                       reason=Reason.BAD_ATTRIBUTES)
    h = hashes.Hash(_HASHES[info.digest]())
    h.update(content)
    if not hmac.compare_digest(der.as_octets(digest, "message-digest attribute"), h.finalize()):
        raise CmsError("message-digest attribute does not match the content (RFC 5652 5.4): content altered",
                       reason=Reason.DIGEST_MISMATCH)
    when = _single_attribute(attrs, ID_SIGNING_TIME, "signing-time")
    return der.as_time(when, "signing-time attribute") if when is not None else None


def verify(data: bytes, expected_content_type: str, trust: x509.Certificate | TrustCheck, *,
           now: datetime.datetime | None = None, known_certs: Sequence[x509.Certificate] = ()) -> VerifiedCms:
    """Check a DER ContentInfo holding SignedData with one signer over ``expected_content_type``.

    The signer's certificate is looked up among the certificates the CMS carries, then in
    ``known_certs`` (for signers whose certificate travels separately, as in RFC 8572). With a
    certificate as ``trust`` the signer must be it or chain to it at ``now``, through any of
    those certificates; a callable decides for itself. Raises ``RemoteBootstrapError``
    (``CmsError`` for format problems)."""
    if isinstance(trust, x509.Certificate) and now is None:
        raise LocalBootstrapError("checking a chain to a trust anchor needs the current time")
    sd = _parse_signed(data, expected_content_type)
    if sd.content_type != expected_content_type:
        raise CmsError(f"eContentType is {oid_name(sd.content_type)}, expected {oid_name(expected_content_type)}",
                       reason=Reason.WRONG_CONTENT_TYPE)
    if not sd.signers:
        raise CmsError("SignedData has no signer (a certs-only structure)", reason=Reason.UNSIGNED)
    if len(sd.signers) != 1:
        raise CmsError(f"SignedData has {len(sd.signers)} signers; exactly one is supported",
                       reason=Reason.UNSUPPORTED_CMS)
    if sd.content is None:
        raise CmsError("SignedData carries no content (detached signatures are not used here)")
    info = sd.signers[0]
    if info.digest not in _HASHES:
        raise CmsError(f"digest algorithm {info.digest} is not supported (SHA-2 is)", reason=Reason.UNSUPPORTED_CMS)
    certs = load_certificates(sd.certificates)
    signer = _find_signer(info, (*certs, *known_certs))
    if info.signed_attrs is not None:
        signing_time = _check_attributes(info, sd.content_type, sd.content)
        signed = bytes((der.SET,)) + info.signed_attrs.encoded[1:]
    elif sd.content_type == ID_DATA:
        signing_time, signed = None, sd.content
    else:
        raise CmsError("no signed attributes, yet eContentType is not id-data (RFC 5652 5.3)",
                       reason=Reason.BAD_ATTRIBUTES)
    _check_signature(signer, info, signed)
    if isinstance(trust, x509.Certificate):
        assert now is not None
        verify_chain(signer, [c for c in (*certs, *known_certs) if c != signer], trust, now)
    elif trust(signer, certs) is not True:
        raise RemoteBootstrapError(f"signer {signer.subject.rfc4514_string()} is not trusted", reason=Reason.UNTRUSTED)
    return VerifiedCms(sd.content, sd.content_type, signer, certs, signing_time)


def parse_certs_only(data: bytes) -> tuple[x509.Certificate, ...]:
    """The certificates of a degenerate, signer-less SignedData (RFC 5652 5.2 "certs-only",
    as RFC 8572 section 3.2 conveys the owner certificate and 6.3 the trust-anchor), in the
    order received -- which DER makes sorted, so it says nothing about which is the leaf."""
    sd = _parse_signed(data, None)
    if sd.signers:
        raise CmsError(f"expected a certs-only SignedData, found {len(sd.signers)} signer(s)")
    if sd.content is not None:
        raise CmsError("a certs-only SignedData must not carry content")
    if not sd.certificates:
        raise CmsError("certs-only SignedData holds no certificate")
    return load_certificates(sd.certificates)


def decapsulate(data: bytes, expected_content_type: str) -> bytes:
    """The OCTET STRING content of an unsigned ContentInfo of the given type (e.g. RFC 8572
    section 3.1 unsigned conveyed information)."""
    content_type, body = _content_info(data)
    if content_type != expected_content_type:
        raise CmsError(f"ContentInfo holds {oid_name(content_type)}, expected {oid_name(expected_content_type)}",
                       reason=Reason.WRONG_CONTENT_TYPE)
    return der.as_octets(body, "ContentInfo.content")


# --- producing -----------------------------------------------------------------------------------


def _algorithm_id(oid: str, *, null_params: bool = False) -> bytes:
    return der.sequence(der.oid(oid), der.null() if null_params else b"")


def _spki(key: object) -> bytes:
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined]


def _content_info_bytes(content_type: str, inner: bytes) -> bytes:
    return der.sequence(der.oid(content_type), der.context(0, inner))


def encapsulate(content: bytes, content_type: str) -> bytes:
    return _content_info_bytes(content_type, der.octet_string(content))


def _certificate_set(certs: Sequence[x509.Certificate]) -> bytes:
    """certificates [0] IMPLICIT CertificateSet. It is a SET OF, so DER sorts it (X.690 11.6), as
    cryptography does; OpenSSL keeps insertion order. Readers must not depend on the order."""
    return der.context(0, b"".join(sorted({c.public_bytes(Encoding.DER) for c in certs})))


def sign(content: bytes, content_type_oid: str, key: SigningKey, cert: x509.Certificate,
         extra_certs: Sequence[x509.Certificate] = (), *, digest: str = "sha256",
         signing_time: datetime.datetime | None = None, use_ski: bool = False, include_certs: bool = True) -> bytes:
    """DER ContentInfo/SignedData over ``content`` with one signer: ``key``, identified by
    ``cert``'s issuer and serial (or its subjectKeyIdentifier with ``use_ski``). ``cert`` and
    ``extra_certs`` are embedded (in DER order, not the caller's) unless ``include_certs`` is
    false, for a verifier that has the signer's certificate already. Signed attributes: content-type,
    message-digest and, if given, signing-time (RFC 5652 5.3, 11)."""
    digest_oid = _DIGEST_BY_NAME.get(digest)
    if digest_oid is None:
        raise LocalBootstrapError(f"digest {digest!r} is not one of {sorted(_DIGEST_BY_NAME)}")
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise LocalBootstrapError(f"the signing key does not belong to {cert.subject.rfc4514_string()}")
    h = hashes.Hash(_HASHES[digest_oid]())
    h.update(content)
    attrs = [der.sequence(der.oid(ID_CONTENT_TYPE), der.set_of(der.oid(content_type_oid))),
             der.sequence(der.oid(ID_MESSAGE_DIGEST), der.set_of(der.octet_string(h.finalize())))]
    if signing_time is not None:
        attrs.append(der.sequence(der.oid(ID_SIGNING_TIME), der.set_of(der.time(signing_time))))
    attrs_content = b"".join(sorted(attrs))  # DER SET OF order (X.690 11.6)
    to_sign = der.encode(der.SET, attrs_content)
    hash_alg = _HASHES[digest_oid]()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(to_sign, ec.ECDSA(hash_alg))
        sig_alg = _algorithm_id({v: k for k, v in _ECDSA.items()}[digest_oid])  # parameters absent (RFC 5758 3.2)
    elif isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(to_sign, padding.PKCS1v15(), hash_alg)
        sig_alg = _algorithm_id({v: k for k, v in _RSA.items()}[digest_oid], null_params=True)  # RFC 5754 3.2
    else:
        raise LocalBootstrapError(f"{type(key).__name__} keys are not supported (ECDSA and RSA are)")
    if use_ski:
        try:
            ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        except x509.ExtensionNotFound:
            raise LocalBootstrapError(f"{cert.subject.rfc4514_string()} has no subjectKeyIdentifier") from None
        version, sid = 3, der.context(0, ski, constructed=False)
    else:
        version, sid = 1, der.sequence(issuer_der(cert), der.integer(cert.serial_number))
    signer_info = der.sequence(der.integer(version), sid, _algorithm_id(digest_oid), der.context(0, attrs_content),
                               sig_alg, der.octet_string(signature))
    # RFC 5652 5.1: version 3 when eContentType is not id-data or a SignerInfo is version 3.
    sd_version = 3 if content_type_oid != ID_DATA or version == 3 else 1
    body = der.sequence(der.integer(sd_version), der.set_of(_algorithm_id(digest_oid)),
                        der.sequence(der.oid(content_type_oid), der.context(0, der.octet_string(content))),
                        _certificate_set([cert, *extra_certs]) if include_certs else b"",
                        der.set_of(signer_info))
    return _content_info_bytes(ID_SIGNED_DATA, body)


def certs_only(certs: Sequence[x509.Certificate]) -> bytes:
    """The degenerate SignedData that only carries certificates (RFC 5652 5.2)."""
    if not certs:
        raise LocalBootstrapError("a certs-only SignedData needs at least one certificate")
    body = der.sequence(der.integer(1), der.set_of(), der.sequence(der.oid(ID_DATA)),
                        _certificate_set(certs), der.set_of())
    return _content_info_bytes(ID_SIGNED_DATA, body)


# --- certificate paths (RFC 5280 section 6, the parts a bootstrap needs) ----------------------------


def _chain_error(message: str) -> RemoteBootstrapError:
    return RemoteBootstrapError(message, reason=Reason.CHAIN)


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or f"<empty subject, serial {cert.serial_number}>"


def _extension(cert: x509.Certificate, cls: type) -> object | None:
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:
        raise _chain_error(f"extensions of {_name(cert)} do not parse: {exc}") from None


def _check_validity(cert: x509.Certificate, now: datetime.datetime) -> None:
    try:
        unknown = [e.oid.dotted_string for e in cert.extensions
                   if e.critical and isinstance(e.value, x509.UnrecognizedExtension)]
    except ValueError as exc:
        raise _chain_error(f"extensions of {_name(cert)} do not parse: {exc}") from None
    if unknown:
        raise _chain_error(f"{_name(cert)} has unknown critical extension(s) {unknown} (RFC 5280 4.2)")
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise _chain_error(f"{_name(cert)} is not valid at {now.isoformat()} (valid "
                           f"{cert.not_valid_before_utc.isoformat()} to {cert.not_valid_after_utc.isoformat()})")


def _check_issuer(cert: x509.Certificate, issuer: x509.Certificate, below: int, now: datetime.datetime) -> None:
    """``issuer`` signed ``cert`` and may issue certificates; ``below`` intermediates sit under it."""
    bc = _extension(issuer, x509.BasicConstraints)
    if not isinstance(bc, x509.BasicConstraints) or not bc.ca:
        raise _chain_error(f"{_name(issuer)} issued {_name(cert)} but is not a CA (basicConstraints, RFC 5280 4.2.1.9)")
    if bc.path_length is not None and below > bc.path_length:
        raise _chain_error(f"{_name(issuer)} allows {bc.path_length} intermediate(s) below it, the path has {below}")
    ku = _extension(issuer, x509.KeyUsage)
    if isinstance(ku, x509.KeyUsage) and not ku.key_cert_sign:
        raise _chain_error(f"{_name(issuer)} may not sign certificates (keyUsage, RFC 5280 4.2.1.3)")
    _check_validity(issuer, now)


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def verify_chain(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate], anchor: x509.Certificate,
                 now: datetime.datetime) -> tuple[x509.Certificate, ...]:
    """The path leaf -> intermediates -> anchor, every link signed by the next, every
    certificate valid at ``now``, every issuer a CA allowed to sign certificates. ``leaf`` may
    be the anchor itself (RFC 8366 lets a pinned-domain-cert be an end-entity certificate).
    Returns the path, anchor last; raises RemoteBootstrapError(reason=chain-invalid)."""
    if now.tzinfo is None:
        raise LocalBootstrapError("verify_chain needs a timezone-aware time")
    _check_validity(leaf, now)
    if leaf == anchor:
        return (leaf,)
    path, pool = [leaf], [c for c in intermediates if c not in (leaf, anchor)]
    current = leaf
    while len(path) <= MAX_CHAIN_DEPTH:
        if current.issuer == anchor.subject and _signed_by(current, anchor):
            _check_issuer(current, anchor, len(path) - 1, now)
            return (*path, anchor)
        named = [c for c in pool if c.subject == current.issuer]
        nxt = next((c for c in named if _signed_by(current, c)), None)
        if nxt is None:
            if named or current.issuer == anchor.subject:
                raise _chain_error(f"the signature on {_name(current)} does not verify with its issuer's key")
            via = "" if current is leaf else f" (on the path from {_name(leaf)})"
            raise _chain_error(f"{_name(current)}{via} was issued by {current.issuer.rfc4514_string()}, which is "
                               f"neither the trust anchor {_name(anchor)} nor among the certificates supplied")
        _check_issuer(current, nxt, len(path) - 1, now)
        pool.remove(nxt)
        path.append(nxt)
        current = nxt
    raise _chain_error(f"no path from {_name(leaf)} to {_name(anchor)} within {MAX_CHAIN_DEPTH} certificates")
