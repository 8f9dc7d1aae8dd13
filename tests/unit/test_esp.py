"""ESP codec: round trips, an independent implementation (scapy) in both directions, hostile input."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation

from ipsec.esp import (
    AuthFailure,
    BadTrailer,
    DummyPacket,
    EspError,
    InboundSA,
    OutboundSA,
    ReplayDrop,
    SaExhausted,
    Truncated,
)
from ipsec.natt import Kind, classify

KEY16, KEY32, SALT = bytes(range(16)), bytes(range(32)), b"\xde\xad\xbe\xef"
INNER = bytes(IP(src="198.19.255.1", dst="198.19.255.2") / UDP(sport=1234, dport=4789) / (b"x" * 61))


def pair(key=KEY16, esn=True, window=1024):
    return OutboundSA(0x1000, key, SALT, esn), InboundSA(0x1000, key, SALT, esn, window)


@pytest.mark.parametrize("key", [KEY16, KEY32])
@pytest.mark.parametrize("esn", [True, False])
def test_round_trip_and_alignment(key, esn):
    out, inb = pair(key, esn)
    for size in range(20, 60):
        inner = INNER[:size]
        pkt = out.seal(inner)
        assert (len(pkt) - 8 - 8 - 16) % 4 == 0
        assert inb.open(pkt) == (4, inner)
    assert out.counters.packets == inb.counters.packets == 40


def test_ciphertext_hides_the_inner_packet():
    out, _ = pair()
    assert b"x" * 16 not in out.seal(INNER)


def scapy_sa(key, esn):
    # tunnel mode: scapy hands back the inner packet, not the outer header + payload
    return SecurityAssociation(ESP, spi=0x1000, crypt_algo="AES-GCM", crypt_key=key + SALT, esn_en=esn, esn=0,
                               tunnel_header=IP(src="198.18.2.2", dst="198.18.1.2"))


@pytest.mark.parametrize("key", [KEY16, KEY32])
@pytest.mark.parametrize("esn", [True, False])
def test_scapy_decrypts_ours(key, esn):
    out, _ = pair(key, esn)
    sa = scapy_sa(key, esn)
    for _ in range(3):
        wire = IP(src="198.18.1.2", dst="198.18.2.2", proto=50) / out.seal(INNER)
        plain = sa.decrypt(IP(bytes(wire)))
        assert bytes(plain) == INNER


@pytest.mark.parametrize("key", [KEY16, KEY32])
@pytest.mark.parametrize("esn", [True, False])
def test_we_decrypt_scapys(key, esn):
    sa = scapy_sa(key, esn)
    _, inb = pair(key, esn)
    for seq in (1, 2, 7):
        enc = sa.encrypt(IP(INNER), seq_num=seq)
        esp = bytes(enc[ESP])
        assert inb.open(esp) == (4, INNER)


def test_esn_high_bits_are_authenticated():
    out, inb = pair(esn=True)
    out.seq = (1 << 32) + 10  # past the first 2^32
    pkt = out.seal(INNER)
    inb.replay.top = (1 << 32) + 5
    inb.replay.bitmap = 1
    assert inb.open(pkt)[1] == INNER
    # The same bytes read by a receiver that believes the high half is 0 fail the ICV.
    other = InboundSA(0x1000, KEY16, SALT, esn=True)
    other.replay.top = 5
    other.replay.bitmap = 1
    with pytest.raises(AuthFailure):
        other.open(pkt)


def test_replay_is_dropped_and_counted():
    out, inb = pair()
    pkt = out.seal(INNER)
    inb.open(pkt)
    with pytest.raises(ReplayDrop):
        inb.open(pkt)
    assert inb.counters.replay_drops == 1 and inb.counters.packets == 1


def test_tampered_icv_and_body():
    out, inb = pair()
    pkt = bytearray(out.seal(INNER))
    pkt[-1] ^= 1
    with pytest.raises(AuthFailure):
        inb.open(bytes(pkt))
    pkt = bytearray(out.seal(INNER))
    pkt[30] ^= 0x80
    with pytest.raises(AuthFailure):
        inb.open(bytes(pkt))
    assert inb.counters.auth_failures == 2
    # a forged packet does not advance the window: the genuine next one still passes
    assert inb.open(out.seal(INNER))[1] == INNER


def test_truncated_packets():
    out, inb = pair()
    pkt = out.seal(INNER)
    for n in (0, 3, 8, 35, len(pkt) - 1):
        with pytest.raises(Truncated):
            inb.open(pkt[:n])
    assert inb.counters.truncated == 5


def test_bad_padding_and_dummy():
    _out, inb = pair()
    # a sender whose padding is not 1, 2, 3...: hand-made with the same key
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    def raw(plain, seq):
        iv = seq.to_bytes(8, "big")
        aad = (0x1000).to_bytes(4, "big") + (0).to_bytes(4, "big") + seq.to_bytes(4, "big")
        return (0x1000).to_bytes(4, "big") + seq.to_bytes(4, "big") + iv + AESGCM(KEY16).encrypt(SALT + iv, plain, aad)

    with pytest.raises(BadTrailer):
        inb.open(raw(b"abcd" + b"\x09\x09" + b"\x02\x04", 1))
    with pytest.raises(BadTrailer):
        inb.open(raw(b"\x00\x00" + b"\x09\x04", 2))  # pad length beyond the payload
    with pytest.raises(DummyPacket):
        inb.open(raw(b"\x01\x02\x02\x3b", 3))


def test_sequence_exhaustion_without_esn():
    out, _ = pair(esn=False)
    out.seq = 0xFFFFFFFF
    with pytest.raises(SaExhausted):
        out.seal(INNER)


def test_bad_keys_refused():
    with pytest.raises(ValueError, match="16 or 32"):
        OutboundSA(1, b"short", SALT)
    with pytest.raises(ValueError, match="salt"):
        InboundSA(1, KEY16, b"xx")


def test_classify_port_4500():
    assert classify(b"\xff") is Kind.KEEPALIVE
    assert classify(b"\x00\x00\x00\x00" + bytes(28)) is Kind.IKE
    assert classify(b"\x00\x00\x10\x00" + bytes(28)) is Kind.ESP
    assert classify(b"\x01\x02") is Kind.INVALID


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_fuzzed_packets_raise_only_esp_errors(data):
    _, inb = pair()
    with contextlib.suppress(EspError):
        inb.open(data)


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=255))
def test_single_bit_flips_are_rejected(pos, bit):
    out, inb = pair()
    pkt = bytearray(out.seal(os.urandom(40)))
    pos %= len(pkt)
    pkt[pos] ^= 1 << (bit % 8)
    with pytest.raises(EspError):
        inb.open(bytes(pkt))
