"""IKE_AUTH authentication (RFC 7296 2.15, RFC 7427): our AUTH payload, the peer's check,
and the certificate path check for certificate authentication."""

from __future__ import annotations

import datetime
from ipaddress import IPv4Address

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import ExtensionPolicy, PolicyBuilder, Store, VerificationError

from ipsec.ike import crypto
from ipsec.ike.constants import AuthMethod, CertEncoding, HashAlgorithm, IdType, NotifyType
from ipsec.ike.errors import RemoteProtocolError
from ipsec.ike.payloads import Auth, Cert, CertReq, IdPayload
from ipsec.ike.policy import PeerPolicy

HASHES_WE_SIGN_WITH = (HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384)
MAX_CHAIN_DEPTH = 4  # intermediates a peer may send below our anchor


def _fail(why: str) -> RemoteProtocolError:
    return RemoteProtocolError(why, notify=NotifyType.AUTHENTICATION_FAILED)


def our_auth(policy: PeerPolicy, prf: crypto.Prf, octets: bytes) -> Auth:
    if policy.psk is not None:
        return Auth(AuthMethod.SHARED_KEY_MIC, crypto.psk_auth(prf, policy.psk, octets))
    assert policy.key is not None
    scheme = crypto.scheme_for_key(policy.key)
    return Auth(AuthMethod.DIGITAL_SIGNATURE, crypto.sign_auth(policy.key, scheme, octets))


def our_certs(policy: PeerPolicy) -> tuple[Cert, ...]:
    if policy.cert is None:
        return ()
    return (Cert(CertEncoding.X509_SIGNATURE, policy.cert.public_bytes(Encoding.DER)),)


def our_certreqs(policy: PeerPolicy) -> tuple[CertReq, ...]:
    """With certificate auth, ask for the peer's certificate (3.7): many peers (strongSwan's default
    send_cert = ifasked) send theirs only when asked. The authority field lists the SHA-1 hashes of
    our trust anchors' SubjectPublicKeyInfo."""
    if policy.key is None or not policy.cas:
        return ()
    spki_hashes = []
    for ca in policy.cas:
        h = hashes.Hash(hashes.SHA1())  # the hash 3.7 prescribes (an identifier, not a signature)
        h.update(ca.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
        spki_hashes.append(h.finalize())
    return (CertReq(CertEncoding.X509_SIGNATURE, b"".join(spki_hashes)),)


def check_peer(policy: PeerPolicy, prf: crypto.Prf, octets: bytes, peer_id: IdPayload, auth: Auth | None,
               certs: tuple[Cert, ...], now: datetime.datetime) -> str:
    """Authenticate the peer or raise AUTHENTICATION_FAILED. Returns the peer identity as text."""
    if auth is None:
        raise _fail("no AUTH payload")
    if policy.remote_id is not None and not policy.remote_id.matches(peer_id):
        raise _fail(f"peer identity {describe(peer_id)} is not the expected {policy.remote_id}")
    if policy.psk is not None:
        if auth.method != AuthMethod.SHARED_KEY_MIC:
            raise _fail(f"peer used auth method {auth.method}, we expect a shared key")
        crypto.verify_psk_auth(prf, policy.psk, octets, auth.data)
        return describe(peer_id)
    if auth.method != AuthMethod.DIGITAL_SIGNATURE:
        raise _fail(f"peer used auth method {auth.method}, we accept digital signatures (RFC 7427)")
    leaf = verify_chain(certs, policy.cas, now)
    if not id_matches_cert(peer_id, leaf):
        raise _fail(f"peer identity {describe(peer_id)} is not in its certificate")
    if leaf.serial_number in policy.revoked:
        raise _fail(f"certificate of {leaf.subject.rfc4514_string()} (serial {leaf.serial_number:x}) is revoked")
    if policy.remote_serial is not None:
        serials = [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)]
        if serials != [policy.remote_serial]:
            raise _fail(f"certificate of {leaf.subject.rfc4514_string()} is not the one issued for peer "
                        f"{policy.name} (device serial {policy.remote_serial})")
    crypto.verify_auth(leaf.public_key(), auth.data, octets)  # type: ignore[arg-type]
    return describe(peer_id)


def peer_cert_serial(certs: tuple[Cert, ...]) -> int | None:
    """The serial number of the certificate a peer authenticated with (check_peer passed on it)."""
    first = next((c for c in certs if c.encoding == CertEncoding.X509_SIGNATURE), None)
    return None if first is None else x509.load_der_x509_certificate(first.data).serial_number


def verify_chain(certs: tuple[Cert, ...], cas: tuple[x509.Certificate, ...], now: datetime.datetime
                 ) -> x509.Certificate:
    """The first CERT is the peer's; any further ones may be intermediates (untrusted). The path to one
    of our CAs is built and checked by cryptography's X.509 verifier (signatures, validity at ``now``,
    CA constraints); the peer's certificate needs no particular extended key usage (RFC 4945 5.1.3.12)."""
    parsed = []
    for c in certs:
        if c.encoding != CertEncoding.X509_SIGNATURE:
            continue
        try:
            cert = x509.load_der_x509_certificate(c.data)
            _ = (cert.subject, cert.issuer, cert.extensions, cert.public_key())  # parsed lazily: fail here
        except (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion, x509.DuplicateExtension,
                x509.UnsupportedGeneralNameType):
            raise _fail("peer sent a certificate that does not parse") from None
        parsed.append(cert)
    if not parsed:
        raise _fail("peer sent no X.509 certificate")
    if not cas:
        raise _fail("no trust anchor to check the peer's certificate against")
    leaf = parsed[0]
    verifier = (PolicyBuilder().store(Store(list(cas))).time(now).max_chain_depth(MAX_CHAIN_DEPTH)
                .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(),
                                    ee_policy=ExtensionPolicy.permit_all())
                .build_client_verifier())
    try:
        verifier.verify(leaf, parsed[1:])
    except VerificationError as exc:
        raise _fail(f"certificate of {leaf.subject.rfc4514_string()} does not chain to a trusted CA: {exc}") from None
    return leaf


def id_matches_cert(peer_id: IdPayload, cert: x509.Certificate) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if peer_id.id_type == IdType.IPV4_ADDR and len(peer_id.data) == 4:
        return san is not None and IPv4Address(peer_id.data) in san.get_values_for_type(x509.IPAddress)
    if peer_id.id_type == IdType.FQDN:
        return san is not None and peer_id.data.decode("ascii", "replace") in san.get_values_for_type(x509.DNSName)
    if peer_id.id_type == IdType.DER_ASN1_DN:
        return peer_id.data == cert.subject.public_bytes()
    return False


def describe(peer_id: IdPayload) -> str:
    if peer_id.id_type == IdType.IPV4_ADDR and len(peer_id.data) == 4:
        return str(IPv4Address(peer_id.data))
    if peer_id.id_type in (IdType.FQDN, IdType.RFC822_ADDR):
        return peer_id.data.decode("ascii", "replace")
    return f"id{peer_id.id_type}:{peer_id.data.hex()}"
