"""CMS SignedData and the strict DER underneath: our signatures verify here, with
cryptography's PKCS#7 reader and with `openssl cms -verify`; theirs verify with us; every
tampering and malformation fails with our error types and a message that names the problem.
The test PKI defined here is shared with test_sztp_data.py."""

from __future__ import annotations

import contextlib
import datetime
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootstrap import cms, der
from bootstrap.errors import CmsError, LocalBootstrapError, Reason, RemoteBootstrapError
from tests.mutate import mutate

UTC = datetime.UTC
NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
NOT_BEFORE = datetime.datetime(2025, 1, 1, tzinfo=UTC)
NOT_AFTER = datetime.datetime(2030, 1, 1, tzinfo=UTC)
JSON_CT = "1.2.840.113549.1.9.16.1.43"
FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OPENSSL = shutil.which("openssl")

# --- test PKI ----------------------------------------------------------------------------------------


def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_cert(cn: str, key, issuer: tuple | None = None, *, ca: bool = False, path_length: int | None = None,
              key_cert_sign: bool | None = None, not_before: datetime.datetime = NOT_BEFORE,
              not_after: datetime.datetime = NOT_AFTER, basic_constraints: bool = True,
              extra: tuple[x509.ExtensionType, ...] = (), serial: str | None = None) -> x509.Certificate:
    """A certificate for ``key``, signed by ``issuer`` = (issuer key, issuer cert), else self-signed."""
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nsg test"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if serial is not None:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial))
    subject = x509.Name(attrs)
    issuer_key, issuer_cert = issuer if issuer else (key, None)
    b = (x509.CertificateBuilder().subject_name(subject)
         .issuer_name(issuer_cert.subject if issuer_cert else subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if basic_constraints:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
    if key_cert_sign is not None or ca:
        sign_certs = ca if key_cert_sign is None else key_cert_sign
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, sign_certs, sign_certs, False, False),
                            critical=True)
    for ext in extra:
        b = b.add_extension(ext, critical=True)
    return b.sign(issuer_key, None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256())


ROOT_KEY = ec.generate_private_key(ec.SECP384R1())
ROOT = make_cert("root CA", ROOT_KEY, ca=True)
INT_KEY = p256()
INT = make_cert("intermediate CA", INT_KEY, (ROOT_KEY, ROOT), ca=True, path_length=0)
LEAF_KEY = p256()
LEAF = make_cert("leaf", LEAF_KEY, (INT_KEY, INT))
P384_KEY = ec.generate_private_key(ec.SECP384R1())
P384_LEAF = make_cert("p384 leaf", P384_KEY, (ROOT_KEY, ROOT))
RSA_KEY = rsa.generate_private_key(65537, 2048)
RSA_LEAF = make_cert("rsa leaf", RSA_KEY, (ROOT_KEY, ROOT))
OTHER_KEY = p256()
OTHER_CA = make_cert("other CA", OTHER_KEY, ca=True)

SIGNERS = {"p256": (LEAF_KEY, LEAF, [INT]), "p384": (P384_KEY, P384_LEAF, []), "rsa": (RSA_KEY, RSA_LEAF, [])}


def pem(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(Encoding.PEM))
    return path


def fails(reason: Reason, match: str, fn, *args, **kwargs) -> RemoteBootstrapError:
    with pytest.raises(RemoteBootstrapError, match=match) as info:
        fn(*args, **kwargs)
    assert info.value.reason == reason, info.value
    assert info.value.fault == "remote"
    return info.value


# --- hand-built CMS for the cases our own signer never produces -------------------------------------------


def attr(oid: str, *values: bytes) -> bytes:
    return der.sequence(der.oid(oid), der.set_of(*values))


def digest(content: bytes, alg=hashes.SHA256) -> bytes:
    h = hashes.Hash(alg())
    h.update(content)
    return h.finalize()


