"""IKEv2 cryptography: Diffie-Hellman, PRF and prf+, key derivation, the SK
payload AEAD, and AUTH payload computation (shared key and RFC 7427).

Sans-IO: no sockets, no clocks. Key generation draws on the OS random source
through ``cryptography``; everything else is a pure function of its inputs,
so tests check it against published vectors.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ipsec.constants import AES_GCM_ICV_LEN, AES_GCM_IV_LEN
from ipsec.ike.constants import AES_GCM_SALT_LEN, DhGroup, HashAlgorithm, NotifyType, PrfId
from ipsec.ike.errors import IntegrityError, LocalProtocolError, RemoteProtocolError

# ------------------------------------------------------------------ Diffie-Hellman
# RFC 5903 section 7: an ECP public value is x | y, each coordinate padded to
# the field size, with no 0x04 point-format octet; section 9: the shared
# secret is the x coordinate only. RFC 8031 section 2: X25519 public values
# and shared secrets are the 32-octet strings of RFC 7748.
_ECP_CURVES: dict[int, tuple[ec.EllipticCurve, int]] = {
    DhGroup.ECP_256: (ec.SECP256R1(), 32),
    DhGroup.ECP_384: (ec.SECP384R1(), 48),
}
_X25519_LEN = 32
SUPPORTED_DH_GROUPS = (DhGroup.CURVE25519, DhGroup.ECP_256, DhGroup.ECP_384)


def _bad_ke(message: str) -> RemoteProtocolError:
    # A malformed public value is a syntax error (strongSwan answers it the
    # same way); INVALID_KE_PAYLOAD is for an unwanted group (2.7), and the
    # state machine sends that one with the group it wants as data.
    return RemoteProtocolError(message, notify=NotifyType.INVALID_SYNTAX)


def dh_public_len(group: int) -> int:
    if group == DhGroup.CURVE25519:
        return _X25519_LEN
    if group in _ECP_CURVES:
        return 2 * _ECP_CURVES[group][1]
    raise LocalProtocolError(f"DH group {group} is not supported")


@dataclass(frozen=True)
class DhPrivate:
    """Our half of one key exchange. Use once: ephemeral keys give PFS (2.12)."""

    group: int
    key: ec.EllipticCurvePrivateKey | X25519PrivateKey = field(repr=False)

    def public_bytes(self) -> bytes:
        """The Key Exchange Data of our KE payload (3.4)."""
        if isinstance(self.key, X25519PrivateKey):
            return self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        point = self.key.public_key().public_bytes(serialization.Encoding.X962,
                                                   serialization.PublicFormat.UncompressedPoint)
        return point[1:]  # drop the 0x04 prefix, RFC 5903 section 7

    def shared_secret(self, peer_public: bytes) -> bytes:
        """g^ir from the peer's Key Exchange Data; a bad value is the peer's fault."""
        expected = dh_public_len(self.group)
        if len(peer_public) != expected:
            raise _bad_ke(f"DH group {self.group}: public value of {len(peer_public)} octets, expected {expected}")
        if isinstance(self.key, X25519PrivateKey):
            return self._x25519(peer_public)
        curve = _ECP_CURVES[self.group][0]
        try:
            # Rejects points off the curve (RFC 6989 section 2.3 asks for this check).
            peer = ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + peer_public)
            return self.key.exchange(ec.ECDH(), peer)
        except ValueError as exc:
            raise _bad_ke(f"DH group {self.group}: public value is not a point on the curve") from exc

    def _x25519(self, peer_public: bytes) -> bytes:
        assert isinstance(self.key, X25519PrivateKey)
        try:
            secret = self.key.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError as exc:  # OpenSSL refuses an all-zero result itself
            raise _bad_ke("X25519: low-order public value (all-zero shared secret)") from exc
        if not any(secret):  # RFC 8031 section 2.3: MUST check and reject
            raise _bad_ke("X25519: low-order public value (all-zero shared secret)")
        return secret


def dh_generate(group: int) -> DhPrivate:
    if group == DhGroup.CURVE25519:
        return DhPrivate(group, X25519PrivateKey.generate())
    if group in _ECP_CURVES:
        return DhPrivate(group, ec.generate_private_key(_ECP_CURVES[group][0]))
    raise LocalProtocolError(f"DH group {group} is not supported")


def dh_from_private_value(group: int, value: bytes) -> DhPrivate:
    """A fixed private value (big-endian scalar for ECP), for known-answer tests."""
    if group == DhGroup.CURVE25519:
        return DhPrivate(group, X25519PrivateKey.from_private_bytes(value))
    if group in _ECP_CURVES:
        return DhPrivate(group, ec.derive_private_key(int.from_bytes(value, "big"), _ECP_CURVES[group][0]))
    raise LocalProtocolError(f"DH group {group} is not supported")


# ------------------------------------------------------------------ PRF, prf+
@dataclass(frozen=True)
class Prf:
    """An HMAC PRF (RFC 4868). HMAC takes any key length, so 2.14's Ni | Nr key is used whole."""

    transform_id: int
    hash_name: str

    @property
    def size(self) -> int:
        """Output length, also the length of SK_d, SK_pi and SK_pr (2.14)."""
        return hashlib.new(self.hash_name).digest_size

    def __call__(self, key: bytes, data: bytes) -> bytes:
        return hmac.new(key, data, self.hash_name).digest()

    def plus(self, key: bytes, seed: bytes, length: int) -> bytes:
        """prf+ (2.13): T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n), up to n = 255."""
        if length > 255 * self.size:
            raise LocalProtocolError(f"prf+ cannot produce {length} octets")
        out, block = b"", b""
        counter = 1
        while len(out) < length:
            block = self(key, block + seed + bytes((counter,)))
            out += block
            counter += 1
        return out[:length]


