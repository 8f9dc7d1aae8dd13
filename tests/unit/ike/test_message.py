"""IKE messages: the header (RFC 7296 3.1), whole-message round trips, and
SK payload sealing (3.14 with RFC 5282 AES-GCM)."""

from __future__ import annotations

import os
from ipaddress import IPv4Address

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ipsec.ike.constants import DhGroup, ExchangeType, HeaderFlag, NotifyType, PayloadType, PrfId
from ipsec.ike.crypto import (
    Aead,
    aes_gcm_keymat_len,
    dh_generate,
    ike_sa_keys,
    nat_detection_hash,
    prf_for,
    skeyseed,
)
from ipsec.ike.errors import IntegrityError, LocalProtocolError, RemoteProtocolError
from ipsec.ike.message import Header, Message, encode_payloads, seal, sealed_overhead, unseal
from ipsec.ike.payloads import KE, SA, Encrypted, IDi, Nonce, Notify, TSi, Vendor
from tests.unit.ike.test_payloads import SPI_I, SPI_R, ike_auth_request, ike_sa_init_request


def sample_init() -> Message:
    dh = dh_generate(DhGroup.ECP_256)
    return ike_sa_init_request(
        dh.public_bytes(), os.urandom(32),
        nat_detection_hash(SPI_I, bytes(8), IPv4Address("198.18.1.2"), 500),
        nat_detection_hash(SPI_I, bytes(8), IPv4Address("198.18.2.2"), 500),
    )


def sample_keys():
    prf = prf_for(PrfId.HMAC_SHA2_256)
    seed = skeyseed(prf, b"i" * 32, b"r" * 32, b"g" * 32)
    return ike_sa_keys(prf, seed, b"i" * 32, b"r" * 32, SPI_I, SPI_R, aes_gcm_keymat_len(256))


# ------------------------------------------------------------------ header
def test_header_golden():
    # RFC 7296 3.1, built by hand: IKE_SA_INIT request from the initiator.
    expected = bytes.fromhex(
        "0102030405060708"  # SPIi
        "0000000000000000"  # SPIr, zero in the first message
        "21 20 22 08"       # next payload SA (33), version 2.0, IKE_SA_INIT (34), I flag
        "00000000"          # message ID 0
        "000000c0"          # length 192
    )
    header = Header(SPI_I, bytes(8), PayloadType.SA, ExchangeType.IKE_SA_INIT, HeaderFlag.INITIATOR, 0, 192)
    assert header.encode() == expected
    assert Header.decode(expected + bytes(192 - 28)) == header


def test_whole_message_golden_invalid_ke_response():
    # A responder asking for group 19 (RFC 7296 1.2 / 3.10.1), built by hand.
    expected = bytes.fromhex(
        "0102030405060708 0000000000000000"
        "29 20 22 20 00000000 00000026"  # Notify first, v2.0, IKE_SA_INIT, R flag, length 38
        "00 00 000a"                     # last payload, length 10
        "00 00 0011 0013"                # no protocol, no SPI, INVALID_KE_PAYLOAD, group 19
    )
    msg = Message(SPI_I, bytes(8), ExchangeType.IKE_SA_INIT, HeaderFlag.RESPONSE, 0,
                  (Notify(NotifyType.INVALID_KE_PAYLOAD, b"\x00\x13"),))
    assert msg.encode() == expected
    assert Message.decode(expected) == msg
    assert msg.is_response and not msg.is_initiator


def test_header_rejects_other_major_versions_and_wrong_lengths():
    good = Message(SPI_I, bytes(8), ExchangeType.IKE_SA_INIT, HeaderFlag.INITIATOR, 0).encode()
    v3 = good[:17] + b"\x30" + good[18:]
    with pytest.raises(RemoteProtocolError) as err:
        Message.decode(v3)
    assert err.value.notify == NotifyType.INVALID_MAJOR_VERSION
    for data in (good[:27], good + b"\x00", good[:24] + b"\x00\x00\x00\x1d"):
        with pytest.raises(RemoteProtocolError) as err:
            Message.decode(data)
        assert err.value.notify == NotifyType.INVALID_SYNTAX