def craft(content: bytes = b"{}", *, content_type: str = JSON_CT, attrs: list[bytes] | None = None,
          digest_oid: str = cms.SHA256, sig_alg: str = cms.ECDSA_WITH_SHA256, key=LEAF_KEY, cert=LEAF,
          signer_version: int = 1, sd_version: int = 3, signature: bytes | None = None,
          extra: tuple[x509.Certificate, ...] = (INT,)) -> bytes:
    if attrs is None:
        attrs = [attr(cms.ID_CONTENT_TYPE, der.oid(content_type)),
                 attr(cms.ID_MESSAGE_DIGEST, der.octet_string(digest(content)))]
    body = b"".join(sorted(attrs))
    signed = der.encode(der.SET, body) if attrs else content
    if signature is None:
        if isinstance(key, rsa.RSAPrivateKey):
            from cryptography.hazmat.primitives.asymmetric import padding
            signature = key.sign(signed, padding.PKCS1v15(), hashes.SHA256())
        else:
            signature = key.sign(signed, ec.ECDSA(hashes.SHA256()))
    sid = der.sequence(cms.issuer_der(cert), der.integer(cert.serial_number))
    signer = der.sequence(der.integer(signer_version), sid, der.sequence(der.oid(digest_oid)),
                          der.context(0, body) if attrs else b"", der.sequence(der.oid(sig_alg)),
                          der.octet_string(signature))
    sd = der.sequence(der.integer(sd_version), der.set_of(der.sequence(der.oid(digest_oid))),
                      der.sequence(der.oid(content_type), der.context(0, der.octet_string(content))),
                      der.context(0, b"".join(c.public_bytes(Encoding.DER) for c in (cert, *extra))),
                      der.set_of(signer))
    return der.sequence(der.oid(cms.ID_SIGNED_DATA), der.context(0, sd))


# --- DER ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 127, 128, 255, 256, 65535, 65536, 1 << 20])
def test_der_lengths_round_trip_at_every_boundary(n):
    blob = der.octet_string(bytes(n))
    assert der.as_octets(der.parse(blob, "x"), "x") == bytes(n)
    header = len(blob) - n
    assert header == (2 if n < 128 else 3 if n < 256 else 4 if n < 65536 else 5)


@pytest.mark.parametrize(("blob", "why"), [
    (b"", "missing"),
    (b"\x04", "truncated before the length"),
    (b"\x04\x80\x00\x00", "indefinite length"),
    (b"\x04\x81\x05hello", r"long form \(must be short"),
    (b"\x04\x82\x00\x05hello", "leading zero"),
    (b"\x04\x85\x00\x00\x00\x00\x05hello", "over-long"),
    (b"\x04\x82\x01", "truncated inside the length"),
    (b"\x04\x06hello", "claims 6 octets, only 5 remain"),
    (b"\x04\x05hello!", "1 trailing octets"),
    (b"\x1f\x01\x00", "multi-octet tag"),
    (b"\x00\x00", "end-of-contents"),
])
def test_der_refuses_what_is_not_strict_der(blob, why):
    with pytest.raises(CmsError, match=why) as info:
        der.parse(blob, "thing")
    assert info.value.reason == Reason.MALFORMED_DER


@pytest.mark.parametrize(("blob", "decoder", "why"), [
    (b"\x02\x00", der.as_int, "empty INTEGER"),
    (b"\x02\x02\x00\x01", der.as_int, "not minimally"),
    (b"\x02\x02\xff\x80", der.as_int, "not minimally"),
    (b"\x06\x00", der.as_oid, "empty OBJECT"),
    (b"\x06\x02\x2a\x86", der.as_oid, "ends inside"),
    (b"\x06\x03\x2a\x80\x01", der.as_oid, "leading 0x80"),
    (b"\x05\x01\x00", der.as_null, "NULL with contents"),
    (b"\x24\x03\x04\x01a", der.as_octets, "expected OCTET STRING"),
    (b"\x17\x0b2601011200Z", der.as_time, "not YYMMDDHHMMSSZ"),
    (b"\x18\x1220260101120000.10Z", der.as_time, "not YYYYMMDDHHMMSS"),
    (b"\x17\x0d261301120000Z", der.as_time, "out of range"),
])
def test_der_value_decoders_are_strict(blob, decoder, why):
    with pytest.raises(CmsError, match=why):
        decoder(der.parse(blob, "v"), "v")