PRFS: dict[int, Prf] = {PrfId.HMAC_SHA2_256: Prf(PrfId.HMAC_SHA2_256, "sha256"),
                         PrfId.HMAC_SHA2_384: Prf(PrfId.HMAC_SHA2_384, "sha384")}


def prf_for(transform_id: int) -> Prf:
    try:
        return PRFS[transform_id]
    except KeyError:
        raise LocalProtocolError(f"PRF transform {transform_id} is not supported") from None


# ------------------------------------------------------------------ key material
def aes_gcm_keymat_len(key_bits: int) -> int:
    """Octets of keying material per AES-GCM key: the key, then a 4-octet salt
    (RFC 5282 section 7 for IKE, RFC 4106 section 8.1 for ESP)."""
    if key_bits not in (128, 192, 256):
        raise LocalProtocolError(f"AES-GCM key length {key_bits}")
    return key_bits // 8 + AES_GCM_SALT_LEN


@dataclass(frozen=True)
class IkeSaKeys:
    """2.14. With an AEAD the integrity keys are empty; SK_e* include the salt."""

    sk_d: bytes = field(repr=False)
    sk_ai: bytes = field(repr=False)
    sk_ar: bytes = field(repr=False)
    sk_ei: bytes = field(repr=False)
    sk_er: bytes = field(repr=False)
    sk_pi: bytes = field(repr=False)
    sk_pr: bytes = field(repr=False)


def skeyseed(prf: Prf, nonce_i: bytes, nonce_r: bytes, shared_secret: bytes) -> bytes:
    """2.14: SKEYSEED = prf(Ni | Nr, g^ir), for a new IKE SA from IKE_SA_INIT."""
    return prf(nonce_i + nonce_r, shared_secret)


def rekey_skeyseed(old_prf: Prf, old_sk_d: bytes, shared_secret: bytes, nonce_i: bytes, nonce_r: bytes) -> bytes:
    """2.18: SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr). The PRF here is
    the OLD SA's (it is keyed with the old SK_d); prf+ then uses the new one."""
    return old_prf(old_sk_d, shared_secret + nonce_i + nonce_r)


