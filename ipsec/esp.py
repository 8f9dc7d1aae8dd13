"""ESP (RFC 4303) with AES-GCM (RFC 4106), tunnel mode, 64-bit extended sequence numbers.

Sans-IO: bytes in, bytes out, and no clock. The SA objects carry keys, sequence state and
counters; the engines own sockets and devices, and the SAD (sad.py) when each SA was
installed, which lifetimes count from (the caller's time, passed in).

An ESP packet with AES-GCM (RFC 4303 section 2, RFC 4106 section 3):

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |               Security Parameters Index (SPI)                 |  4
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |          Sequence Number (low 32 bits of the ESN)             |  4
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |               Initialization Vector (explicit, 8)             |  8
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ~   ciphertext of: inner IP packet | padding | pad len | next hdr ~
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |               Integrity Check Value (16)                      |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

The GCM nonce is salt(4) | IV(8) (RFC 4106 section 4); the IV here is the 64-bit
sequence number, which never repeats under one key. The associated data is
SPI | seq (8 octets), or SPI | seq high | seq low (12 octets) with ESN (RFC 4106 section 5).
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ipsec.constants import (
    AES_GCM_ICV_LEN,
    AES_GCM_IV_LEN,
    ESP_ALIGN,
    ESP_HEADER_LEN,
    ESP_TRAILER_LEN,
    IPPROTO_IPIP,
)
from ipsec.replay import ReplayWindow

IPPROTO_NONE = 59  # RFC 4303 2.6: a dummy (traffic flow confidentiality) packet
SALT_LEN = 4
MIN_PACKET = ESP_HEADER_LEN + AES_GCM_IV_LEN + ESP_ALIGN + AES_GCM_ICV_LEN
_PAD = bytes(range(1, 256))  # RFC 4303 2.4: default padding is 1, 2, 3, ...
_U64 = (1 << 64) - 1

_hdr = struct.Struct("!4sI")
_iv = struct.Struct("!Q")
_aad_esn = struct.Struct("!4sII")


class EspError(Exception):
    """A packet was dropped. ``counter`` names the SA counter it is charged to."""

    counter = "decrypt_errors"


class Truncated(EspError):
    counter = "truncated"


class ReplayDrop(EspError):
    counter = "replay_drops"


class AuthFailure(EspError):
    counter = "auth_failures"


class BadTrailer(EspError):
    counter = "decrypt_errors"


class DummyPacket(EspError):
    counter = "dummy"


class SaExhausted(Exception):
    """Outbound: the sequence number space (or a hard lifetime) is used up; rekey."""


def _check_key(key: bytes, salt: bytes) -> None:
    if len(key) not in (16, 32):
        raise ValueError(f"AES-GCM key must be 16 or 32 octets, not {len(key)}")
    if len(salt) != SALT_LEN:
        raise ValueError(f"AES-GCM salt must be {SALT_LEN} octets, not {len(salt)}")


class SaCounters:
    __slots__ = ("auth_failures", "bytes", "decrypt_errors", "dummy", "packets", "replay_drops", "truncated")

    def __init__(self) -> None:
        self.packets = self.bytes = 0
        self.replay_drops = self.auth_failures = self.decrypt_errors = self.truncated = self.dummy = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


class OutboundSA:
    __slots__ = ("_aead", "_salt", "counters", "esn", "seq", "spi", "spi_bytes")

    def __init__(self, spi: int, key: bytes, salt: bytes, esn: bool = True):
        _check_key(key, salt)
        self.spi = spi
        self.spi_bytes = spi.to_bytes(4, "big")
        self._aead = AESGCM(key)
        self._salt = salt
        self.esn = esn
        self.seq = 0  # last sequence number sent
        self.counters = SaCounters()

    def _next(self) -> int:
        seq = self.seq + 1
        if seq > (_U64 if self.esn else 0xFFFFFFFF):
            # RFC 4303 3.3.3: the counter must not cycle; a new SA is needed.
            raise SaExhausted(f"SPI {self.spi:#010x}: sequence numbers exhausted")
        self.seq = seq
        return seq

    def seal(self, inner: bytes, next_header: int = IPPROTO_IPIP) -> bytes:
        buf = bytearray(len(inner) + ESP_ALIGN + ESP_TRAILER_LEN)
        buf[: len(inner)] = inner
        head, body = self.seal_into(buf, len(inner), next_header)
        return head + body

    def seal_into(self, buf: bytearray, n: int, next_header: int = IPPROTO_IPIP) -> tuple[bytes, bytes]:
        """Encrypt the inner packet in buf[:n] (buf must have 5 spare octets for the
        trailer). Returns (SPI|seq|IV, ciphertext|ICV) to send with one sendmsg."""
        seq = self._next()
        pad = -(n + ESP_TRAILER_LEN) % ESP_ALIGN
        end = n + pad + ESP_TRAILER_LEN
        buf[n : n + pad] = _PAD[:pad]
        buf[end - 2] = pad
        buf[end - 1] = next_header
        iv = _iv.pack(seq)
        lo = seq & 0xFFFFFFFF
        aad = _aad_esn.pack(self.spi_bytes, seq >> 32, lo) if self.esn else _hdr.pack(self.spi_bytes, lo)
        c = self.counters
        c.packets += 1
        c.bytes += n
        body = self._aead.encrypt(self._salt + iv, memoryview(buf)[:end], aad)
        return _hdr.pack(self.spi_bytes, lo) + iv, body


class InboundSA:
    __slots__ = ("_aead", "_salt", "counters", "esn", "replay", "spi", "spi_bytes")

    def __init__(self, spi: int, key: bytes, salt: bytes, esn: bool = True, window: int = 1024):
        _check_key(key, salt)
        self.spi = spi
        self.spi_bytes = spi.to_bytes(4, "big")
        self._aead = AESGCM(key)
        self._salt = salt
        self.esn = esn
        self.replay = ReplayWindow(window, esn)
        self.counters = SaCounters()

    def open(self, packet: bytes) -> tuple[int, bytes]:
        """(next header, inner packet) of an ESP packet for this SA; raises EspError
        (after counting it) for anything that must be dropped."""
        c = self.counters
        n = len(packet)
        if n < MIN_PACKET or (n - ESP_HEADER_LEN - AES_GCM_IV_LEN - AES_GCM_ICV_LEN) % ESP_ALIGN:
            c.truncated += 1
            raise Truncated(f"ESP packet of {n} octets is truncated or misaligned")
        spi_bytes, lo = _hdr.unpack_from(packet)
        seq = self.replay.check(lo)
        if seq is None:
            c.replay_drops += 1
            raise ReplayDrop(f"SPI {self.spi:#010x}: sequence {lo} replayed or behind the window")
        aad = _aad_esn.pack(spi_bytes, seq >> 32, lo) if self.esn else packet[:ESP_HEADER_LEN]
        iv = packet[ESP_HEADER_LEN : ESP_HEADER_LEN + AES_GCM_IV_LEN]
        try:
            pt = self._aead.decrypt(self._salt + iv, packet[ESP_HEADER_LEN + AES_GCM_IV_LEN :], aad)
        except InvalidTag:
            c.auth_failures += 1
            raise AuthFailure(f"SPI {self.spi:#010x}: ICV check failed (sequence {seq})") from None
        # Authenticated: only now may the window move (RFC 4303 3.4.3).
        self.replay.accept(seq)
        pad, nh = pt[-2], pt[-1]
        end = len(pt) - ESP_TRAILER_LEN - pad
        if end < 0 or pt[end : end + pad] != _PAD[:pad]:
            c.decrypt_errors += 1
            raise BadTrailer(f"SPI {self.spi:#010x}: padding does not check out")
        if nh == IPPROTO_NONE:
            c.dummy += 1
            raise DummyPacket("dummy packet (next header 59)")
        c.packets += 1
        c.bytes += end
        return nh, pt[:end]


def peek_spi(packet: bytes) -> int | None:
    """The SPI of an ESP packet, None if it is too short to carry one."""
    if len(packet) < ESP_HEADER_LEN:
        return None
    return int.from_bytes(packet[:4], "big")