def test_der_values_round_trip():
    for n in (0, 1, -1, 127, 128, -128, -129, 2**64, -(2**64), 2**159 + 12345):
        assert der.as_int(der.parse(der.integer(n), "i"), "i") == n
    for oid in ("0.0", "1.2.840.113549.1.9.16.1.43", "2.999.1234567", "2.5.4.3"):
        assert der.as_oid(der.parse(der.oid(oid), "o"), "o") == oid
    assert der.oid("1.2.840.10045.4.3.2").hex() == "06082a8648ce3d040302"  # ecdsa-with-SHA256, as OpenSSL writes it
    for when in (NOW, datetime.datetime(1950, 1, 1, tzinfo=UTC), datetime.datetime(2050, 1, 1, tzinfo=UTC)):
        assert der.as_time(der.parse(der.time(when), "t"), "t") == when
    assert der.as_time(der.parse(b"\x18\x1320260101120000.125Z", "t"), "t").microsecond == 125000
    assert der.set_of(b"\x05\x00", b"\x02\x01\x01") == b"\x31\x05\x02\x01\x01\x05\x00"


def test_der_encoders_refuse_our_own_nonsense():
    for bad in ("3.1", "1.40", "1", "a.b"):
        with pytest.raises(LocalBootstrapError):
            der.oid(bad)
    with pytest.raises(LocalBootstrapError):
        der.time(datetime.datetime(2026, 1, 1))
    with pytest.raises(LocalBootstrapError):
        der.context(31, b"")


def test_der_fields_walks_in_order_and_refuses_leftovers():
    seq = der.parse(der.sequence(der.integer(1), der.null(), der.octet_string(b"x")), "s")
    f = der.Fields(seq, "S")
    assert der.as_int(f.take(der.INTEGER, "a"), "a") == 1
    assert f.maybe(der.OBJECT_IDENTIFIER) is None
    assert f.maybe(der.NULL) is not None
    with pytest.raises(CmsError, match="1 unexpected trailing component"):
        f.end()
    with pytest.raises(CmsError, match=r"S\.b: expected INTEGER, got OCTET STRING"):
        f.take(der.INTEGER, "b")
    with pytest.raises(CmsError, match="primitive, expected constructed"):
        der.children(der.parse(der.integer(5), "i"), "i")


# --- signing and verifying --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(SIGNERS))
@pytest.mark.parametrize("use_ski", [False, True])
@pytest.mark.parametrize("digest_name", ["sha256", "sha384"])
def test_round_trip(kind, use_ski, digest_name):
    key, cert, extra = SIGNERS[kind]
    content = b'{"hello": "world"}' * 50
    blob = cms.sign(content, JSON_CT, key, cert, extra, digest=digest_name, use_ski=use_ski, signing_time=NOW)
    out = cms.verify(blob, JSON_CT, ROOT, now=NOW)
    assert (out.content, out.content_type, out.signer, out.signing_time) == (content, JSON_CT, cert, NOW)
    assert set(out.certs) == {cert, *extra}


def test_empty_and_large_content():
    for content in (b"", bytes(range(256)) * 800):
        blob = cms.sign(content, JSON_CT, LEAF_KEY, LEAF, [INT])
        assert cms.verify(blob, JSON_CT, ROOT, now=NOW).content == content


def test_signer_may_be_the_trust_anchor_itself():
    blob = cms.sign(b"x", JSON_CT, ROOT_KEY, ROOT)
    assert cms.verify(blob, JSON_CT, ROOT, now=NOW).signer == ROOT