def ike_sa_keys(prf: Prf, seed: bytes, nonce_i: bytes, nonce_r: bytes, spi_i: bytes, spi_r: bytes,
                encr_keymat_len: int, integ_key_len: int = 0) -> IkeSaKeys:
    """2.14: {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr}
    = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)."""
    sizes = (prf.size, integ_key_len, integ_key_len, encr_keymat_len, encr_keymat_len, prf.size, prf.size)
    stream = prf.plus(seed, nonce_i + nonce_r + spi_i + spi_r, sum(sizes))
    parts, pos = [], 0
    for size in sizes:
        parts.append(stream[pos : pos + size])
        pos += size
    return IkeSaKeys(*parts)


@dataclass(frozen=True)
class ChildSaKeys:
    """2.17: keys of the SA carrying initiator-to-responder traffic come first.
    ``encr_*`` is key + salt for AES-GCM; ``integ_*`` is empty with an AEAD."""

    encr_i: bytes = field(repr=False)
    integ_i: bytes = field(repr=False)
    encr_r: bytes = field(repr=False)
    integ_r: bytes = field(repr=False)


def child_sa_keys(prf: Prf, sk_d: bytes, nonce_i: bytes, nonce_r: bytes, encr_keymat_len: int,
                  integ_key_len: int = 0, shared_secret: bytes = b"") -> ChildSaKeys:
    """2.17: KEYMAT = prf+(SK_d, [g^ir (new)] | Ni | Nr); g^ir only with a
    CREATE_CHILD_SA KE exchange (PFS). Each direction: encryption, then integrity."""
    per_dir = encr_keymat_len + integ_key_len
    km = prf.plus(sk_d, shared_secret + nonce_i + nonce_r, 2 * per_dir)
    return ChildSaKeys(km[:encr_keymat_len], km[encr_keymat_len:per_dir],
                       km[per_dir : per_dir + encr_keymat_len], km[per_dir + encr_keymat_len :])


