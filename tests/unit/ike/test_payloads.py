"""IKEv2 payload codecs (RFC 7296 section 3): round trips, hand-built golden
bytes, and the errors malformed bodies raise. The sample builders at the top
are shared with the message and fuzz tests."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address

import pytest

from ipsec.ike.constants import (
    AuthMethod,
    CertEncoding,
    DhGroup,
    EncrId,
    EsnId,
    ExchangeType,
    HeaderFlag,
    NotifyType,
    PrfId,
    ProtocolId,
    TransformType,
    TsType,
)
from ipsec.ike.errors import LocalProtocolError, RemoteProtocolError
from ipsec.ike.message import Message, decode_payloads, encode_payloads
from ipsec.ike.payloads import (
    KE,
    PAYLOAD_CLASSES,
    SA,
    Attribute,
    Auth,
    Cert,
    CertReq,
    Delete,
    Encrypted,
    IDi,
    IDr,
    Nonce,
    Notify,
    Proposal,
    RawSelector,
    TrafficSelector,
    Transform,
    TSi,
    TSr,
    UnknownPayload,
    Vendor,
)

SPI_I = bytes.fromhex("0102030405060708")
SPI_R = bytes.fromhex("a1a2a3a4a5a6a7a8")


def ike_proposal() -> Proposal:
    """AES-GCM-16/256, PRF-HMAC-SHA2-256, ECP-256: the gateway's IKE suite."""
    return Proposal(1, ProtocolId.IKE, b"", (
        Transform.with_key_length(TransformType.ENCR, EncrId.AES_GCM_16, 256),
        Transform(TransformType.PRF, PrfId.HMAC_SHA2_256),
        Transform(TransformType.DH, DhGroup.ECP_256),
    ))


def esp_proposal(spi: bytes = b"\xc0\x00\x00\x01") -> Proposal:
    return Proposal(1, ProtocolId.ESP, spi, (
        Transform.with_key_length(TransformType.ENCR, EncrId.AES_GCM_16, 256),
        Transform(TransformType.ESN, EsnId.NO_ESN),
    ))


def system_ts(address: str) -> TrafficSelector:
    return TrafficSelector.for_network(IPv4Network(f"{address}/32"))


def every_payload() -> list:
    """One instance of each payload class, with the odd corners filled in."""
    return [
        SA((ike_proposal(), Proposal(2, ProtocolId.IKE, b"", (
            Transform.with_key_length(TransformType.ENCR, EncrId.AES_GCM_16, 128),
            Transform(TransformType.PRF, PrfId.HMAC_SHA2_384),
            Transform(TransformType.DH, DhGroup.CURVE25519),
            Transform(TransformType.DH, 99, ()),
        )))),
        SA((esp_proposal(),)),
        KE(DhGroup.ECP_256, bytes(range(64))),
        IDi.from_address(IPv4Address("198.19.255.1")),
        IDr.from_fqdn("gw2.example.net"),
        IDr(9, b"\x30\x00"),
        Cert(CertEncoding.X509_SIGNATURE, b"\x30\x82\x01\x00" + bytes(20)),
        CertReq(CertEncoding.X509_SIGNATURE, bytes(range(40))),
        Auth(AuthMethod.SHARED_KEY_MIC, bytes(32)),
        Nonce(bytes(range(16))),
        Nonce(bytes(256)),
        Notify(NotifyType.NAT_DETECTION_SOURCE_IP, bytes(20)),
        Notify(NotifyType.REKEY_SA, b"", ProtocolId.ESP, b"\xde\xad\xbe\xef"),
        Notify(NotifyType.INITIAL_CONTACT),
        Delete(ProtocolId.IKE),
        Delete(ProtocolId.ESP, (b"\x00\x00\x00\x01", b"\x00\x00\x00\x02")),
        Vendor(b"nsg-0.1"),
        TSi((system_ts("198.19.255.1"),
             TrafficSelector(IPv4Address("10.0.0.0"), IPv4Address("10.0.0.255"), 6, 443, 443))),
        TSr((TrafficSelector(IPv6Address("2001:db8::"), IPv6Address("2001:db8::ffff")),
             RawSelector(bytes((10, 0, 0, 8, 1, 2, 3, 4))))),
        UnknownPayload(47, b"\x01\x00\x00\x00"),
    ]


def ike_sa_init_request(ke_data: bytes, nonce: bytes, nat_src: bytes, nat_dst: bytes) -> Message:
    return Message(SPI_I, bytes(8), ExchangeType.IKE_SA_INIT, HeaderFlag.INITIATOR, 0, (
        SA((ike_proposal(),)),
        KE(DhGroup.ECP_256, ke_data),
        Nonce(nonce),
        Notify(NotifyType.NAT_DETECTION_SOURCE_IP, nat_src),
        Notify(NotifyType.NAT_DETECTION_DESTINATION_IP, nat_dst),
    ))