def test_certificate_may_travel_separately():
    blob = cms.sign(b"x", JSON_CT, LEAF_KEY, LEAF, include_certs=False)
    fails(Reason.SIGNER_NOT_FOUND, "no certificate for the signer", cms.verify, blob, JSON_CT, ROOT, now=NOW)
    out = cms.verify(blob, JSON_CT, lambda signer, certs: signer == LEAF and certs == (), known_certs=[INT, LEAF])
    assert out.signer == LEAF


def test_trust_callback_must_say_true():
    blob = cms.sign(b"x", JSON_CT, LEAF_KEY, LEAF)
    for answer in (None, False, 1, "yes"):
        fails(Reason.UNTRUSTED, "CN=leaf.* is not trusted", cms.verify, blob, JSON_CT, lambda s, c, a=answer: a)

    def refuse(signer, certs):
        raise RemoteBootstrapError("no thanks", reason=Reason.NOT_SIGNED_BY_OWNER)

    fails(Reason.NOT_SIGNED_BY_OWNER, "no thanks", cms.verify, blob, JSON_CT, refuse)


def test_id_data_without_signed_attributes_is_accepted_other_types_are_not():
    blob = craft(b"raw", content_type=cms.ID_DATA, attrs=[], sd_version=1)
    assert cms.verify(blob, cms.ID_DATA, ROOT, now=NOW).content == b"raw"
    blob = craft(b"raw", attrs=[])
    fails(Reason.BAD_ATTRIBUTES, "no signed attributes, yet eContentType", cms.verify, blob, JSON_CT, ROOT, now=NOW)


def test_sign_refuses_local_mistakes():
    with pytest.raises(LocalBootstrapError, match="does not belong"):
        cms.sign(b"x", JSON_CT, OTHER_KEY, LEAF)
    with pytest.raises(LocalBootstrapError, match="digest"):
        cms.sign(b"x", JSON_CT, LEAF_KEY, LEAF, digest="md5")
    ed = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(LocalBootstrapError, match="Ed25519"):
        cms.sign(b"x", JSON_CT, ed, make_cert("ed", ed))
    no_ski = x509.load_der_x509_certificate(make_cert("n", LEAF_KEY, (INT_KEY, INT)).public_bytes(Encoding.DER))
    bare = (x509.CertificateBuilder().subject_name(no_ski.subject).issuer_name(INT.subject)
            .public_key(LEAF_KEY.public_key()).serial_number(7).not_valid_before(NOT_BEFORE)
            .not_valid_after(NOT_AFTER).sign(INT_KEY, hashes.SHA256()))
    with pytest.raises(LocalBootstrapError, match="no subjectKeyIdentifier"):
        cms.sign(b"x", JSON_CT, LEAF_KEY, bare, use_ski=True)
    with pytest.raises(LocalBootstrapError, match="current time"):
        cms.verify(cms.sign(b"x", JSON_CT, LEAF_KEY, LEAF), JSON_CT, ROOT)


# --- cross-checks with other implementations -------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(SIGNERS))
@pytest.mark.parametrize("options", [[], [pkcs7.PKCS7Options.NoAttributes], [pkcs7.PKCS7Options.NoCerts]])
def test_cryptography_signs_we_verify(kind, options):
    key, cert, extra = SIGNERS[kind]
    builder = pkcs7.PKCS7SignatureBuilder().set_data(b"payload").add_signer(cert, key, hashes.SHA256())
    for c in extra:
        builder = builder.add_certificate(c)
    blob = builder.sign(Encoding.DER, [pkcs7.PKCS7Options.Binary, *options])
    out = cms.verify(blob, cms.ID_DATA, ROOT, now=NOW, known_certs=[cert, *extra])
    assert out.content == b"payload" and out.signer == cert


