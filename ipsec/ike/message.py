"""IKEv2 messages: the IKE header (RFC 7296 section 3.1), the chain of
generic payload headers (3.2), and the Encrypted (SK) payload (3.14, with
AES-GCM per RFC 5282).

``Message.decode`` parses a datagram as it stands; an SK payload in it stays
an opaque ``Encrypted``. ``seal`` and ``unseal`` build and open messages whose
payloads travel inside SK. Anything wrong before the SK payload has been
authenticated raises IntegrityError, because an unauthenticated message in an
encrypted exchange must be dropped without an answer (2.21.2).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from ipsec.ike.constants import (
    CRITICAL_BIT,
    GENERIC_PAYLOAD_HEADER_LEN,
    IKE_HEADER_LEN,
    IKE_MAJOR_VERSION,
    IKE_MINOR_VERSION,
    IKE_SPI_LEN,
    HeaderFlag,
    NotifyType,
    PayloadType,
)
from ipsec.ike.crypto import Aead
from ipsec.ike.errors import IkeError, IntegrityError, LocalProtocolError, RemoteProtocolError
from ipsec.ike.payloads import (
    PAYLOAD_CLASSES,
    Encrypted,
    Notify,
    Payload,
    Reader,
    UnknownPayload,
    syntax_error,
)

_MAX_BODY = 0xFFFF - GENERIC_PAYLOAD_HEADER_LEN
_KNOWN_FLAGS = HeaderFlag.INITIATOR | HeaderFlag.VERSION | HeaderFlag.RESPONSE
_P = TypeVar("_P", bound=Payload)


# The chain, 3.2. Generic payload header (length counts these 4 octets):
#   +--------+-+-------+-----------------+
#   | next   |C| rsvd  | payload length  |
#   +--------+-+-------+-----------------+
@dataclass(frozen=True)
class RawPayload:
    """One link of the chain as found on the wire; ``start`` is its header's offset."""

    payload_type: int
    critical: bool
    next_payload: int
    start: int
    body: bytes


def walk_payloads(first: int, data: bytes) -> list[RawPayload]:
    """Split a payload chain that must fill ``data`` exactly. An SK payload ends
    it (3.14: SK is last); SK's Next Payload is the first inner payload."""
    found: list[RawPayload] = []
    r = Reader(data, "payload chain")
    ptype = first
    while ptype != PayloadType.NONE:
        start = len(data) - r.remaining
        nxt, flags, length = r.u8(), r.u8(), r.u16()
        if length < GENERIC_PAYLOAD_HEADER_LEN:
            raise syntax_error(f"payload {ptype}: length {length} shorter than its header")
        body = r.take(length - GENERIC_PAYLOAD_HEADER_LEN)
        found.append(RawPayload(ptype, bool(flags & CRITICAL_BIT), nxt, start, body))
        ptype = PayloadType.NONE if ptype == PayloadType.SK else nxt
    r.end()
    return found


def decode_payload(raw: RawPayload) -> Payload:
    if raw.payload_type == PayloadType.SK:
        return Encrypted(raw.next_payload, raw.body)
    cls = PAYLOAD_CLASSES.get(raw.payload_type)
    if cls is not None:
        return cls.decode(raw.body)
    if raw.critical:
        # 2.5: reject the whole message; 3.10.1: the notify data is the type.
        raise RemoteProtocolError(f"unsupported critical payload {raw.payload_type}",
                                  notify=NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD,
                                  notify_data=bytes((raw.payload_type,)))
    return UnknownPayload(raw.payload_type, raw.body)


def decode_payloads(first: int, data: bytes) -> tuple[Payload, ...]:
    return tuple(decode_payload(raw) for raw in walk_payloads(first, data))


def generic_header(next_payload: int, body_len: int, critical: bool = False) -> bytes:
    if body_len > _MAX_BODY:
        raise LocalProtocolError(f"payload body of {body_len} octets does not fit")
    return struct.pack("!BBH", next_payload, CRITICAL_BIT if critical else 0,
                       body_len + GENERIC_PAYLOAD_HEADER_LEN)