def ike_auth_request(auth_data: bytes = bytes(32)) -> Message:
    return Message(SPI_I, SPI_R, ExchangeType.IKE_AUTH, HeaderFlag.INITIATOR, 1, (
        IDi.from_address(IPv4Address("198.19.255.1")),
        Auth(AuthMethod.SHARED_KEY_MIC, auth_data),
        Notify(NotifyType.INITIAL_CONTACT),
        SA((esp_proposal(),)),
        TSi((system_ts("198.19.255.1"),)),
        TSr((system_ts("198.19.255.2"),)),
    ))


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("payload", every_payload(), ids=lambda p: type(p).__name__)
def test_every_payload_round_trips_through_its_body(payload):
    if not isinstance(payload, UnknownPayload):  # its type is only known from the chain
        assert type(payload).decode(payload.encode()) == payload
    first, chain = encode_payloads([payload])
    assert first == payload.payload_type
    assert decode_payloads(first, chain) == (payload,)


def test_a_chain_of_every_payload_round_trips_in_order():
    payloads = every_payload()
    first, chain = encode_payloads(payloads)
    assert decode_payloads(first, chain) == tuple(payloads)


def test_every_registered_type_has_a_sample():
    assert {p.payload_type for p in every_payload()} >= set(PAYLOAD_CLASSES)


# ------------------------------------------------------------------ golden bytes
def test_sa_payload_golden_aes_gcm_256_prf_sha256_ecp256():
    # Built by hand from RFC 7296 3.3.1, 3.3.2 and 3.3.5.
    expected = bytes.fromhex(
        "00 00 0024"        # last proposal, reserved, proposal length 36
        "01 01 00 03"       # proposal 1, protocol IKE, SPI size 0, 3 transforms
        "03 00 000c"        # more transforms follow, length 12
        "01 00 0014"        # ENCR, ENCR_AES_GCM_16 (20)
        "800e 0100"         # TV attribute Key Length (14) = 256
        "03 00 0008"        # more, length 8
        "02 00 0005"        # PRF, PRF_HMAC_SHA2_256 (5)
        "00 00 0008"        # last transform, length 8
        "04 00 0013"        # DH, group 19
    )
    sa = SA((ike_proposal(),))
    assert sa.encode() == expected
    assert SA.decode(expected) == sa
    assert sa.proposals[0].of_type(TransformType.ENCR)[0].key_length == 256
    assert sa.proposals[0].of_type(TransformType.PRF)[0].key_length is None


def test_ts_payload_golden_ipv4_host_any_protocol():
    # RFC 7296 3.13 and 3.13.1: one TS_IPV4_ADDR_RANGE for 198.19.255.1/32.
    expected = bytes.fromhex(
        "01 000000"         # one selector, reserved
        "07 00 0010"        # TS_IPV4_ADDR_RANGE, any protocol, length 16
        "0000 ffff"         # ports 0..65535
        "c613ff01 c613ff01"  # 198.19.255.1 .. 198.19.255.1
    )
    ts = TSi((system_ts("198.19.255.1"),))
    assert ts.encode() == expected
    assert TSi.decode(expected) == ts
    assert ts.selectors[0].ts_type == TsType.IPV4_ADDR_RANGE


def test_notify_golden_with_and_without_spi():
    # RFC 7296 3.10: protocol, SPI size, type, SPI, data.
    nat = Notify(NotifyType.NAT_DETECTION_SOURCE_IP, bytes(range(20)))
    assert nat.encode() == bytes.fromhex("00 00 4004") + bytes(range(20))
    rekey = Notify(NotifyType.REKEY_SA, b"", ProtocolId.ESP, bytes.fromhex("deadbeef"))
    assert rekey.encode() == bytes.fromhex("03 04 4009 deadbeef")
    assert Notify.decode(rekey.encode()) == rekey
    assert not rekey.is_error
    assert Notify(NotifyType.NO_PROPOSAL_CHOSEN).is_error


def test_generic_header_golden_and_critical_bit_of_unknown_payloads():
    first, chain = encode_payloads([Vendor(b"ab"), UnknownPayload(200, b"xyz", critical=True)])
    assert first == 43
    # Vendor: next 200, not critical, length 6; unknown: last, critical, length 7.
    assert chain == bytes.fromhex("c8 00 0006 6162 00 80 0007 78797a")


def test_delete_golden():
    assert Delete(ProtocolId.IKE).encode() == bytes.fromhex("01 00 0000")
    two = Delete(ProtocolId.ESP, (bytes.fromhex("00000001"), bytes.fromhex("00000002")))
    assert two.encode() == bytes.fromhex("03 04 0002 00000001 00000002")


