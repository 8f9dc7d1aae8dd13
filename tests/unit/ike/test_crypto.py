"""IKEv2 crypto: published DH vectors, prf+ and key derivation against
hand-computed HMAC chains, the SK AEAD, PSK AUTH between two parties, and
RFC 7427 signatures."""

from __future__ import annotations

import datetime
import hashlib
import hmac
from ipaddress import IPv4Address

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from ipsec.ike import crypto
from ipsec.ike.constants import DhGroup, HashAlgorithm, NotifyType, PrfId
from ipsec.ike.crypto import (
    ECDSA_SHA256,
    ECDSA_SHA384,
    RSA_PKCS1_SHA256,
    RSA_PSS_SHA256,
    Aead,
    aes_gcm_keymat_len,
    child_sa_keys,
    dh_from_private_value,
    dh_generate,
    dh_public_len,
    ike_sa_keys,
    prf_for,
    psk_auth,
    rekey_skeyseed,
    scheme_for_key,
    sign_auth,
    signed_octets,
    skeyseed,
    verify_auth,
    verify_psk_auth,
)
from ipsec.ike.errors import IntegrityError, LocalProtocolError, RemoteProtocolError
from ipsec.ike.payloads import IDi, IDr

SHA256 = prf_for(PrfId.HMAC_SHA2_256)
SHA384 = prf_for(PrfId.HMAC_SHA2_384)


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# ------------------------------------------------------------------ prf, prf+
def test_prf_is_hmac():
    assert SHA256(b"key", b"data") == hmac.new(b"key", b"data", hashlib.sha256).digest()
    assert SHA256.size == 32 and SHA384.size == 48


def test_prf_plus_against_a_hand_computed_expansion():
    key, seed = b"K" * 32, b"seed octets"
    t1 = hmac.new(key, seed + b"\x01", hashlib.sha256).digest()
    t2 = hmac.new(key, t1 + seed + b"\x02", hashlib.sha256).digest()
    t3 = hmac.new(key, t2 + seed + b"\x03", hashlib.sha256).digest()
    assert SHA256.plus(key, seed, 80) == (t1 + t2 + t3)[:80]
    assert SHA256.plus(key, seed, 32) == t1
    assert SHA256.plus(key, seed, 0) == b""


def test_prf_plus_stops_at_255_blocks():
    assert len(SHA256.plus(b"k", b"s", 255 * 32)) == 255 * 32
    with pytest.raises(LocalProtocolError):
        SHA256.plus(b"k", b"s", 255 * 32 + 1)


def test_unknown_prf_is_a_local_error():
    with pytest.raises(LocalProtocolError):
        prf_for(2)  # PRF_HMAC_SHA1: never negotiated by us


# ------------------------------------------------------------------ key derivation
NI, NR = bytes(range(32)), bytes(range(100, 132))
SPI_I, SPI_R = h("0102030405060708"), h("a1a2a3a4a5a6a7a8")
GIR = bytes(range(200, 232))


def test_skeyseed_and_ike_sa_keys_split_in_rfc_order():
    seed = skeyseed(SHA256, NI, NR, GIR)
    assert seed == hmac.new(NI + NR, GIR, hashlib.sha256).digest()
    keys = ike_sa_keys(SHA256, seed, NI, NR, SPI_I, SPI_R, aes_gcm_keymat_len(256))
    stream = SHA256.plus(seed, NI + NR + SPI_I + SPI_R, 32 + 36 + 36 + 32 + 32)
    # SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr, no integrity keys with GCM.
    assert keys.sk_d == stream[:32]
    assert keys.sk_ai == keys.sk_ar == b""
    assert keys.sk_ei == stream[32:68] and keys.sk_er == stream[68:104]
    assert keys.sk_pi == stream[104:136] and keys.sk_pr == stream[136:168]
    assert repr(keys) == "IkeSaKeys()"  # keys stay out of logs


def test_ike_sa_keys_with_sha384_and_aes128():
    keys = ike_sa_keys(SHA384, b"s" * 48, NI, NR, SPI_I, SPI_R, aes_gcm_keymat_len(128), integ_key_len=0)
    assert [len(k) for k in (keys.sk_d, keys.sk_ei, keys.sk_er, keys.sk_pi, keys.sk_pr)] == [48, 20, 20, 48, 48]


def test_rekeyed_ike_sa_skeyseed_uses_old_sk_d():
    old_sk_d = b"d" * 32
    assert rekey_skeyseed(SHA256, old_sk_d, GIR, NI, NR) == hmac.new(old_sk_d, GIR + NI + NR, hashlib.sha256).digest()


