"""IKEv2 payload bodies, RFC 7296 sections 3.3 to 3.14.

Each payload is a frozen dataclass whose ``encode()`` returns the payload
BODY (what follows the 4-octet generic header) and whose ``decode(body)``
parses one; ``PAYLOAD_CLASSES`` maps type codes to classes. The chain of
generic payload headers is framed by ``ipsec.ike.message``. Decoding never
indexes past what it has checked: all reads go through ``Reader``, and every
shortfall is the peer's fault (INVALID_SYNTAX).
Constructors check that values fit their wire fields and raise
LocalProtocolError, so our own bad value never surfaces as a struct.error.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import ClassVar, Self, TypeVar

from ipsec.ike.constants import (
    NONCE_MAX_LEN,
    NONCE_MIN_LEN,
    IdType,
    PayloadType,
    ProtocolId,
    TransformAttr,
    TsType,
    is_error_notify,
)
from ipsec.ike.errors import LocalProtocolError
from ipsec.ike.reader import Reader, _check_uint, _Checked, syntax_error

_T = TypeVar("_T")


@dataclass(frozen=True)
class Payload(_Checked):
    """Base of all payloads; subclasses set PAYLOAD_TYPE and implement the codec.
    Oversized bodies are caught when the generic header is written."""

    PAYLOAD_TYPE: ClassVar[int] = PayloadType.NONE

    @property
    def payload_type(self) -> int:
        return self.PAYLOAD_TYPE

    def encode(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def decode(cls, body: bytes) -> Self:
        raise NotImplementedError


PAYLOAD_CLASSES: dict[int, type[Payload]] = {}  # payload type -> class, filled by @register
_P = TypeVar("_P", bound=type[Payload])


def register(cls: _P) -> _P:
    PAYLOAD_CLASSES[cls.PAYLOAD_TYPE] = cls
    return cls


# SA, 3.3. Transform attribute (3.3.5): F=1 is the TV form, value in the
# second word (Key Length is the only attribute 7296 defines); F=0 is TLV.
#   +-+---------------+-----------------+
#   |F| attr type(15) | value or length |
#   +-+---------------+-----------------+
#   | value (TLV form only) ...         |
#   +-----------------------------------+
_AF_TV = 0x8000


@dataclass(frozen=True)
class Attribute(_Checked):
    """An int value is sent in TV form (16 bits), a bytes value in TLV form."""

    _WIDTHS = {"attr_type": 15, "value": 16}
    attr_type: int
    value: int | bytes

    def encode(self) -> bytes:
        if isinstance(self.value, int):
            return struct.pack("!HH", _AF_TV | self.attr_type, self.value)
        return struct.pack("!HH", self.attr_type, len(self.value)) + self.value

    @classmethod
    def read(cls, r: Reader) -> Attribute:
        word, second = r.u16(), r.u16()
        return cls(word & 0x7FFF, second) if word & _AF_TV else cls(word, r.take(second))


# Proposals (3.3.1) and transforms (3.3.2) both start with this header; "last"
# is 0 on the final one and 2 (proposal) or 3 (transform) before it.
#   +--------+--------+-----------------+
#   | last   | rsvd   | length (all)    |
#   +--------+--------+-----------------+
_MORE_PROPOSALS = 2
_MORE_TRANSFORMS = 3


def _write_substructs(bodies: Sequence[bytes], more_value: int) -> bytes:
    out = []
    for i, body in enumerate(bodies):
        _check_uint("substructure length", len(body) + 4, 16)
        out.append(struct.pack("!BxH", 0 if i == len(bodies) - 1 else more_value, len(body) + 4) + body)
    return b"".join(out)


def _read_substructs(r: Reader, more_value: int, parse: Callable[[Reader], _T]) -> tuple[_T, ...]:
    """Read substructures until the one marked last; they must fill ``r`` exactly."""
    items: list[_T] = []
    more = more_value
    while more:
        more, _, length = r.u8(), r.u8(), r.u16()
        if more not in (0, more_value) or length < 4:
            raise syntax_error(f"substructure: bad last-substruc {more} or length {length}")
        sub = Reader(r.take(length - 4), "substructure")
        items.append(parse(sub))
        sub.end()
    r.end()
    return tuple(items)


# Transform body (after the header above), 3.3.2:
#   +--------+--------+-----------------+
#   | type   | rsvd   | transform ID    |
#   +--------+--------+-----------------+
#   | attributes ...                    |
#   +-----------------------------------+
@dataclass(frozen=True)
class Transform(_Checked):
    _WIDTHS = {"transform_type": 8, "transform_id": 16}
    transform_type: int
    transform_id: int
    attributes: tuple[Attribute, ...] = ()

    @classmethod
    def with_key_length(cls, transform_type: int, transform_id: int, bits: int) -> Transform:
        return cls(transform_type, transform_id, (Attribute(TransformAttr.KEY_LENGTH, bits),))

    @property
    def key_length(self) -> int | None:
        """Key length in bits (3.3.5), or None when the attribute is absent."""
        for attr in self.attributes:
            if attr.attr_type == TransformAttr.KEY_LENGTH and isinstance(attr.value, int):
                return attr.value
        return None

    def encode(self) -> bytes:
        head = struct.pack("!BxH", self.transform_type, self.transform_id)
        return head + b"".join(a.encode() for a in self.attributes)

    @classmethod
    def parse(cls, sub: Reader) -> Transform:
        ttype, _, tid = sub.u8(), sub.u8(), sub.u16()
        attrs: list[Attribute] = []
        while sub.remaining:
            attrs.append(Attribute.read(sub))
        return cls(ttype, tid, tuple(attrs))


# Proposal body (after the header above), 3.3.1:
#   +--------+--------+--------+--------+
#   | number | proto  |SPI size| #xforms|
#   +--------+--------+--------+--------+
#   | SPI (SPI size octets) ...         |
#   | transforms ...                    |
#   +-----------------------------------+
@dataclass(frozen=True)
class Proposal(_Checked):
    _WIDTHS = {"number": 8, "protocol_id": 8, "spi": 8, "transforms": 8}
    number: int
    protocol_id: int
    spi: bytes
    transforms: tuple[Transform, ...]

    def of_type(self, transform_type: int) -> tuple[Transform, ...]:
        return tuple(t for t in self.transforms if t.transform_type == transform_type)

    def encode(self) -> bytes:
        head = struct.pack("!BBBB", self.number, self.protocol_id, len(self.spi), len(self.transforms))
        return head + self.spi + _write_substructs([t.encode() for t in self.transforms], _MORE_TRANSFORMS)

    @classmethod
    def parse(cls, sub: Reader) -> Proposal:
        number, proto, spi_size, count = sub.u8(), sub.u8(), sub.u8(), sub.u8()
        spi = sub.take(spi_size)
        transforms = _read_substructs(sub, _MORE_TRANSFORMS, Transform.parse) if sub.remaining else ()
        if len(transforms) != count:
            raise syntax_error(f"proposal {number}: says {count} transforms, carries {len(transforms)}")
        return cls(number, proto, spi, transforms)


@register
@dataclass(frozen=True)
class SA(Payload):
    """Security Association payload (3.3): one or more proposals."""

    PAYLOAD_TYPE = PayloadType.SA
    proposals: tuple[Proposal, ...]

    def encode(self) -> bytes:
        return _write_substructs([p.encode() for p in self.proposals], _MORE_PROPOSALS)

    @classmethod
    def decode(cls, body: bytes) -> Self:
        return cls(_read_substructs(Reader(body, "SA payload"), _MORE_PROPOSALS, Proposal.parse))


@dataclass(frozen=True)
class _HeadAndData(Payload):
    """A fixed header, then variable data. ``_HEAD`` is the header's struct
    format ('x' = a RESERVED octet, sent as 0 and ignored on receipt); the
    dataclass fields fill it in order, and the last field is the data."""

    _HEAD: ClassVar[str] = "!"

    def encode(self) -> bytes:
        *head, data = (getattr(self, f.name) for f in fields(self))
        return struct.pack(self._HEAD, *head) + data

    @classmethod
    def decode(cls, body: bytes) -> Self:
        size = struct.calcsize(cls._HEAD)
        if len(body) < size:
            raise syntax_error(f"payload {cls.PAYLOAD_TYPE}: {len(body)} octets, shorter than its header")
        return cls(*struct.unpack_from(cls._HEAD, body), body[size:])


# KE, 3.4:
#   +-----------------+-----------------+
#   | DH group number | RESERVED        |
#   +-----------------+-----------------+
#   | key exchange data ...             |
#   +-----------------------------------+
@register
@dataclass(frozen=True)
class KE(_HeadAndData):
    PAYLOAD_TYPE = PayloadType.KE
    _HEAD = "!H2x"
    _WIDTHS = {"group": 16}
    group: int
    data: bytes


# IDi and IDr, 3.5 (AUTH, 3.8, has the same shape with the method first):
#   +--------+--------------------------+
#   | ID type| RESERVED (3)             |
#   +--------+--------------------------+
#   | identification data ...           |
#   +-----------------------------------+
@dataclass(frozen=True)
class IdPayload(_HeadAndData):
    """Shared codec of IDi and IDr. The encoded body is also RestOfIDPayload (2.15)."""

    _HEAD = "!B3x"
    _WIDTHS = {"id_type": 8}
    id_type: int
    data: bytes

    @classmethod
    def from_address(cls, address: IPv4Address | IPv6Address) -> Self:
        return cls(IdType.IPV4_ADDR if address.version == 4 else IdType.IPV6_ADDR, address.packed)

    @classmethod
    def from_fqdn(cls, name: str) -> Self:
        return cls(IdType.FQDN, name.encode("ascii"))


@register
class IDi(IdPayload):
    PAYLOAD_TYPE = PayloadType.IDI


@register
class IDr(IdPayload):
    PAYLOAD_TYPE = PayloadType.IDR


@register
@dataclass(frozen=True)
class Auth(_HeadAndData):
    PAYLOAD_TYPE = PayloadType.AUTH
    _HEAD = "!B3x"
    _WIDTHS = {"method": 8}
    method: int
    data: bytes


# CERT, 3.6, and CERTREQ, 3.7, whose data is the Certification Authority
# field: SHA-1 hashes of trusted CA public keys, back to back.
#   +--------+--------------------------+
#   |encoding| certificate data ...     |
#   +--------+--------------------------+
@register
@dataclass(frozen=True)
class Cert(_HeadAndData):
    PAYLOAD_TYPE = PayloadType.CERT
    _HEAD = "!B"
    _WIDTHS = {"encoding": 8}
    encoding: int
    data: bytes


@register
class CertReq(Cert):
    PAYLOAD_TYPE = PayloadType.CERTREQ

    def ca_hashes(self) -> tuple[bytes, ...]:
        if len(self.data) % 20:
            raise syntax_error(f"CERTREQ: authority field of {len(self.data)} octets is not SHA-1 hashes")
        return tuple(self.data[i : i + 20] for i in range(0, len(self.data), 20))


# Nonce, 3.9: the body is the nonce, 16..256 octets.
@register
@dataclass(frozen=True)
class Nonce(_HeadAndData):
    PAYLOAD_TYPE = PayloadType.NONCE
    data: bytes

    def __post_init__(self) -> None:
        if not NONCE_MIN_LEN <= len(self.data) <= NONCE_MAX_LEN:
            raise LocalProtocolError(f"nonce of {len(self.data)} octets, 3.9 allows 16..256")

    @classmethod
    def decode(cls, body: bytes) -> Self:
        if not NONCE_MIN_LEN <= len(body) <= NONCE_MAX_LEN:
            raise syntax_error(f"nonce of {len(body)} octets, 3.9 allows 16..256")
        return cls(body)


# Vendor ID, 3.12: the body is the vendor ID.
@register
@dataclass(frozen=True)
class Vendor(_HeadAndData):
    PAYLOAD_TYPE = PayloadType.VENDOR
    vendor_id: bytes


# Notify, 3.10:
#   +--------+--------+-----------------+
#   | proto  |SPI size| notify type     |
#   +--------+--------+-----------------+
#   | SPI (SPI size octets) ...         |
#   | notification data ...             |
#   +-----------------------------------+
@register
@dataclass(frozen=True)
class Notify(Payload):
    PAYLOAD_TYPE = PayloadType.NOTIFY
    _WIDTHS = {"notify_type": 16, "protocol_id": 8, "spi": 8}
    notify_type: int
    data: bytes = b""
    protocol_id: int = ProtocolId.NONE
    spi: bytes = b""

    @property
    def is_error(self) -> bool:
        return is_error_notify(self.notify_type)

    def encode(self) -> bytes:
        return struct.pack("!BBH", self.protocol_id, len(self.spi), self.notify_type) + self.spi + self.data

    @classmethod
    def decode(cls, body: bytes) -> Self:
        r = Reader(body, "Notify payload")
        proto, spi_size, ntype = r.u8(), r.u8(), r.u16()
        spi = r.take(spi_size)
        return cls(ntype, r.rest(), proto, spi)


# Delete, 3.11:
#   +--------+--------+-----------------+
#   | proto  |SPI size| number of SPIs  |
#   +--------+--------+-----------------+
#   | SPIs (number x SPI size octets)   |
#   +-----------------------------------+
@register
@dataclass(frozen=True)
class Delete(Payload):
    """Deleting the IKE SA itself carries no SPI (size 0); ESP/AH SPIs are 4 octets."""

    PAYLOAD_TYPE = PayloadType.DELETE
    _WIDTHS = {"protocol_id": 8, "spis": 16}
    protocol_id: int
    spis: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if len({len(s) for s in self.spis}) > 1 or (self.spis and len(self.spis[0]) > 255):
            raise LocalProtocolError("Delete: SPIs must all have the same size, at most 255")

    def encode(self) -> bytes:
        size = len(self.spis[0]) if self.spis else (0 if self.protocol_id == ProtocolId.IKE else 4)
        return struct.pack("!BBH", self.protocol_id, size, len(self.spis)) + b"".join(self.spis)

    @classmethod
    def decode(cls, body: bytes) -> Self:
        r = Reader(body, "Delete payload")
        proto, size, count = r.u8(), r.u8(), r.u16()
        if size * count != r.remaining:
            raise syntax_error(f"Delete: {count} SPIs of {size} octets in {r.remaining} octets")
        return cls(proto, tuple(r.take(size) for _ in range(count)))


# Traffic selector, 3.13.1, the address ranges of types 7 (IPv4) and 8 (IPv6):
#   +--------+--------+-----------------+
#   |TS type |IP proto| selector length |
#   +--------+--------+-----------------+
#   | start port      | end port        |
#   +-----------------+-----------------+
#   | starting address (4 or 16 octets) |
#   | ending address   (4 or 16 octets) |
#   +-----------------------------------+
_TS_RANGE_LEN = {TsType.IPV4_ADDR_RANGE: 16, TsType.IPV6_ADDR_RANGE: 40}


@dataclass(frozen=True)
class TrafficSelector(_Checked):
    """An address range with a protocol (0 = any) and a port range (3.13.1)."""

    _WIDTHS = {"ip_proto": 8, "start_port": 16, "end_port": 16}
    start: IPv4Address | IPv6Address
    end: IPv4Address | IPv6Address
    ip_proto: int = 0
    start_port: int = 0
    end_port: int = 0xFFFF

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.start.version != self.end.version:
            raise LocalProtocolError("traffic selector mixes IPv4 and IPv6")

    @classmethod
    def for_network(cls, net: IPv4Network | IPv6Network, ip_proto: int = 0) -> TrafficSelector:
        return cls(net.network_address, net.broadcast_address, ip_proto)

    @property
    def ts_type(self) -> int:
        return TsType.IPV4_ADDR_RANGE if self.start.version == 4 else TsType.IPV6_ADDR_RANGE

    def encode(self) -> bytes:
        head = struct.pack("!BBHHH", self.ts_type, self.ip_proto, _TS_RANGE_LEN[self.ts_type],
                           self.start_port, self.end_port)
        return head + self.start.packed + self.end.packed


@dataclass(frozen=True)
class RawSelector:
    """A selector of a type we do not parse, kept whole, header included."""

    data: bytes

    def __post_init__(self) -> None:
        if len(self.data) < 4 or int.from_bytes(self.data[2:4], "big") != len(self.data):
            raise LocalProtocolError("raw traffic selector: length field does not match")

    @property
    def ts_type(self) -> int:
        return self.data[0]

    def encode(self) -> bytes:
        return self.data


def _read_selector(r: Reader) -> TrafficSelector | RawSelector:
    head = r.take(4)
    ts_type, ip_proto, length = head[0], head[1], int.from_bytes(head[2:4], "big")
    if length < 4:
        raise syntax_error(f"traffic selector length {length}")
    rest = r.take(length - 4)
    if ts_type not in _TS_RANGE_LEN:
        return RawSelector(head + rest)
    if length != _TS_RANGE_LEN[ts_type]:
        raise syntax_error(f"traffic selector of type {ts_type} with length {length}")
    alen = (length - 8) // 2
    make: Callable[[bytes], IPv4Address | IPv6Address] = IPv4Address if alen == 4 else IPv6Address
    start_port, end_port = struct.unpack_from("!HH", rest)
    return TrafficSelector(make(rest[4 : 4 + alen]), make(rest[4 + alen :]), ip_proto, start_port, end_port)


# TSi and TSr, 3.13:
#   +--------+--------------------------+
#   | number | RESERVED (3)             |
#   +--------+--------------------------+
#   | traffic selectors ...             |
#   +-----------------------------------+
@dataclass(frozen=True)
class TsPayload(Payload):
    _WIDTHS = {"selectors": 8}
    selectors: tuple[TrafficSelector | RawSelector, ...]

    def encode(self) -> bytes:
        return bytes((len(self.selectors), 0, 0, 0)) + b"".join(s.encode() for s in self.selectors)

    @classmethod
    def decode(cls, body: bytes) -> Self:
        r = Reader(body, "TS payload")
        count = r.u8()
        r.take(3)
        selectors = tuple(_read_selector(r) for _ in range(count))
        r.end()
        return cls(selectors)


@register
class TSi(TsPayload):
    PAYLOAD_TYPE = PayloadType.TSI


@register
class TSr(TsPayload):
    PAYLOAD_TYPE = PayloadType.TSR


# SK, 3.14: the body is IV | ciphertext of (inner payloads, padding, pad
# length) | ICV, built and opened by message.seal/unseal. Its generic header's
# Next Payload names the FIRST INNER payload, so it is a field here.
@dataclass(frozen=True)
class Encrypted(Payload):
    PAYLOAD_TYPE = PayloadType.SK
    _WIDTHS = {"first_payload": 8}
    first_payload: int
    body: bytes

    def encode(self) -> bytes:
        return self.body

    @classmethod
    def decode(cls, body: bytes, first_payload: int = PayloadType.NONE) -> Self:
        return cls(first_payload, body)


@dataclass(frozen=True)
class UnknownPayload(Payload):
    """A payload type we do not implement, critical bit clear (2.5): kept, not acted on."""

    _WIDTHS = {"code": 8}
    code: int
    body: bytes
    critical: bool = False

    @property
    def payload_type(self) -> int:
        return self.code

    def encode(self) -> bytes:
        return self.body