# ------------------------------------------------------------------ unknown and critical payloads
def test_unknown_non_critical_payload_is_kept():
    chain = bytes.fromhex("00 00 0008 01020304")
    assert decode_payloads(47, chain) == (UnknownPayload(47, bytes.fromhex("01020304")),)


def test_unknown_critical_payload_is_rejected_with_its_type():
    chain = bytes.fromhex("00 80 0008 01020304")
    with pytest.raises(RemoteProtocolError) as err:
        decode_payloads(47, chain)
    assert err.value.notify == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD
    assert err.value.notify_data == bytes((47,))


def test_known_payload_with_critical_bit_is_accepted():
    chain = bytes.fromhex("00 80 0008 6e73672d")
    assert decode_payloads(43, chain) == (Vendor(b"nsg-"),)


def test_sk_payload_ends_the_chain_and_names_the_first_inner_payload():
    sk = Encrypted(35, b"\x00" * 25)
    first, chain = encode_payloads([Notify(NotifyType.INITIAL_CONTACT), sk])
    assert chain[8:10] == bytes.fromhex("23 00")  # SK's next payload = IDi
    assert decode_payloads(first, chain)[-1] == sk
    with pytest.raises(LocalProtocolError):
        encode_payloads([sk, Vendor(b"x")])


# ------------------------------------------------------------------ malformed bodies
@pytest.mark.parametrize(("cls", "body"), [
    (KE, b"\x00\x13\x00"),
    (IDi, b"\x01\x00"),
    (Auth, b""),
    (Cert, b""),
    (Nonce, bytes(15)),
    (Nonce, bytes(257)),
    (Notify, b"\x03\x04\x40\x09\xde\xad"),  # SPI size 4, only 2 octets of SPI
    (Delete, b"\x03\x04\x00\x02" + bytes(7)),
    (TSi, b"\x02\x00\x00\x00" + bytes.fromhex("07000010 0000ffff c613ff01 c613ff01")),  # says 2, has 1
    (TSi, b"\x01\x00\x00\x00" + bytes.fromhex("07000014 0000ffff c613ff01 c613ff01 00000000")),
    (SA, b""),
    (SA, bytes.fromhex("02 00 0008 01 01 00 00")),  # says more proposals, has none
    (SA, bytes.fromhex("00 00 0008 01 01 00 01")),  # says 1 transform, has none
    (SA, bytes.fromhex("00 00 0010 01 01 00 01 00 00 0008 01 00 0014 00")),  # trailing octet
    (SA, bytes.fromhex("00 00 0003 01")),  # proposal length below its header
])
def test_malformed_bodies_are_the_peers_fault(cls, body):
    with pytest.raises(RemoteProtocolError) as err:
        cls.decode(body)
    assert err.value.notify == NotifyType.INVALID_SYNTAX
    assert err.value.fault == "remote"


@pytest.mark.parametrize("chain", [
    bytes.fromhex("00 00 0003"),  # length below the generic header
    bytes.fromhex("00 00 0009 6e73"),  # length beyond the data
    bytes.fromhex("00 00 0004 00"),  # trailing octet after the last payload
    bytes.fromhex("2b 00 0004"),  # says another payload follows; none does
])
def test_malformed_chains_are_syntax_errors(chain):
    with pytest.raises(RemoteProtocolError) as err:
        decode_payloads(43, chain)
    assert err.value.notify == NotifyType.INVALID_SYNTAX


@pytest.mark.parametrize("make", [
    lambda: Nonce(bytes(8)),
    lambda: KE(70000, b""),
    lambda: Transform(TransformType.ENCR, -1),
    lambda: Attribute(14, 70000),
    lambda: Proposal(1, ProtocolId.ESP, bytes(256), ()),
    lambda: Notify(NotifyType.COOKIE, spi=bytes(300)),
    lambda: Delete(ProtocolId.ESP, (bytes(4), bytes(8))),
    lambda: TrafficSelector(IPv4Address("10.0.0.1"), IPv6Address("::1")),
    lambda: TrafficSelector(IPv4Address("10.0.0.1"), IPv4Address("10.0.0.1"), 0, 0, 65536),
    lambda: RawSelector(b"\x0a\x00\x00\x09"),
    lambda: encode_payloads([Vendor(bytes(70000))]),
])
def test_our_own_impossible_values_are_local_errors(make):
    with pytest.raises(LocalProtocolError) as err:
        make()
    assert err.value.fault == "local"


def test_certreq_authority_hashes():
    assert CertReq(4, bytes(40)).ca_hashes() == (bytes(20), bytes(20))
    with pytest.raises(RemoteProtocolError):
        CertReq(4, bytes(21)).ca_hashes()


def test_ike_sa_init_sample_is_a_message():
    msg = ike_sa_init_request(bytes(64), bytes(32), bytes(20), bytes(20))
    assert isinstance(msg, Message)
    assert msg.get(KE) == KE(DhGroup.ECP_256, bytes(64))