def test_minor_version_and_unknown_flags_are_ignored():
    good = Message(SPI_I, bytes(8), ExchangeType.IKE_SA_INIT, HeaderFlag.INITIATOR, 0).encode()
    odd = good[:17] + b"\x21" + good[18:19] + bytes((0x08 | 0x01,)) + good[20:]
    assert Message.decode(odd).flags == HeaderFlag.INITIATOR


def test_message_field_ranges_are_local_errors():
    with pytest.raises(LocalProtocolError):
        Message(b"short", SPI_R, ExchangeType.IKE_AUTH, 0, 1)
    with pytest.raises(LocalProtocolError):
        Message(SPI_I, SPI_R, ExchangeType.IKE_AUTH, 0, 1 << 32)


# ------------------------------------------------------------------ plain messages
def test_ike_sa_init_round_trip():
    msg = sample_init()
    data = msg.encode()
    assert len(data) == int.from_bytes(data[24:28], "big")
    back = Message.decode(data)
    assert back == msg
    assert back.get(SA) == msg.payloads[0]
    assert back.get(KE).group == DhGroup.ECP_256
    assert len(back.get(Nonce).data) == 32
    assert back.notify(NotifyType.NAT_DETECTION_DESTINATION_IP) is not None
    assert back.notify(NotifyType.COOKIE) is None
    assert back.all(Notify) == msg.payloads[3:]


def test_message_with_no_payloads():
    msg = Message(SPI_I, SPI_R, ExchangeType.INFORMATIONAL, HeaderFlag.RESPONSE, 7)
    assert Message.decode(msg.encode()) == msg


# ------------------------------------------------------------------ SK payload
def test_sealed_ike_auth_round_trip_between_the_two_peers():
    keys = sample_keys()
    msg = ike_auth_request()
    data = seal(msg, Aead(keys.sk_ei), iv=bytes.fromhex("0000000000000001"))
    # The responder opens it with its copy of SK_ei.
    assert unseal(data, Aead(keys.sk_ei)) == msg
    # Seen as a plain message, it is one SK payload whose next payload is IDi.
    outer = Message.decode(data)
    assert len(outer.payloads) == 1 and isinstance(outer.payloads[0], Encrypted)
    assert outer.payloads[0].first_payload == PayloadType.IDI
    assert len(data) == 28 + len(msg.encode()) - 28 + sealed_overhead()


def test_sealed_layout_follows_rfc_5282():
    """Open the datagram by hand: header + SK header are the AAD, then an
    8-octet IV, then ciphertext ending in a 16-octet ICV; the nonce is salt | IV."""
    keys = sample_keys()
    msg = ike_auth_request()
    iv = bytes.fromhex("0102030405060708")
    data = seal(msg, Aead(keys.sk_er), iv, pad_len=3)
    aad, body = data[:32], data[32:]
    assert aad[16] == PayloadType.SK and aad[28] == PayloadType.IDI
    assert int.from_bytes(aad[30:32], "big") == len(data) - 28
    assert body[:8] == iv
    plain = AESGCM(keys.sk_er[:32]).decrypt(keys.sk_er[32:] + iv, body[8:], aad)
    inner = msg.encode()[28:]
    assert plain == inner + b"\x00\x00\x00" + b"\x03"


def test_pad_length_is_honoured_on_receipt():
    keys = sample_keys()
    data = seal(ike_auth_request(), Aead(keys.sk_ei), bytes(8), pad_len=255)
    assert unseal(data, Aead(keys.sk_ei)) == ike_auth_request()


def test_empty_informational_liveness_check_seals():
    keys = sample_keys()
    msg = Message(SPI_I, SPI_R, ExchangeType.INFORMATIONAL, HeaderFlag.INITIATOR, 2)
    assert unseal(seal(msg, Aead(keys.sk_ei), bytes(8)), Aead(keys.sk_ei)) == msg