def test_cryptography_reads_our_certs_only_and_we_read_theirs():
    ours = cms.certs_only([LEAF, INT, ROOT])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cryptography warns when a SET OF is not in DER order
        assert set(pkcs7.load_der_pkcs7_certificates(ours)) == {LEAF, INT, ROOT}
    theirs = pkcs7.serialize_certificates([LEAF, INT], Encoding.DER)
    assert set(cms.parse_certs_only(theirs)) == {LEAF, INT}
    assert set(cms.parse_certs_only(ours)) == {LEAF, INT, ROOT}


def test_our_signed_data_is_der_to_cryptography():
    blob = cms.sign(b"x", JSON_CT, LEAF_KEY, LEAF, [INT, ROOT])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert set(pkcs7.load_der_pkcs7_certificates(blob)) == {LEAF, INT, ROOT}


@pytest.mark.skipif(OPENSSL is None, reason="no openssl CLI")
@pytest.mark.parametrize("kind", sorted(SIGNERS))
@pytest.mark.parametrize("use_ski", [False, True])
def test_openssl_verifies_ours(tmp_path, kind, use_ski):
    key, cert, extra = SIGNERS[kind]
    (tmp_path / "m.der").write_bytes(cms.sign(b'{"a":1}', JSON_CT, key, cert, extra, use_ski=use_ski,
                                              signing_time=NOW))
    r = subprocess.run([OPENSSL, "cms", "-verify", "-inform", "DER", "-in", str(tmp_path / "m.der"),
                        "-CAfile", str(pem(tmp_path / "ca.pem", ROOT)), "-purpose", "any",
                        "-attime", str(int(NOW.timestamp()))], capture_output=True, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b'{"a":1}'


@pytest.mark.skipif(OPENSSL is None, reason="no openssl CLI")
@pytest.mark.parametrize("kind", sorted(SIGNERS))
def test_we_verify_openssl(tmp_path, kind):
    key, cert, extra = SIGNERS[kind]
    (tmp_path / "k.pem").write_bytes(key.private_bytes(Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    (tmp_path / "in.json").write_bytes(b'{"b":2}')
    args = [OPENSSL, "cms", "-sign", "-binary", "-nodetach", "-outform", "DER", "-md", "sha256",
            "-econtent_type", JSON_CT, "-in", str(tmp_path / "in.json"), "-signer", str(pem(tmp_path / "s.pem", cert)),
            "-inkey", str(tmp_path / "k.pem"), "-out", str(tmp_path / "o.der")]
    if extra:
        args += ["-certfile", str(pem(tmp_path / "x.pem", extra[0]))]
    subprocess.run(args, capture_output=True, check=True)
    out = cms.verify((tmp_path / "o.der").read_bytes(), JSON_CT, ROOT, now=NOW)
    assert out.content == b'{"b":2}' and out.signer == cert and out.signing_time is not None


@pytest.mark.skipif(OPENSSL is None, reason="no openssl CLI")
def test_openssl_reads_our_certs_only(tmp_path):
    (tmp_path / "c.der").write_bytes(cms.certs_only([LEAF, INT]))
    r = subprocess.run([OPENSSL, "pkcs7", "-inform", "DER", "-in", str(tmp_path / "c.der"), "-print_certs"],
                       capture_output=True, check=True)
    assert r.stdout.count(b"BEGIN CERTIFICATE") == 2


# --- every way a signature check must fail --------------------------------------------------------------


def signed() -> bytes:
    return cms.sign(b'{"x": 1}', JSON_CT, LEAF_KEY, LEAF, [INT], signing_time=NOW)


def test_tampered_content():
    blob = signed()
    at = blob.index(b'{"x": 1}')
    tampered = blob[:at] + b'{"x": 2}' + blob[at + 8:]
    fails(Reason.DIGEST_MISMATCH, "message-digest attribute does not match", cms.verify, tampered, JSON_CT, ROOT,
          now=NOW)


def test_tampered_signed_attributes():
    blob = signed()
    stamp = NOW.strftime("%y%m%d%H%M%SZ").encode()
    later = (NOW + datetime.timedelta(seconds=1)).strftime("%y%m%d%H%M%SZ").encode()
    assert blob.count(stamp) == 1
    fails(Reason.BAD_SIGNATURE, "signature by CN=leaf.* does not verify", cms.verify, blob.replace(stamp, later),
          JSON_CT, ROOT, now=NOW)


def test_tampered_signature():
    blob = bytearray(signed())
    blob[-5] ^= 0x01
    with pytest.raises(RemoteBootstrapError, match=r"does not verify|INTEGER|signature"):
        cms.verify(bytes(blob), JSON_CT, ROOT, now=NOW)


def test_wrong_content_type():
    fails(Reason.WRONG_CONTENT_TYPE, r"eContentType is id-ct-sztpConveyedInfoJSON .* expected id-ct-animaJSONVoucher",
          cms.verify, signed(), "1.2.840.113549.1.9.16.1.40", ROOT, now=NOW)


def test_content_type_attribute_must_match():
    blob = craft(attrs=[attr(cms.ID_CONTENT_TYPE, der.oid(cms.ID_DATA)),
                        attr(cms.ID_MESSAGE_DIGEST, der.octet_string(digest(b"{}")))])
    fails(Reason.BAD_ATTRIBUTES, "content-type attribute says 1.2.840.113549.1.7.1", cms.verify, blob, JSON_CT, ROOT,
          now=NOW)


@pytest.mark.parametrize(("attrs", "why"), [
    ([attr(cms.ID_CONTENT_TYPE, der.oid(JSON_CT))], "lack message-digest"),
    ([attr(cms.ID_MESSAGE_DIGEST, der.octet_string(digest(b"{}")))], "lack content-type"),
    ([attr(cms.ID_CONTENT_TYPE, der.oid(JSON_CT), der.oid(cms.ID_DATA)),
      attr(cms.ID_MESSAGE_DIGEST, der.octet_string(digest(b"{}")))], "exactly one value, has 2"),
    ([attr(cms.ID_CONTENT_TYPE, der.oid(JSON_CT)), attr(cms.ID_CONTENT_TYPE, der.oid(JSON_CT)),
      attr(cms.ID_MESSAGE_DIGEST, der.octet_string(digest(b"{}")))], "appears twice"),
])
def test_signed_attributes_must_be_complete_and_single(attrs, why):
    fails(Reason.BAD_ATTRIBUTES, why, cms.verify, craft(attrs=attrs), JSON_CT, ROOT, now=NOW)


def test_algorithms_must_agree_and_be_supported():
    fails(Reason.BAD_SIGNATURE, "does not use the digest algorithm", cms.verify,
          craft(sig_alg=cms.ECDSA_WITH_SHA384), JSON_CT, ROOT, now=NOW)
    fails(Reason.UNSUPPORTED_CMS, "digest algorithm 1.3.14.3.2.26 is not supported", cms.verify,
          craft(digest_oid="1.3.14.3.2.26"), JSON_CT, ROOT, now=NOW)
    fails(Reason.UNSUPPORTED_CMS, "signature algorithm 1.3.101.112 is not supported", cms.verify,
          craft(sig_alg="1.3.101.112"), JSON_CT, ROOT, now=NOW)
    fails(Reason.BAD_SIGNATURE, "RSA signature, but the signer has a", cms.verify,
          craft(sig_alg=cms.SHA256_WITH_RSA), JSON_CT, ROOT, now=NOW)
    # id-ecPublicKey as the signature algorithm is what some signers write; it means ECDSA.
    assert cms.verify(craft(sig_alg=cms.ID_EC_PUBLIC_KEY), JSON_CT, ROOT, now=NOW).content == b"{}"
    assert cms.verify(craft(sig_alg=cms.RSA_ENCRYPTION, key=RSA_KEY, cert=RSA_LEAF), JSON_CT, ROOT, now=NOW)


def test_versions_are_checked():
    fails(Reason.MALFORMED_CMS, "does not go with its signer identifier", cms.verify, craft(signer_version=3),
          JSON_CT, ROOT, now=NOW)
    fails(Reason.UNSUPPORTED_CMS, "SignedData version 4", cms.verify, craft(sd_version=4), JSON_CT, ROOT, now=NOW)


def test_untrusted_signer():
    fails(Reason.CHAIN, r"path from CN=leaf.* neither the trust anchor .*CN=other CA", cms.verify, signed(), JSON_CT,
          OTHER_CA, now=NOW)
    # Without the intermediate in the CMS the leaf cannot reach the root.
    blob = cms.sign(b"x", JSON_CT, LEAF_KEY, LEAF)
    fails(Reason.CHAIN, "issued by .*CN=intermediate CA", cms.verify, blob, JSON_CT, ROOT, now=NOW)
    fails(Reason.CHAIN, "is not valid at", cms.verify, signed(), JSON_CT, ROOT,
          now=datetime.datetime(2031, 1, 1, tzinfo=UTC))


def test_unsigned_and_certs_only_are_not_signed_data():
    fails(Reason.UNSIGNED, "arrived unsigned", cms.verify, cms.encapsulate(b"{}", JSON_CT), JSON_CT, ROOT, now=NOW)
    fails(Reason.UNSIGNED, "no signer", cms.verify, cms.certs_only([LEAF]), cms.ID_DATA, ROOT, now=NOW)
    fails(Reason.WRONG_CONTENT_TYPE, "holds id-data", cms.verify, cms.encapsulate(b"{}", cms.ID_DATA), JSON_CT,
          ROOT, now=NOW)
    with pytest.raises(CmsError, match="found 1 signer"):
        cms.parse_certs_only(signed())


def test_truncated_at_every_length():
    blob = signed()
    for cut in range(len(blob)):
        with pytest.raises(CmsError):
            cms.verify(blob[:cut], JSON_CT, ROOT, now=NOW)


def test_trailing_bytes():
    fails(Reason.MALFORMED_DER, "1 trailing octets", cms.verify, signed() + b"\x00", JSON_CT, ROOT, now=NOW)
    fails(Reason.MALFORMED_DER, "trailing", cms.parse_certs_only, cms.certs_only([LEAF]) + b"\x30\x00")


def test_encapsulate_round_trip():
    blob = cms.encapsulate(b"abc", JSON_CT)
    assert cms.decapsulate(blob, JSON_CT) == b"abc"
    fails(Reason.WRONG_CONTENT_TYPE, "expected id-data", cms.decapsulate, blob, cms.ID_DATA)


# --- certificate paths -------------------------------------------------------------------------------------


def test_chain_good_and_returns_the_path():
    assert cms.verify_chain(LEAF, [INT], ROOT, NOW) == (LEAF, INT, ROOT)
    assert cms.verify_chain(ROOT, [], ROOT, NOW) == (ROOT,)
    assert cms.verify_chain(LEAF, [OTHER_CA, INT, ROOT], ROOT, NOW) == (LEAF, INT, ROOT)


def test_chain_issuer_must_be_a_ca():
    not_ca_key = p256()
    not_ca = make_cert("not a CA", not_ca_key, (ROOT_KEY, ROOT))
    leaf = make_cert("under not a CA", p256(), (not_ca_key, not_ca))
    fails(Reason.CHAIN, "CN=not a CA.* is not a CA", cms.verify_chain, leaf, [not_ca], ROOT, NOW)
    no_bc_key = p256()
    no_bc = make_cert("no bc", no_bc_key, (ROOT_KEY, ROOT), basic_constraints=False)
    fails(Reason.CHAIN, "is not a CA", cms.verify_chain, make_cert("l", p256(), (no_bc_key, no_bc)), [no_bc],
          ROOT, NOW)


def test_chain_key_usage_and_path_length():
    ku_key = p256()
    no_sign = make_cert("no certsign", ku_key, (ROOT_KEY, ROOT), ca=True, key_cert_sign=False)
    fails(Reason.CHAIN, "may not sign certificates", cms.verify_chain, make_cert("l", p256(), (ku_key, no_sign)),
          [no_sign], ROOT, NOW)
    sub_key = p256()
    sub = make_cert("sub CA", sub_key, (INT_KEY, INT), ca=True)  # INT allows 0 intermediates below it
    fails(Reason.CHAIN, "allows 0 intermediate", cms.verify_chain, make_cert("l", p256(), (sub_key, sub)),
          [sub, INT], ROOT, NOW)


def test_chain_validity_signature_and_extensions():
    old_key = p256()
    old = make_cert("expired CA", old_key, (ROOT_KEY, ROOT), ca=True, not_after=datetime.datetime(2026, 1, 1,
                                                                                                  tzinfo=UTC))
    fails(Reason.CHAIN, "CN=expired CA.* is not valid at", cms.verify_chain, make_cert("l", p256(), (old_key, old)),
          [old], ROOT, NOW)
    impostor = make_cert("intermediate CA", p256(), (ROOT_KEY, ROOT), ca=True)  # same name, other key
    fails(Reason.CHAIN, "does not verify with its issuer's key", cms.verify_chain, LEAF, [impostor], ROOT, NOW)
    odd = make_cert("odd", p256(), (INT_KEY, INT), extra=(x509.UnrecognizedExtension(
        x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00"),))
    fails(Reason.CHAIN, "unknown critical extension", cms.verify_chain, odd, [INT], ROOT, NOW)
    with pytest.raises(LocalBootstrapError):
        cms.verify_chain(LEAF, [INT], ROOT, NOW.replace(tzinfo=None))


def test_chain_depth_is_bounded():
    issuer, chain = (ROOT_KEY, ROOT), []
    for i in range(cms.MAX_CHAIN_DEPTH + 1):
        key = p256()
        cert = make_cert(f"ca {i}", key, issuer, ca=True)
        chain.append(cert)
        issuer = (key, cert)
    leaf = make_cert("deep", p256(), issuer)
    fails(Reason.CHAIN, "within 8 certificates", cms.verify_chain, leaf, chain, ROOT, NOW)
    assert len(cms.verify_chain(leaf, chain[2:], chain[1], NOW)) == cms.MAX_CHAIN_DEPTH + 1


# --- fuzzing: whatever arrives, only our errors come out ---------------------------------------------------------


VALID = [signed(), cms.sign(b"", JSON_CT, RSA_KEY, RSA_LEAF, use_ski=True), craft(), cms.certs_only([LEAF, INT])]


@st.composite
def mutated(draw, valid: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(valid)))
    mutate(draw, data)
    return bytes(data)


def walk(tlv: der.Tlv, depth: int = 0) -> None:
    if tlv.constructed and depth < 50:
        for child in der.children(tlv, "fuzz"):
            walk(child, depth + 1)


@FUZZ
@given(st.binary(max_size=300) | mutated(VALID))
def test_fuzz_der_raises_only_cms_errors(data):
    with contextlib.suppress(CmsError):
        walk(der.parse(data, "fuzz"))


@FUZZ
@given(mutated(VALID))
def test_fuzz_verify_raises_only_remote_errors(data):
    try:
        out = cms.verify(data, JSON_CT, ROOT, now=NOW)
    except RemoteBootstrapError:
        return
    # A mutation that still verifies must have left what was signed alone.
    assert out.content in (b'{"x": 1}', b"", b"{}")


@FUZZ
@given(mutated(VALID))
def test_fuzz_certs_only_raises_only_remote_errors(data):
    with contextlib.suppress(RemoteBootstrapError):
        cms.parse_certs_only(data)