@pytest.mark.parametrize("pfs", [b"", GIR])
def test_child_sa_keymat_initiator_to_responder_first(pfs):
    sk_d = b"d" * 32
    keys = child_sa_keys(SHA256, sk_d, NI, NR, aes_gcm_keymat_len(256), shared_secret=pfs)
    stream = SHA256.plus(sk_d, pfs + NI + NR, 72)
    assert keys.encr_i == stream[:36] and keys.encr_r == stream[36:]
    assert keys.integ_i == keys.integ_r == b""


def test_child_sa_keymat_with_integrity_keys_interleaves_per_direction():
    keys = child_sa_keys(SHA256, b"d" * 32, NI, NR, 16, integ_key_len=32)
    stream = SHA256.plus(b"d" * 32, NI + NR, 96)
    assert (keys.encr_i, keys.integ_i, keys.encr_r, keys.integ_r) == \
        (stream[:16], stream[16:48], stream[48:64], stream[64:])


def test_aes_gcm_keymat_lengths():
    assert [aes_gcm_keymat_len(b) for b in (128, 192, 256)] == [20, 28, 36]
    with pytest.raises(LocalProtocolError):
        aes_gcm_keymat_len(512)


# ------------------------------------------------------------------ Diffie-Hellman
def test_ecp256_rfc5903_section_8_1_vector():
    i = dh_from_private_value(DhGroup.ECP_256,
                              h("C88F01F5 10D9AC3F 70A292DA A2316DE5 44E9AAB8 AFE84049 C62A9C57 862D1433"))
    r = dh_from_private_value(DhGroup.ECP_256,
                              h("C6EF9C5D 78AE012A 011164AC B397CE20 88685D8F 06BF9BE0 B283AB46 476BEE53"))
    gi = h("DAD0B653 94221CF9 B051E1FE CA5787D0 98DFE637 FC90B9EF 945D0C37 72581180"
           "5271A046 1CDB8252 D61F1C45 6FA3E59A B1F45B33 ACCF5F58 389E0577 B8990BB3")
    gr = h("D12DFB52 89C8D4F8 1208B702 70398C34 2296970A 0BCCB74C 736FC755 4494BF63"
           "56FBF3CA 366CC23E 8157854C 13C58D6A AC23F046 ADA30F83 53E74F33 039872AB")
    girx = h("D6840F6B 42F6EDAF D13116E0 E1256520 2FEF8E9E CE7DCE03 812464D0 4B9442DE")
    assert i.public_bytes() == gi  # x | y, no 0x04 prefix (RFC 5903 section 7)
    assert r.public_bytes() == gr
    assert i.shared_secret(gr) == girx == r.shared_secret(gi)  # x only (section 9)