# ------------------------------------------------------------------ SK payload AEAD
class Aead:
    """AES-GCM with a 16-octet ICV for the SK payload (RFC 5282): the 12-octet
    nonce is the 4-octet salt from the key material, then the 8-octet IV sent
    in the payload. The caller must never reuse an IV under one key."""

    IV_LEN = AES_GCM_IV_LEN
    ICV_LEN = AES_GCM_ICV_LEN

    __slots__ = ("_gcm", "_salt")

    def __init__(self, keymat: bytes) -> None:
        key_len = len(keymat) - AES_GCM_SALT_LEN
        if key_len not in (16, 24, 32):
            raise LocalProtocolError(f"AES-GCM key material of {len(keymat)} octets")
        self._gcm = AESGCM(keymat[:key_len])
        self._salt = keymat[key_len:]

    def __repr__(self) -> str:
        return "Aead(<key hidden>)"

    def _nonce(self, iv: bytes) -> bytes:
        if len(iv) != self.IV_LEN:
            raise LocalProtocolError(f"AES-GCM IV of {len(iv)} octets, expected {self.IV_LEN}")
        return self._salt + iv

    def encrypt(self, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """Returns ciphertext | ICV."""
        return self._gcm.encrypt(self._nonce(iv), plaintext, aad)

    def decrypt(self, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """``ciphertext`` ends with the ICV; a forgery raises IntegrityError."""
        if len(ciphertext) < self.ICV_LEN:
            raise IntegrityError("SK payload shorter than its ICV")
        try:
            return self._gcm.decrypt(self._nonce(iv), ciphertext, aad)
        except InvalidTag:
            raise IntegrityError("SK payload failed its integrity check") from None


# ------------------------------------------------------------------ AUTH (2.15)
_KEY_PAD = b"Key Pad for IKEv2"


def _auth_failed(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, notify=NotifyType.AUTHENTICATION_FAILED)


def signed_octets(real_message: bytes, peer_nonce: bytes, prf: Prf, sk_p: bytes, id_body: bytes) -> bytes:
    """2.15: the octets each side signs or MACs.

    Initiator: its IKE_SA_INIT request | Nr | prf(SK_pi, IDi body).
    Responder: its IKE_SA_INIT response | Ni | prf(SK_pr, IDr body).
    ``id_body`` is RestOfIDPayload: ID type, 3 reserved octets, ID data, i.e.
    the ID payload body as it was sent.
    """
    return real_message + peer_nonce + prf(sk_p, id_body)


def psk_auth(prf: Prf, shared_secret: bytes, octets: bytes) -> bytes:
    """2.15: AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>)."""
    return prf(prf(shared_secret, _KEY_PAD), octets)


def verify_psk_auth(prf: Prf, shared_secret: bytes, octets: bytes, received: bytes) -> None:
    if not hmac.compare_digest(psk_auth(prf, shared_secret, octets), received):
        raise _auth_failed("shared key AUTH does not match")


# ------------------------------------------------------------------ RFC 7427 signatures
# A tiny DER writer: the AlgorithmIdentifiers below are built here and checked
# in tests against the byte strings RFC 7427 Appendix A lists.
def _der(tag: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    if len(body) > 127:
        raise LocalProtocolError("DER: long-form lengths are not needed here")
    return bytes((tag, len(body))) + body


def _oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        # Base 128, most significant group first, high bit set on all but the last.
        rest, chunk = arc >> 7, [arc & 0x7F]
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        out += bytes(reversed(chunk))
    return _der(0x06, bytes(out))


_SEQ, _NULL = 0x30, b"\x05\x00"
_SHA256_ALG = _der(_SEQ, _oid("2.16.840.1.101.3.4.2.1"), _NULL)  # id-sha256, NULL params
_PSS_PARAMS = (_der(0xA0, _SHA256_ALG),  # hashAlgorithm [0]
               _der(0xA1, _der(_SEQ, _oid("1.2.840.113549.1.1.8"), _SHA256_ALG)),  # maskGenAlgorithm [1] MGF1
               _der(0xA2, _der(0x02, bytes((32,)))))  # saltLength [2] = 32


@dataclass(frozen=True)
class SignatureScheme:
    """An RFC 7427 signature algorithm: its AlgorithmIdentifier (DER) and how to sign."""

    name: str
    algorithm_id: bytes
    hash_algorithm: int  # the RFC 7427 section 7 hash ID, as in SIGNATURE_HASH_ALGORITHMS
    key_type: str  # "ec" or "rsa"
    pss: bool = False
    # Other encodings of the same algorithm we accept from peers.
    aliases: tuple[bytes, ...] = ()

    def digest(self) -> hashes.HashAlgorithm:
        return hashes.SHA384() if self.hash_algorithm == HashAlgorithm.SHA2_384 else hashes.SHA256()

    def rsa_padding(self) -> padding.AsymmetricPadding:
        if self.pss:
            return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        return padding.PKCS1v15()


ECDSA_SHA256 = SignatureScheme("ecdsa-with-SHA256", _der(_SEQ, _oid("1.2.840.10045.4.3.2")),
                               HashAlgorithm.SHA2_256, "ec")
ECDSA_SHA384 = SignatureScheme("ecdsa-with-SHA384", _der(_SEQ, _oid("1.2.840.10045.4.3.3")),
                               HashAlgorithm.SHA2_384, "ec")
RSA_PKCS1_SHA256 = SignatureScheme("sha256WithRSAEncryption", _der(_SEQ, _oid("1.2.840.113549.1.1.11"), _NULL),
                                   HashAlgorithm.SHA2_256, "rsa")
# We send DER (trailerField left out: it is the DEFAULT), and also accept the
# listing of RFC 7427 Appendix A.4.3, which spells trailerField [3] = 1 out.
RSA_PSS_SHA256 = SignatureScheme(
    "RSASSA-PSS-SHA256", _der(_SEQ, _oid("1.2.840.113549.1.1.10"), _der(_SEQ, *_PSS_PARAMS)),
    HashAlgorithm.SHA2_256, "rsa", pss=True,
    aliases=(_der(_SEQ, _oid("1.2.840.113549.1.1.10"),
                  _der(_SEQ, *_PSS_PARAMS, _der(0xA3, _der(0x02, b"\x01")))),))
SIGNATURE_SCHEMES = (ECDSA_SHA256, ECDSA_SHA384, RSA_PSS_SHA256, RSA_PKCS1_SHA256)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def scheme_for_key(key: PrivateKey | PublicKey) -> SignatureScheme:
    """A sensible default: ECDSA with the hash matching the curve, RSA-PSS for RSA (RFC 8247)."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return ECDSA_SHA384 if key.curve.key_size >= 384 else ECDSA_SHA256
    return RSA_PSS_SHA256


def sign_auth(key: PrivateKey, scheme: SignatureScheme, octets: bytes) -> bytes:
    """AUTH data for method 14 (RFC 7427 section 3):
    ASN.1 length (1) | AlgorithmIdentifier | signature. ECDSA signatures are the
    DER ECDSA-Sig-Value, which is what ``cryptography`` produces."""
    if isinstance(key, ec.EllipticCurvePrivateKey) and scheme.key_type == "ec":
        signature = key.sign(octets, ec.ECDSA(scheme.digest()))
    elif isinstance(key, rsa.RSAPrivateKey) and scheme.key_type == "rsa":
        signature = key.sign(octets, scheme.rsa_padding(), scheme.digest())
    else:
        raise LocalProtocolError(f"{scheme.name} cannot sign with a {type(key).__name__}")
    return bytes((len(scheme.algorithm_id),)) + scheme.algorithm_id + signature


def parse_auth_algorithm(auth_data: bytes, accepted: Sequence[SignatureScheme] = SIGNATURE_SCHEMES
                         ) -> tuple[SignatureScheme, bytes]:
    """Split method-14 AUTH data into (scheme, signature); unknown algorithms fail authentication."""
    if not auth_data or len(auth_data) < 1 + auth_data[0]:
        raise _auth_failed("AUTH data shorter than its AlgorithmIdentifier")
    algorithm_id, signature = auth_data[1 : 1 + auth_data[0]], auth_data[1 + auth_data[0] :]
    for scheme in accepted:
        if algorithm_id in (scheme.algorithm_id, *scheme.aliases):
            return scheme, signature
    raise _auth_failed(f"signature algorithm {algorithm_id.hex()} is not accepted")


def verify_auth(key: PublicKey, auth_data: bytes, octets: bytes,
                accepted: Sequence[SignatureScheme] = SIGNATURE_SCHEMES) -> SignatureScheme:
    """Check method-14 AUTH data against the peer's public key; returns the scheme used."""
    scheme, signature = parse_auth_algorithm(auth_data, accepted)
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and scheme.key_type == "ec":
            key.verify(signature, octets, ec.ECDSA(scheme.digest()))
        elif isinstance(key, rsa.RSAPublicKey) and scheme.key_type == "rsa":
            key.verify(signature, octets, scheme.rsa_padding(), scheme.digest())
        else:
            raise _auth_failed(f"{scheme.name} does not fit the peer's {type(key).__name__}")
    except InvalidSignature:
        raise _auth_failed(f"{scheme.name} signature does not verify") from None
    return scheme


def encode_hash_algorithms(ids: Sequence[int]) -> bytes:
    """SIGNATURE_HASH_ALGORITHMS notify data (RFC 7427 section 4): 16-bit hash IDs."""
    if any(not 0 <= i <= 0xFFFF for i in ids):
        raise LocalProtocolError("hash algorithm IDs are 16 bits")
    return b"".join(struct.pack("!H", i) for i in ids)


def decode_hash_algorithms(data: bytes) -> tuple[int, ...]:
    if len(data) % 2:
        raise RemoteProtocolError("SIGNATURE_HASH_ALGORITHMS: odd length", notify=NotifyType.INVALID_SYNTAX)
    return tuple(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))


# ------------------------------------------------------------------ NAT detection
def nat_detection_hash(spi_i: bytes, spi_r: bytes, address: IPv4Address | IPv6Address, port: int) -> bytes:
    """2.23: NAT_DETECTION_*_IP data = SHA-1(SPIi | SPIr | IP | Port). SHA-1 is
    what the RFC fixes here; it is a hash for matching, not for security."""
    digest = hashlib.sha1(spi_i + spi_r + address.packed + struct.pack("!H", port), usedforsecurity=False)
    return digest.digest()