def encode_payloads(payloads: Sequence[Payload]) -> tuple[int, bytes]:
    """Chain payloads; returns (type of the first payload, octets).
    Known payloads go out with the critical bit clear (3.2)."""
    chunks: list[bytes] = []
    for i, payload in enumerate(payloads):
        last = i == len(payloads) - 1
        if isinstance(payload, Encrypted):
            if not last:
                raise LocalProtocolError("the SK payload must be the last payload (3.14)")
            nxt = payload.first_payload
        else:
            nxt = PayloadType.NONE if last else payloads[i + 1].payload_type
        critical = isinstance(payload, UnknownPayload) and payload.critical
        body = payload.encode()
        chunks.append(generic_header(nxt, len(body), critical) + body)
    first = payloads[0].payload_type if payloads else PayloadType.NONE
    return first, b"".join(chunks)


# The IKE header, 3.1 (28 octets; flags: R = 0x20, V = 0x10, I = 0x08):
#   +-----------------------------------+
#   | IKE SA initiator's SPI (8)        |
#   +-----------------------------------+
#   | IKE SA responder's SPI (8)        |
#   +--------+----+----+--------+-------+
#   | next   |MjVr|MnVr|exchange| flags |
#   +--------+----+----+--------+-------+
#   | message ID                        |
#   +-----------------------------------+
#   | length of the whole message       |
#   +-----------------------------------+
_HEADER = struct.Struct("!8s8sBBBBII")


def _check_header_fields(spi_i: bytes, spi_r: bytes, exchange: int, flags: int, message_id: int) -> None:
    if len(spi_i) != IKE_SPI_LEN or len(spi_r) != IKE_SPI_LEN:
        raise LocalProtocolError("IKE SPIs are 8 octets")
    if not (0 <= exchange <= 0xFF and 0 <= flags <= 0xFF and 0 <= message_id <= 0xFFFFFFFF):
        raise LocalProtocolError("exchange type, flags or message ID out of range")


@dataclass(frozen=True)
class Header:
    spi_i: bytes
    spi_r: bytes
    next_payload: int
    exchange: int
    flags: int
    message_id: int
    length: int

    def __post_init__(self) -> None:
        _check_header_fields(self.spi_i, self.spi_r, self.exchange, self.flags, self.message_id)

    def encode(self) -> bytes:
        version = IKE_MAJOR_VERSION << 4 | IKE_MINOR_VERSION
        return _HEADER.pack(self.spi_i, self.spi_r, self.next_payload, version, self.exchange,
                            self.flags, self.message_id, self.length)

    @classmethod
    def decode(cls, data: bytes) -> Header:
        """Parse and check the header of a whole datagram (its length must match)."""
        if len(data) < IKE_HEADER_LEN:
            raise syntax_error(f"IKE message of {len(data)} octets, shorter than the header")
        spi_i, spi_r, nxt, version, exchange, flags, msg_id, length = _HEADER.unpack_from(data)
        if version >> 4 != IKE_MAJOR_VERSION:
            # 2.5: a higher major version is dropped and may be answered, unauthenticated.
            raise RemoteProtocolError(f"IKE major version {version >> 4}", notify=NotifyType.INVALID_MAJOR_VERSION)
        if length != len(data):
            raise syntax_error(f"IKE header says {length} octets, the datagram has {len(data)}")
        # 3.1: the minor version and unknown flag bits are ignored on receipt.
        return cls(spi_i, spi_r, nxt, exchange, int(flags & _KNOWN_FLAGS), msg_id, length)


@dataclass(frozen=True)
class Message:
    """An IKE message: header fields and payloads (the length is computed)."""

    spi_i: bytes
    spi_r: bytes
    exchange: int
    flags: int
    message_id: int
    payloads: tuple[Payload, ...] = ()

    def __post_init__(self) -> None:
        _check_header_fields(self.spi_i, self.spi_r, self.exchange, self.flags, self.message_id)

    @property
    def is_initiator(self) -> bool:
        """Sent by the original initiator of the IKE SA (3.1, I flag)."""
        return bool(self.flags & HeaderFlag.INITIATOR)

    @property
    def is_response(self) -> bool:
        return bool(self.flags & HeaderFlag.RESPONSE)

    def get(self, cls: type[_P]) -> _P | None:
        """The first payload of a class, or None."""
        return next((p for p in self.payloads if type(p) is cls), None)

    def all(self, cls: type[_P]) -> tuple[_P, ...]:
        return tuple(p for p in self.payloads if type(p) is cls)

    def notify(self, notify_type: int) -> Notify | None:
        return next((p for p in self.all(Notify) if p.notify_type == notify_type), None)

    def header(self, next_payload: int, length: int) -> Header:
        return Header(self.spi_i, self.spi_r, next_payload, self.exchange, self.flags, self.message_id, length)

    def encode(self) -> bytes:
        first, body = encode_payloads(self.payloads)
        return self.header(first, IKE_HEADER_LEN + len(body)).encode() + body

    @classmethod
    def decode(cls, data: bytes) -> Message:
        header = Header.decode(data)
        payloads = decode_payloads(header.next_payload, data[IKE_HEADER_LEN:])
        return cls.from_header(header, payloads)

    @classmethod
    def from_header(cls, header: Header, payloads: tuple[Payload, ...]) -> Message:
        return cls(header.spi_i, header.spi_r, header.exchange, header.flags, header.message_id, payloads)