def test_x25519_rfc7748_section_6_1_vector():
    a = dh_from_private_value(DhGroup.CURVE25519, h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
    b = dh_from_private_value(DhGroup.CURVE25519, h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
    assert a.public_bytes() == h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    assert b.public_bytes() == h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    shared = h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
    assert a.shared_secret(b.public_bytes()) == shared == b.shared_secret(a.public_bytes())


@pytest.mark.parametrize(("group", "public_len", "secret_len"), [
    (DhGroup.ECP_256, 64, 32), (DhGroup.ECP_384, 96, 48), (DhGroup.CURVE25519, 32, 32),
])
def test_fresh_exchanges_agree_with_the_right_lengths(group, public_len, secret_len):
    i, r = dh_generate(group), dh_generate(group)
    assert len(i.public_bytes()) == public_len == dh_public_len(group)
    secret = i.shared_secret(r.public_bytes())
    assert secret == r.shared_secret(i.public_bytes())
    assert len(secret) == secret_len
    assert repr(i) == f"DhPrivate(group={group!r})"


def _bad(group: int) -> list[bytes]:
    good = dh_generate(group).public_bytes()
    if group == DhGroup.CURVE25519:
        # Low-order points: u = 0 and u = 1 give an all-zero shared secret.
        return [good[:-1], good + b"\x00", bytes(32), b"\x01" + bytes(31)]
    off_curve = good[:-1] + bytes((good[-1] ^ 1,))
    return [good[:-1], good + b"\x00", off_curve, bytes(len(good))]


@pytest.mark.parametrize("group", [DhGroup.ECP_256, DhGroup.ECP_384, DhGroup.CURVE25519])
def test_invalid_peer_public_values_are_rejected(group):
    ours = dh_generate(group)
    for value in _bad(group):
        with pytest.raises(RemoteProtocolError) as err:
            ours.shared_secret(value)
        assert err.value.notify == NotifyType.INVALID_SYNTAX


def test_unsupported_groups_are_local_errors():
    for make in (lambda: dh_generate(14), lambda: dh_public_len(2), lambda: dh_from_private_value(21, b"x")):
        with pytest.raises(LocalProtocolError):
            make()


# ------------------------------------------------------------------ SK AEAD
def test_aead_round_trip_and_forgery():
    aead = Aead(b"k" * 32 + b"salt")
    sealed = aead.encrypt(bytes(8), b"payloads", b"header")
    assert len(sealed) == len(b"payloads") + 16
    assert aead.decrypt(bytes(8), sealed, b"header") == b"payloads"
    for iv, ct, aad in ((b"\x01" + bytes(7), sealed, b"header"), (bytes(8), sealed, b"Header"),
                        (bytes(8), sealed[:-1] + b"\x00", b"header"), (bytes(8), sealed[:10], b"header")):
        with pytest.raises(IntegrityError):
            aead.decrypt(iv, ct, aad)
    assert repr(aead) == "Aead(<key hidden>)"


def test_aead_salt_is_part_of_the_nonce():
    one, other = Aead(b"k" * 16 + b"salt"), Aead(b"k" * 16 + b"SALT")
    with pytest.raises(IntegrityError):
        other.decrypt(bytes(8), one.encrypt(bytes(8), b"x", b""), b"")


def test_aead_rejects_bad_keymat_and_iv():
    with pytest.raises(LocalProtocolError):
        Aead(b"k" * 33)
    with pytest.raises(LocalProtocolError):
        Aead(b"k" * 20).encrypt(bytes(12), b"", b"")


# ------------------------------------------------------------------ AUTH
class Party:
    """One side of IKE_SA_INIT + IKE_AUTH, computing only what it may know."""

    def __init__(self, nonce: bytes, identity) -> None:
        self.dh = dh_generate(DhGroup.CURVE25519)
        self.nonce, self.identity = nonce, identity

    def keys(self, peer_public: bytes, ni: bytes, nr: bytes):
        seed = skeyseed(SHA256, ni, nr, self.dh.shared_secret(peer_public))
        return ike_sa_keys(SHA256, seed, ni, nr, SPI_I, SPI_R, aes_gcm_keymat_len(256))


def test_psk_auth_two_party_agreement():
    psk = b"correct horse battery staple"
    alice, bob = Party(NI, IDi.from_fqdn("gw1.example")), Party(NR, IDr.from_fqdn("gw2.example"))
    init_msg, resp_msg = b"<IKE_SA_INIT request octets>", b"<IKE_SA_INIT response octets>"
    a_keys = alice.keys(bob.dh.public_bytes(), NI, NR)
    b_keys = bob.keys(alice.dh.public_bytes(), NI, NR)
    assert a_keys == b_keys
    # Initiator signs its request | Nr | prf(SK_pi, IDi); the responder checks.
    a_octets = signed_octets(init_msg, NR, SHA256, a_keys.sk_pi, alice.identity.encode())
    auth_i = psk_auth(SHA256, psk, a_octets)
    assert auth_i == SHA256(SHA256(psk, b"Key Pad for IKEv2"), a_octets)
    verify_psk_auth(SHA256, psk, signed_octets(init_msg, NR, SHA256, b_keys.sk_pi, alice.identity.encode()), auth_i)
    # Responder signs its response | Ni | prf(SK_pr, IDr); the initiator checks.
    auth_r = psk_auth(SHA256, psk, signed_octets(resp_msg, NI, SHA256, b_keys.sk_pr, bob.identity.encode()))
    verify_psk_auth(SHA256, psk, signed_octets(resp_msg, NI, SHA256, a_keys.sk_pr, bob.identity.encode()), auth_r)
    # A different key, identity or message fails authentication.
    for octets, secret in ((a_octets, b"wrong"), (signed_octets(resp_msg, NR, SHA256, a_keys.sk_pi, b""), psk)):
        with pytest.raises(RemoteProtocolError) as err:
            verify_psk_auth(SHA256, secret, octets, auth_i)
        assert err.value.notify == NotifyType.AUTHENTICATION_FAILED


# ------------------------------------------------------------------ RFC 7427
def test_algorithm_identifiers_match_rfc7427_appendix_a():
    # A.3 (ECDSA) ecdsa-with-sha256/384, A.1 (PKCS#1 1.5) sha256WithRSAEncryption,
    # A.4.3 RSASSA-PSS with SHA-256 (listed there with trailerField spelled out).
    assert ECDSA_SHA256.algorithm_id == h("300a 0608 2a8648ce3d040302")
    assert ECDSA_SHA384.algorithm_id == h("300a 0608 2a8648ce3d040303")
    assert RSA_PKCS1_SHA256.algorithm_id == h("300d 0609 2a864886f70d01010b 0500")
    assert RSA_PSS_SHA256.aliases == (h(
        "3046 0609 2a864886f70d01010a 3039"
        "a00f 300d 0609 608648016503040201 0500"
        "a11c 301a 0609 2a864886f70d010108 300d 0609 608648016503040201 0500"
        "a203 020120 a303 020101"),)


def _self_signed(key, **kw) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw")])
    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    builder = x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()) \
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
    return builder.sign(key, hashes.SHA256(), **kw).public_bytes(serialization.Encoding.DER)


def test_our_der_matches_what_x509_certificates_carry():
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert ECDSA_SHA256.algorithm_id in _self_signed(ec_key)
    assert RSA_PKCS1_SHA256.algorithm_id in _self_signed(rsa_key)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    assert RSA_PSS_SHA256.algorithm_id in _self_signed(rsa_key, rsa_padding=pss)


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_ecdsa_p256_sign_verify(rsa_key):
    key = ec.generate_private_key(ec.SECP256R1())
    octets = b"InitiatorSignedOctets"
    auth = sign_auth(key, ECDSA_SHA256, octets)
    assert auth[0] == len(ECDSA_SHA256.algorithm_id) and auth[1:13] == ECDSA_SHA256.algorithm_id
    decode_dss_signature(auth[13:])  # an ECDSA-Sig-Value in DER, not r | s
    assert verify_auth(key.public_key(), auth, octets) is ECDSA_SHA256
    for bad_key, bad_octets in ((key.public_key(), b"other"), (ec.generate_private_key(ec.SECP256R1()).public_key(),
                                                               octets), (rsa_key.public_key(), octets)):
        with pytest.raises(RemoteProtocolError) as err:
            verify_auth(bad_key, auth, bad_octets)
        assert err.value.notify == NotifyType.AUTHENTICATION_FAILED


def test_ecdsa_p384_picks_sha384():
    key = ec.generate_private_key(ec.SECP384R1())
    assert scheme_for_key(key) is ECDSA_SHA384
    assert verify_auth(key.public_key(), sign_auth(key, ECDSA_SHA384, b"x"), b"x") is ECDSA_SHA384


@pytest.mark.parametrize("scheme", [RSA_PSS_SHA256, RSA_PKCS1_SHA256])
def test_rsa_2048_sign_verify(rsa_key, scheme):
    octets = b"ResponderSignedOctets"
    auth = sign_auth(rsa_key, scheme, octets)
    assert len(auth) == 1 + len(scheme.algorithm_id) + 256
    assert verify_auth(rsa_key.public_key(), auth, octets) is scheme
    with pytest.raises(RemoteProtocolError):
        verify_auth(rsa_key.public_key(), auth, octets + b"!")
    with pytest.raises(RemoteProtocolError):  # accepted list excludes it
        verify_auth(rsa_key.public_key(), auth, octets, accepted=(ECDSA_SHA256,))


def test_rsa_pss_in_the_rfc7427_listing_form_is_accepted(rsa_key):
    listed = RSA_PSS_SHA256.aliases[0]
    signature = sign_auth(rsa_key, RSA_PSS_SHA256, b"m")[1 + len(RSA_PSS_SHA256.algorithm_id):]
    assert verify_auth(rsa_key.public_key(), bytes((len(listed),)) + listed + signature, b"m") is RSA_PSS_SHA256
    assert scheme_for_key(rsa_key) is RSA_PSS_SHA256


def test_signing_with_a_mismatched_key_is_a_local_error(rsa_key):
    with pytest.raises(LocalProtocolError):
        sign_auth(rsa_key, ECDSA_SHA256, b"x")


@pytest.mark.parametrize("data", [b"", b"\x0c", b"\x0c" + bytes(5), h("0b 3009 0607 2a8648ce3d0401") + b"sig"])
def test_truncated_or_unknown_auth_data_fails_authentication(data):
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(RemoteProtocolError) as err:
        verify_auth(key, data, b"x")
    assert err.value.notify == NotifyType.AUTHENTICATION_FAILED


def test_signature_hash_algorithms_notify_data():
    data = crypto.encode_hash_algorithms([HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384])
    assert data == h("0002 0003")
    assert crypto.decode_hash_algorithms(data) == (2, 3)
    with pytest.raises(RemoteProtocolError):
        crypto.decode_hash_algorithms(b"\x00")


def test_nat_detection_hash_is_sha1_of_spis_address_port():
    got = crypto.nat_detection_hash(SPI_I, SPI_R, IPv4Address("198.18.1.2"), 4500)
    assert got == hashlib.sha1(SPI_I + SPI_R + h("c6120102") + h("1194")).digest()
