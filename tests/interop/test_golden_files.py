"""The strongSwan golden files are self-consistent: keys, nonces and captured bytes fit together.

No root: only reads tests/golden/strongswan/*.json (made by tests/interop/capture_golden.py).
Checks, each against an independent implementation or an RFC formula:
- every ESP-in-UDP payload decrypts (cryptography AES-GCM and scapy's ESP code) to the captured
  plaintext ICMP echo between the inner addresses (RFC 4106, RFC 4303 trailer, RFC 3948 encapsulation);
- SKEYSEED and SK_* follow from the captured nonces and the logged DH secret (RFC 7296 2.14), and the
  CHILD_SA keys from SK_d (RFC 7296 2.17);
- IKE_AUTH decrypts with SK_ei/SK_er (RFC 5282) and its PSK AUTH payloads verify (RFC 7296 2.15).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import struct
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "strongswan"
IKE_HEADER_LEN = 28
PT_SA, PT_KE, PT_IDI, PT_IDR, PT_AUTH, PT_NONCE, PT_SK = 33, 34, 35, 36, 39, 40, 46
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0


def load(name: str) -> dict:
    return json.loads((GOLDEN / name).read_text())


@pytest.fixture(scope="module")
def esp() -> dict:
    return load("esp_in_udp.json")


@pytest.fixture(scope="module")
def init() -> dict:
    return load("ike_sa_init.json")


@pytest.fixture(scope="module")
def auth() -> dict:
    return load("ike_auth_psk.json")


# -- small independent helpers (deliberately not the project's codecs) -----------------------------

def gcm_open(key: bytes, salt: bytes, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    return AESGCM(key).decrypt(salt + iv, ciphertext, aad)


def esp_open(d: dict, payload: bytes) -> tuple[int, bytes, bytes, int]:
    """RFC 4303/4106: SPI(4) seq(4) IV(8) ciphertext+ICV(16); returns (seq, inner, padding, next header)."""
    assert len(payload) >= 8 + 8 + 16
    plain = gcm_open(bytes.fromhex(d["key"]), bytes.fromhex(d["salt"]), payload[8:16], payload[16:], payload[:8])
    pad_len, next_header = plain[-2], plain[-1]
    body = plain[:-2]
    return struct.unpack("!I", payload[4:8])[0], body[: len(body) - pad_len], body[len(body) - pad_len:], next_header


def ike_header(msg: bytes) -> dict:
    assert len(msg) >= IKE_HEADER_LEN
    spi_i, spi_r, next_payload, version, exchange, flags, msg_id, length = struct.unpack("!8s8sBBBBII",
                                                                                          msg[:IKE_HEADER_LEN])
    return {"spi_i": spi_i, "spi_r": spi_r, "next": next_payload, "version": version, "exchange": exchange,
            "flags": flags, "msg_id": msg_id, "length": length}


def payloads(data: bytes, first: int) -> list[tuple[int, bytes]]:
    """Walk a chain of generic payload headers (RFC 7296 3.2): [(type, body)], body without the 4-byte header."""
    out, kind, off = [], first, 0
    while kind != 0:
        assert off + 4 <= len(data), "truncated payload header"
        nxt, length = data[off], struct.unpack("!H", data[off + 2:off + 4])[0]
        assert 4 <= length <= len(data) - off, "bad payload length"
        out.append((kind, data[off + 4:off + length]))
        if kind == PT_SK:  # the encrypted payload is always last; its "next" names the first inner payload
            out.append((-1, bytes([nxt])))
            break
        kind, off = nxt, off + length
    return out


def prf(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def prf_plus(key: bytes, seed: bytes, length: int) -> bytes:
    out, t, n = b"", b"", 1
    while len(out) < length:
        t = prf(key, t + seed + bytes([n]))
        out, n = out + t, n + 1
    return out[:length]


def nonce(msg: bytes) -> bytes:
    return next(body for kind, body in payloads(msg[IKE_HEADER_LEN:], msg[16]) if kind == PT_NONCE)


def ike_open(msg: bytes, gcm: dict) -> tuple[int, bytes]:
    """Decrypt the SK payload (RFC 5282 5.1: AAD = IKE header .. SK generic header); returns (first type, plain)."""
    chain = payloads(msg[IKE_HEADER_LEN:], msg[16])
    assert chain[0][0] == PT_SK and chain[-1][0] == -1
    sk_off = IKE_HEADER_LEN  # the SK payload is the only outer payload in IKE_AUTH
    body = chain[0][1]
    plain = gcm_open(bytes.fromhex(gcm["key"]), bytes.fromhex(gcm["salt"]), body[:8], body[8:],
                     msg[: sk_off + 4])
    pad_len = plain[-1]
    return chain[-1][1][0], plain[: len(plain) - 1 - pad_len]


# -- ESP ------------------------------------------------------------------------------------------

def test_esp_files_describe_three_pings_each_way(esp):
    dirs = esp["directions"]
    assert set(dirs) == {"initiator_to_responder", "responder_to_initiator"}
    for d in dirs.values():
        assert len(bytes.fromhex(d["key"])) == 16 and len(bytes.fromhex(d["salt"])) == 4
        assert d["src"]["port"] == 4500 and d["dst"]["port"] == 4500
        assert [p["seq"] for p in d["packets"]] == [1, 2, 3]
        assert "encryption" in d["log_lines"][0] and any(d["spi"] in line for line in d["log_lines"])
        for p in d["packets"]:
            payload = bytes.fromhex(p["udp_payload"])
            assert payload[:4].hex() == d["spi"] and struct.unpack("!I", payload[4:8])[0] == p["seq"]


def test_esp_decrypts_to_the_captured_icmp_echoes(esp):
    from scapy.all import ICMP, IP

    dirs = esp["directions"]
    want = {"initiator_to_responder": (esp["initiator"]["inner"], esp["responder"]["inner"], ICMP_ECHO_REQUEST),
            "responder_to_initiator": (esp["responder"]["inner"], esp["initiator"]["inner"], ICMP_ECHO_REPLY)}
    echoes: dict[str, list[tuple[int, int]]] = {}
    for name, d in dirs.items():
        src, dst, icmp_type = want[name]
        echoes[name] = []
        for p in d["packets"]:
            seq, inner, padding, next_header = esp_open(d, bytes.fromhex(p["udp_payload"]))
            assert seq == p["seq"]
            assert next_header == 4  # IPv4 in tunnel mode
            assert padding == bytes(range(1, len(padding) + 1))  # RFC 4303 2.4 default padding
            assert inner.hex() == p["inner"]
            pkt = IP(inner)
            assert (pkt.src, pkt.dst, pkt.proto, pkt[ICMP].type) == (src, dst, 1, icmp_type)
            echoes[name].append((pkt[ICMP].id, pkt[ICMP].seq))
    assert echoes["initiator_to_responder"] == echoes["responder_to_initiator"]  # each request answered


def test_esp_tampering_is_detected(esp):
    d = esp["directions"]["initiator_to_responder"]
    payload = bytearray.fromhex(d["packets"][0]["udp_payload"])
    payload[20] ^= 0x01
    with pytest.raises(InvalidTag):
        esp_open(d, bytes(payload))
    payload[20] ^= 0x01
    payload[7] ^= 0x01  # the sequence number is authenticated (AAD)
    with pytest.raises(InvalidTag):
        esp_open(d, bytes(payload))


def test_scapy_decrypts_one_packet_per_direction(esp):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.ipsec import ESP, SecurityAssociation

    for d in esp["directions"].values():
        outer = IP(src=d["src"]["address"], dst=d["dst"]["address"])
        udp = UDP(sport=d["src"]["port"], dport=d["dst"]["port"])
        sa = SecurityAssociation(ESP, spi=int(d["spi"], 16), crypt_algo="AES-GCM",
                                 crypt_key=bytes.fromhex(d["key"] + d["salt"]),
                                 tunnel_header=outer.copy(), nat_t_header=udp.copy())
        p = d["packets"][-1]
        wire = IP(bytes(outer / udp / ESP(bytes.fromhex(p["udp_payload"]))))
        inner = sa.decrypt(wire)
        assert bytes(inner) == bytes.fromhex(p["inner"])


# -- IKE ------------------------------------------------------------------------------------------

def test_ike_sa_init_headers(init):
    req, resp = bytes.fromhex(init["request"]), bytes.fromhex(init["response"])
    hq, hr = ike_header(req), ike_header(resp)
    assert (hq["exchange"], hr["exchange"]) == (34, 34) and hq["version"] == hr["version"] == 0x20
    assert hq["flags"] == 0x08 and hr["flags"] == 0x20  # Initiator bit; Response bit (RFC 7296 3.1)
    assert hq["msg_id"] == hr["msg_id"] == 0
    assert (hq["length"], hr["length"]) == (len(req), len(resp))
    assert hq["spi_i"].hex() == hr["spi_i"].hex() == init["initiator_spi"]
    assert hq["spi_r"] == bytes(8) and hr["spi_r"].hex() == init["responder_spi"]
    assert init["initiator"]["port"] == init["responder"]["port"] == 500
    for msg in (req, resp):
        kinds = [k for k, _ in payloads(msg[IKE_HEADER_LEN:], msg[16])]
        assert kinds[:3] == [PT_SA, PT_KE, PT_NONCE]


def test_ike_keys_follow_from_nonces_and_dh_secret(init, auth):
    ni, nr = nonce(bytes.fromhex(init["request"])), nonce(bytes.fromhex(init["response"]))
    keys = auth["keys"]
    skeyseed = prf(ni + nr, bytes.fromhex(keys["dh_shared_secret"]["hex"]))
    assert skeyseed.hex() == keys["skeyseed"]["hex"]
    spis = bytes.fromhex(init["initiator_spi"] + init["responder_spi"])
    # AES-GCM has no integrity keys: SK_d | SK_ei | SK_er | SK_pi | SK_pr  (RFC 7296 2.14, RFC 5282 7.1)
    stream = prf_plus(skeyseed, ni + nr + spis, 32 + 20 + 20 + 32 + 32)
    sk_ei = keys["sk_ei"]["key"] + keys["sk_ei"]["salt"]
    sk_er = keys["sk_er"]["key"] + keys["sk_er"]["salt"]
    assert stream.hex() == keys["sk_d"]["hex"] + sk_ei + sk_er + keys["sk_pi"]["hex"] + keys["sk_pr"]["hex"]


def test_child_keys_follow_from_sk_d(init, auth, esp):
    ni, nr = nonce(bytes.fromhex(init["request"])), nonce(bytes.fromhex(init["response"]))
    keymat = prf_plus(bytes.fromhex(auth["keys"]["sk_d"]["hex"]), ni + nr, 40)  # RFC 7296 2.17, no PFS
    i2r, r2i = esp["directions"]["initiator_to_responder"], esp["directions"]["responder_to_initiator"]
    assert keymat.hex() == i2r["key"] + i2r["salt"] + r2i["key"] + r2i["salt"]


@pytest.mark.parametrize("side", ["request", "response"])
def test_ike_auth_decrypts_and_psk_auth_verifies(init, auth, side):
    msg = bytes.fromhex(auth[side])
    h = ike_header(msg)
    assert h["exchange"] == 35 and h["msg_id"] == 1 and h["length"] == len(msg)
    assert msg[:4] != bytes(4)  # the non-ESP marker was stripped: the IKE SPI comes first
    assert (h["spi_i"].hex(), h["spi_r"].hex()) == (auth["initiator_spi"], auth["responder_spi"])
    initiator = side == "request"
    first, plain = ike_open(msg, auth["keys"]["sk_ei" if initiator else "sk_er"])
    inner = dict(payloads(plain, first))
    id_type = PT_IDI if initiator else PT_IDR
    assert first == id_type
    ident = inner[id_type]
    assert ident[0] == 1  # ID_IPV4_ADDR
    assert str(ipaddress.IPv4Address(ident[4:])) == auth["initiator_id" if initiator else "responder_id"]
    auth_body = inner[PT_AUTH]
    assert auth_body[0] == 2  # Shared Key Message Integrity Code
    # RFC 7296 2.15: AUTH = prf(prf(PSK, "Key Pad for IKEv2"), <SignedOctets>)
    real_message = bytes.fromhex(init["request" if initiator else "response"])
    other_nonce = nonce(bytes.fromhex(init["response" if initiator else "request"]))
    sk_p = bytes.fromhex(auth["keys"]["sk_pi" if initiator else "sk_pr"]["hex"])
    octets = real_message + other_nonce + prf(sk_p, ident)
    expected = prf(prf(bytes.fromhex(auth["psk"]), b"Key Pad for IKEv2"), octets)
    assert auth_body[4:] == expected
    assert auth_body[4:] != prf(prf(b"wrong psk", b"Key Pad for IKEv2"), octets)


def test_ike_auth_with_the_wrong_key_fails(auth):
    with pytest.raises(InvalidTag):
        ike_open(bytes.fromhex(auth["request"]), auth["keys"]["sk_er"])