@pytest.mark.parametrize("where", [0, 8, 16, 17, 18, 20, 23, 29, 31, 32, 40, -17, -1])
def test_any_flipped_bit_fails_integrity(where):
    # Header, minor version, flags, SK header, IV, ciphertext, ICV: all covered.
    keys = sample_keys()
    data = bytearray(seal(ike_auth_request(), Aead(keys.sk_ei), bytes(8)))
    data[where] ^= 0x01
    with pytest.raises(IntegrityError):
        unseal(bytes(data), Aead(keys.sk_ei))


def test_a_wrong_length_field_fails_before_decryption():
    keys = sample_keys()
    data = bytearray(seal(ike_auth_request(), Aead(keys.sk_ei), bytes(8)))
    data[27] ^= 0x01
    with pytest.raises(RemoteProtocolError) as err:
        unseal(bytes(data), Aead(keys.sk_ei))
    assert err.value.notify == NotifyType.INVALID_SYNTAX


def test_wrong_key_is_an_integrity_error_that_asks_for_silence():
    keys = sample_keys()
    data = seal(ike_auth_request(), Aead(keys.sk_ei), bytes(8))
    with pytest.raises(IntegrityError) as err:
        unseal(data, Aead(keys.sk_er))
    assert err.value.notify is None


def test_unprotected_or_truncated_sk_is_dropped():
    keys = sample_keys()
    plain = ike_auth_request().encode()
    with pytest.raises(IntegrityError):
        unseal(plain, Aead(keys.sk_ei))
    short = Message(SPI_I, SPI_R, ExchangeType.IKE_AUTH, 0, 1, (Encrypted(PayloadType.IDI, bytes(20)),)).encode()
    with pytest.raises(IntegrityError):
        unseal(short, Aead(keys.sk_ei))


def test_authenticated_but_malformed_inner_payloads_are_syntax_errors():
    keys = sample_keys()
    aead = Aead(keys.sk_ei)
    # Forge nothing: build a valid SK whose inner chain claims more than it has.
    header = Message(SPI_I, SPI_R, ExchangeType.IKE_AUTH, HeaderFlag.INITIATOR, 1)
    plaintext = bytes.fromhex("00 00 0010 01020304") + b"\x00"
    sk_len = 8 + len(plaintext) + 16
    aad = header.header(PayloadType.SK, 28 + 4 + sk_len).encode() + bytes((PayloadType.VENDOR, 0)) + \
        (4 + sk_len).to_bytes(2, "big")
    data = aad + bytes(8) + aead.encrypt(bytes(8), plaintext, aad)
    with pytest.raises(RemoteProtocolError) as err:
        unseal(data, aead)
    assert not isinstance(err.value, IntegrityError)
    assert err.value.notify == NotifyType.INVALID_SYNTAX


def test_unencrypted_payloads_before_sk_are_authenticated_and_returned():
    aead = Aead(sample_keys().sk_ei)
    inner = (IDi.from_fqdn("gw1"), TSi(()))
    _, inner_bytes = encode_payloads(inner)
    plain = inner_bytes + b"\x00"  # no padding, pad length 0
    vendor = bytes((PayloadType.SK, 0, 0, 5)) + b"v"  # a Vendor ID in front of SK
    sk_len = 4 + 8 + len(plain) + 16
    head = Message(SPI_I, SPI_R, ExchangeType.IKE_AUTH, HeaderFlag.INITIATOR, 1)
    aad = head.header(PayloadType.VENDOR, 28 + len(vendor) + sk_len).encode() + vendor + \
        bytes((PayloadType.IDI, 0)) + sk_len.to_bytes(2, "big")
    data = aad + bytes(8) + aead.encrypt(bytes(8), plain, aad)
    assert unseal(data, aead).payloads == (Vendor(b"v"), *inner)
    # The Vendor ID sits inside the associated data, so changing it is caught.
    with pytest.raises(IntegrityError):
        unseal(data[:32] + b"w" + data[33:], aead)
