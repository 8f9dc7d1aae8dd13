"""UDP encapsulation of ESP and IKE on port 4500 (RFC 3948).

On port 4500 one UDP payload is one of:

    IKE:            0x00000000 (non-ESP marker, 4 octets) | IKE message     (RFC 3948 2.2)
    NAT-keepalive:  0xFF (exactly one octet)                                 (RFC 3948 2.3)
    ESP:            SPI (never 0) | ...                                       (RFC 3948 2.1)
"""

from __future__ import annotations

from enum import Enum

NON_ESP_MARKER = b"\x00\x00\x00\x00"
KEEPALIVE = b"\xff"
# RFC 3948 4: send a keepalive when nothing else was sent for this long (20 s there).
KEEPALIVE_INTERVAL_S = 20.0


class Kind(Enum):
    IKE = "ike"
    ESP = "esp"
    KEEPALIVE = "keepalive"
    INVALID = "invalid"


def classify(payload: bytes) -> Kind:
    if payload == KEEPALIVE:
        return Kind.KEEPALIVE
    if len(payload) < 8:
        # an ESP header is 8 octets; an IKE message needs its 28-octet header too
        return Kind.INVALID
    if payload[:4] == NON_ESP_MARKER:
        return Kind.IKE
    return Kind.ESP


def wrap_ike(message: bytes) -> bytes:
    return NON_ESP_MARKER + message


def unwrap_ike(payload: bytes) -> bytes:
    return payload[4:]