# The SK payload body, 3.14 (AEAD form, RFC 5282 section 3):
#   +-----------------------------------+
#   | IV (8)                            |
#   +-----------------------------------+  -+
#   | inner payloads ...                |   | encrypted
#   |          +------------+-----------+   |
#   |          | padding    |pad length |   |
#   +----------+------------+-----------+  -+
#   | ICV (16)                          |
#   +-----------------------------------+
# RFC 5282 section 5: the associated data is the IKE header through the SK
# payload's generic header, so every unencrypted octet is authenticated too.
_SK_OVERHEAD = GENERIC_PAYLOAD_HEADER_LEN + Aead.IV_LEN + Aead.ICV_LEN


def seal(message: Message, aead: Aead, iv: bytes, pad_len: int = 0) -> bytes:
    """Encode ``message`` with all its payloads inside one SK payload.

    ``iv`` must be unique per key (a per-SA counter will do). AES-GCM needs no
    block alignment, so padding is optional (RFC 5282 section 3); if used it
    is zeros, which 3.14 allows.
    """
    if not 0 <= pad_len <= 0xFF:
        raise LocalProtocolError(f"pad length {pad_len}")
    first, inner = encode_payloads(message.payloads)
    plaintext = inner + bytes(pad_len) + bytes((pad_len,))
    sk_body_len = Aead.IV_LEN + len(plaintext) + Aead.ICV_LEN
    header = message.header(PayloadType.SK, IKE_HEADER_LEN + GENERIC_PAYLOAD_HEADER_LEN + sk_body_len)
    aad = header.encode() + generic_header(first, sk_body_len)
    return aad + iv + aead.encrypt(iv, plaintext, aad)


def unseal(data: bytes, aead: Aead) -> Message:
    """Authenticate and decrypt a datagram that ends with an SK payload.

    Returns the message with any payloads before SK (authenticated as
    associated data) followed by the inner payloads.
    """
    header = Header.decode(data)
    chain = data[IKE_HEADER_LEN:]
    try:
        raws = walk_payloads(header.next_payload, chain)
    except IkeError as exc:
        raise IntegrityError(f"cannot locate the SK payload: {exc}") from exc
    if not raws or raws[-1].payload_type != PayloadType.SK:
        raise IntegrityError("message is not protected by an SK payload")
    sk = raws[-1]
    if len(sk.body) < Aead.IV_LEN + Aead.ICV_LEN + 1:
        raise IntegrityError(f"SK payload of {len(sk.body)} octets is too short")
    aad = data[: IKE_HEADER_LEN + sk.start + GENERIC_PAYLOAD_HEADER_LEN]
    plaintext = aead.decrypt(sk.body[: Aead.IV_LEN], sk.body[Aead.IV_LEN :], aad)
    # From here on the peer really sent this, so errors carry notifies.
    pad_len = plaintext[-1]
    if pad_len >= len(plaintext):
        raise syntax_error(f"SK pad length {pad_len} exceeds the {len(plaintext)} decrypted octets")
    outer = tuple(decode_payload(raw) for raw in raws[:-1])
    inner = decode_payloads(sk.next_payload, plaintext[: -1 - pad_len])
    return Message.from_header(header, outer + inner)


def sealed_overhead(pad_len: int = 0) -> int:
    """Octets an SK payload adds around its inner payloads (for fragmentation budgets)."""
    return _SK_OVERHEAD + 1 + pad_len
