"""BGP path attributes of the UPDATE message (RFC 4271 sections 4.3 and 5) and the
IPv4 prefix NLRI encoding, with the RFC 7606 section 7 action for each attribute.

Every attribute is a frozen dataclass registered by type code in
``ATTRIBUTE_CLASSES``. ``FLAGS`` is the Optional/Transitive pair it must carry,
``ON_ERROR`` what RFC 7606 says to do when it is malformed, ``ERROR_SUBCODE``
the UPDATE Message Error subcode (RFC 4271 section 6.3) for its NOTIFICATION.
The ``flags`` field is None unless the peer sent flags other than the ones we
would send (a spare Extended Length bit, the Partial bit, the unused low bits),
so that what decodes re-encodes to the very same octets.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from typing import ClassVar, Self

from bgp.constants import (
    EXT_COMMUNITY_LEN,
    OPTIONAL_NON_TRANSITIVE,
    OPTIONAL_TRANSITIVE,
    WELL_KNOWN,
    Afi,
    AsSegmentType,
    AttrFlag,
    AttrType,
    ErrorAction,
    ErrorCode,
    Origin,
    Safi,
    UpdateSubcode,
)
from bgp.errors import LocalBgpError, Reader, RemoteBgpError, check_uint
from bgp.evpn_nlri import (
    EvpnRoute,
    ExtCommunity,
    PmsiTunnel,
    decode_evpn_nlri,
    decode_ext_community,
)


# --- IPv4 prefixes, RFC 4271 section 4.3: | Length in bits (1) | Prefix (ceil(len/8)) |
# The trailing bits of the last octet are "irrelevant" to the RFC but kept here,
# so the prefix is stored as sent; ``network`` gives the clean IPv4Network.
@dataclass(frozen=True)
class Ipv4Prefix:
    length: int
    packed: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.length <= 32 or len(self.packed) != (self.length + 7) // 8:
            raise LocalBgpError(f"prefix /{self.length} needs {(self.length + 7) // 8} octets, has {self.packed!r}")

    @classmethod
    def of(cls, network: IPv4Network | str) -> Ipv4Prefix:
        net = IPv4Network(network)
        return cls(net.prefixlen, net.network_address.packed[: (net.prefixlen + 7) // 8])

    @property
    def network(self) -> IPv4Network:
        return IPv4Network((self.packed.ljust(4, b"\0"), self.length), strict=False)

    def encode(self) -> bytes:
        return bytes((self.length,)) + self.packed


@dataclass(frozen=True)
class RawNlri:
    """NLRI of an address family we do not parse, kept whole."""

    afi: int
    safi: int
    data: bytes

    def encode(self) -> bytes:
        return self.data


Nlri = Ipv4Prefix | EvpnRoute | RawNlri


def decode_prefixes(data: bytes, what: str) -> tuple[Ipv4Prefix, ...]:
    r = Reader(data, what, ErrorCode.UPDATE_MESSAGE, UpdateSubcode.INVALID_NETWORK_FIELD)
    out = []
    while r.remaining:
        length = r.u8()
        if length > 32:
            raise r.error(f"prefix length {length} exceeds 32")
        out.append(Ipv4Prefix(length, r.take((length + 7) // 8)))
    return tuple(out)


def encode_prefixes(prefixes: tuple[Nlri, ...]) -> bytes:
    return b"".join(p.encode() for p in prefixes)


# --- Attribute header, RFC 4271 section 4.3:
#   | O T P E 0 0 0 0 | Type Code (1) | Length (1, or 2 when E) | Value |
@dataclass(frozen=True)
class PathAttribute:
    TYPE: ClassVar[int] = 0
    FLAGS: ClassVar[int] = OPTIONAL_TRANSITIVE
    ON_ERROR: ClassVar[ErrorAction] = ErrorAction.TREAT_AS_WITHDRAW
    ERROR_SUBCODE: ClassVar[int] = UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR
    flags: int | None = field(default=None, kw_only=True)

    @property
    def type_code(self) -> int:
        return self.TYPE

    def encode_value(self, asn4: bool) -> bytes:
        raise NotImplementedError

    @classmethod
    def read_value(cls, r: Reader, asn4: bool) -> Self:
        raise NotImplementedError

    @classmethod
    def decode_value(cls, value: bytes, *, asn4: bool, flags: int) -> Self:
        r = Reader(value, AttrType(cls.TYPE).name, ErrorCode.UPDATE_MESSAGE, cls.ERROR_SUBCODE)
        attr = cls.read_value(r, asn4)
        r.end()
        return attr if flags == _default_flags(cls.FLAGS, len(value)) else replace(attr, flags=flags)

    def wire_flags(self, length: int) -> int:
        return _default_flags(self.FLAGS, length) if self.flags is None else self.flags

    def encode(self, asn4: bool = True) -> bytes:
        value = self.encode_value(asn4)
        flags = self.wire_flags(len(value))
        check_uint("attribute flags", flags, 8)
        if flags & AttrFlag.EXTENDED_LENGTH:
            check_uint("attribute length", len(value), 16)
            return bytes((flags, self.type_code)) + len(value).to_bytes(2, "big") + value
        check_uint("attribute length (no Extended Length flag)", len(value), 8)
        return bytes((flags, self.type_code, len(value))) + value


def _default_flags(flags: int, length: int) -> int:
    return flags | (AttrFlag.EXTENDED_LENGTH if length > 255 else 0)


ATTRIBUTE_CLASSES: dict[int, type[PathAttribute]] = {}


def _register(cls: type[PathAttribute]) -> type[PathAttribute]:
    ATTRIBUTE_CLASSES[cls.TYPE] = cls
    return cls


@dataclass(frozen=True)
class UnknownAttribute(PathAttribute):
    """An optional attribute we do not interpret, passed on as received (RFC 4271 section 5)."""

    unknown_type: int
    value: bytes
    raw_flags: int = OPTIONAL_TRANSITIVE

    @property
    def type_code(self) -> int:
        return self.unknown_type

    def wire_flags(self, length: int) -> int:
        return self.raw_flags

    def encode_value(self, asn4: bool) -> bytes:
        return self.value


def _fixed_u32(r: Reader) -> int:
    if r.remaining != 4:  # RFC 7606 sections 7.3-7.5, 7.9: length other than 4 is malformed
        raise RemoteBgpError(f"length {r.remaining}, expected 4", code=ErrorCode.UPDATE_MESSAGE,
                             subcode=UpdateSubcode.ATTRIBUTE_LENGTH_ERROR)
    return r.u32()


# ORIGIN (type 1), well-known mandatory: | 0 IGP / 1 EGP / 2 INCOMPLETE | -- RFC 7606 7.1
@_register
@dataclass(frozen=True)
class OriginAttr(PathAttribute):
    TYPE, FLAGS, ERROR_SUBCODE = AttrType.ORIGIN, WELL_KNOWN, UpdateSubcode.ATTRIBUTE_LENGTH_ERROR
    origin: int = Origin.IGP

    def encode_value(self, asn4: bool) -> bytes:
        check_uint("origin", self.origin, 8)
        return bytes((self.origin,))

    @classmethod
    def read_value(cls, r: Reader, asn4: bool) -> OriginAttr:
        if r.remaining != 1:
            raise r.error(f"length {r.remaining}, expected 1")
        value = r.u8()
        if value not in tuple(Origin):
            raise RemoteBgpError(f"undefined ORIGIN {value}", code=ErrorCode.UPDATE_MESSAGE,
                                 subcode=UpdateSubcode.INVALID_ORIGIN_ATTRIBUTE)
        return cls(value)


# AS_PATH (type 2), well-known mandatory, RFC 4271 4.3 and RFC 6793 (4-octet ASNs
# once both sides sent the capability):   -- RFC 7606 7.2
#   | Segment Type (1) | Segment Length in ASNs (1) | ASNs (2 or 4 octets each) | ...
@dataclass(frozen=True)
class AsSegment:
    seg_type: int
    asns: tuple[int, ...]


@_register
@dataclass(frozen=True)
class AsPath(PathAttribute):
    TYPE, FLAGS, ERROR_SUBCODE = AttrType.AS_PATH, WELL_KNOWN, UpdateSubcode.MALFORMED_AS_PATH
    segments: tuple[AsSegment, ...] = ()

    @classmethod
    def sequence(cls, *asns: int) -> AsPath:
        return cls((AsSegment(AsSegmentType.AS_SEQUENCE, tuple(asns)),) if asns else ())

    def encode_value(self, asn4: bool) -> bytes:
        width = 4 if asn4 else 2
        out = []
        for seg in self.segments:
            check_uint("segment type", seg.seg_type, 8)
            if not 0 < len(seg.asns) < 256:
                raise LocalBgpError(f"AS_PATH segment of {len(seg.asns)} ASNs; must be 1..255")
            for asn in seg.asns:
                check_uint("ASN", asn, width * 8)
            out.append(bytes((seg.seg_type, len(seg.asns))) + b"".join(a.to_bytes(width, "big") for a in seg.asns))
        return b"".join(out)

    @classmethod
    def read_value(cls, r: Reader, asn4: bool) -> AsPath:
        width = 4 if asn4 else 2
        segments = []
        while r.remaining:
            seg_type, count = r.u8(), r.u8()
            if seg_type not in tuple(AsSegmentType) or count == 0:
                raise r.error(f"segment type {seg_type} with {count} ASNs")
            raw = r.take(count * width)
            asns = tuple(int.from_bytes(raw[i : i + width], "big") for i in range(0, len(raw), width))
            segments.append(AsSegment(seg_type, asns))
        return cls(tuple(segments))


# NEXT_HOP (type 3), well-known: | IPv4 address (4) |   -- RFC 7606 7.3
@_register
@dataclass(frozen=True)
class NextHop(PathAttribute):
    TYPE, FLAGS, ERROR_SUBCODE = AttrType.NEXT_HOP, WELL_KNOWN, UpdateSubcode.ATTRIBUTE_LENGTH_ERROR
    address: IPv4Address

    def encode_value(self, asn4: bool) -> bytes:
        return self.address.packed

    @classmethod
    def read_value(cls, r: Reader, asn4: bool) -> NextHop:
        return cls(IPv4Address(_fixed_u32(r)))


# MULTI_EXIT_DISC (type 4), optional non-transitive: | metric (4) |   -- RFC 7606 7.4
@_register
@dataclass(frozen=True)
class Med(PathAttribute):
    TYPE, FLAGS, ERROR_SUBCODE = AttrType.MULTI_EXIT_DISC, OPTIONAL_NON_TRANSITIVE, UpdateSubcode.ATTRIBUTE_LENGTH_ERROR
    metric: int

    def encode_value(self, asn4: bool) -> bytes:
        check_uint("MED", self.metric, 32)
        return self.metric.to_bytes(4, "big")

    @classmethod
    def read_value(cls, r: Reader, asn4: bool) -> Med:
        return cls(_fixed_u32(r))


# LOCAL_PREF (type 5), well-known (iBGP): | preference (4) |   -- RFC 7606 7.5
@_register
@dataclass(frozen=True)
class LocalPref(PathAttribute):
    TYPE, FLAGS, ERROR_SUBCODE = AttrType.LOCAL_PREF, WELL_KNOWN, UpdateSubcode.ATTRIBUTE_LENGTH_ERROR
    preference: int

    def encode_value(self, asn4: bool) -> bytes:
        check_uint("LOCAL_PREF", self.preference, 32)
        return self.preference.to_bytes(4, "big")

    @classmethod
    def read_value(cls, r: Reader, asn4: bool) -> LocalPref:
        return cls(_fixed_u32(r))


# ATOMIC_AGGREGATE (type 6), well-known discretionary, empty.   -- RFC 7606 7.6: discard
@_register
@dataclass(frozen=True)
class AtomicAggregate(PathAttribute):
    TYPE, FLAGS, ERROR_SUBCODE = AttrType.ATOMIC_AGGREGATE, WELL_KNOWN, UpdateSubcode.ATTRIBUTE_LENGTH_ERROR
    ON_ERROR = ErrorAction.ATTRIBUTE_DISCARD

    def encode_value(self, asn4: bool) -> bytes:
        return b""

    @classmethod
    def read_value(cls, r: Reader, asn4: bool) -> AtomicAggregate:
        return cls()


# COMMUNITIES (type 8, RFC 1997), optional transitive: | community (4) | ...  -- RFC 7606 7.8
# CLUSTER_LIST (type 10, RFC 4456), optional non-transitive: | cluster id (4) | ... -- 7.10
def _read_u32_list(r: Reader) -> tuple[int, ...]:
    if r.remaining % 4:
        raise r.error(f"length {r.remaining} is not a multiple of 4")
    return tuple(r.u32() for _ in range(r.remaining // 4))


@_register
@dataclass(frozen=True)
class Communities(PathAttribute):
    TYPE = AttrType.COMMUNITIES
    values: tuple[int, ...] = ()

    def encode_value(self, asn4: bool) -> bytes:
        for v in self.values:
            check_uint("community", v, 32)
        return b"".join(v.to_bytes(4, "big") for v in self.values)

    @classmethod
    def read_value(cls, r: Reader, asn4: bool) -> Communities:
        return cls(_read_u32_list(r))


# ORIGINATOR_ID (type 9, RFC 4456 section 8), optional non-transitive: | router id (4) |  -- 7.9
@_register
@dataclass(frozen=True)
class OriginatorId(PathAttribute):
    TYPE, FLAGS = AttrType.ORIGINATOR_ID, OPTIONAL_NON_TRANSITIVE
    router_id: IPv4Address

    def encode_value(self, asn4: bool) -> bytes:
        return self.router_id.packed

    @classmethod
    def read_value(cls, r: Reader, asn4: bool) -> OriginatorId:
        return cls(IPv4Address(_fixed_u32(r)))


@_register
@dataclass(frozen=True)
class ClusterList(PathAttribute):
    TYPE, FLAGS = AttrType.CLUSTER_LIST, OPTIONAL_NON_TRANSITIVE
    cluster_ids: tuple[IPv4Address, ...] = ()

    def encode_value(self, asn4: bool) -> bytes:
        return b"".join(c.packed for c in self.cluster_ids)

    @classmethod
    def read_value(cls, r: Reader, asn4: bool) -> ClusterList:
        return cls(tuple(IPv4Address(c) for c in _read_u32_list(r)))


# MP_REACH_NLRI (type 14), RFC 4760 section 3, optional non-transitive:
#   | AFI (2) | SAFI (1) | Length of Next Hop (1) | Next Hop (variable) |
#   | Reserved (1) | NLRI (variable) |
# RFC 7606 7.11: if it is malformed the NLRI cannot be trusted: session reset.
_NEXT_HOP_LENGTHS = {(Afi.L2VPN, Safi.EVPN): (4, 16), (Afi.IPV4, Safi.UNICAST): (4, 16, 32)}


def _decode_nlri(afi: int, safi: int, data: bytes) -> tuple[Nlri, ...]:
    if (afi, safi) == (Afi.L2VPN, Safi.EVPN):
        return decode_evpn_nlri(data)
    if (afi, safi) == (Afi.IPV4, Safi.UNICAST):
        try:
            return decode_prefixes(data, "MP NLRI")
        except RemoteBgpError as exc:
            raise RemoteBgpError(str(exc), code=ErrorCode.UPDATE_MESSAGE,
                                 subcode=UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR) from exc
    return (RawNlri(afi, safi, data),) if data else ()


@_register
@dataclass(frozen=True)
class MpReachNlri(PathAttribute):
    TYPE, FLAGS, ON_ERROR = AttrType.MP_REACH_NLRI, OPTIONAL_NON_TRANSITIVE, ErrorAction.SESSION_RESET
    afi: int
    safi: int
    next_hop: IPv4Address | IPv6Address | bytes  # bytes when neither 4 nor 16 octets (e.g. 32)
    nlri: tuple[Nlri, ...] = ()
    reserved: int = 0  # "MUST be set to 0, MUST be ignored": kept only to re-encode exactly

    def encode_value(self, asn4: bool) -> bytes:
        check_uint("afi", self.afi, 16)
        check_uint("safi", self.safi, 8)
        check_uint("reserved", self.reserved, 8)
        nh = self.next_hop if isinstance(self.next_hop, bytes) else self.next_hop.packed
        check_uint("next hop length", len(nh), 8)
        head = self.afi.to_bytes(2, "big") + bytes((self.safi, len(nh))) + nh + bytes((self.reserved,))
        return head + encode_prefixes(self.nlri)

    @classmethod
    def read_value(cls, r: Reader, asn4: bool) -> MpReachNlri:
        afi, safi, nh_len = r.u16(), r.u8(), r.u8()
        allowed = _NEXT_HOP_LENGTHS.get((afi, safi))
        if allowed is not None and nh_len not in allowed:
            raise r.error(f"next hop length {nh_len} for AFI {afi}/SAFI {safi}")
        raw = r.take(nh_len)
        next_hop = IPv4Address(raw) if nh_len == 4 else IPv6Address(raw) if nh_len == 16 else raw
        reserved = r.u8()
        return cls(afi, safi, next_hop, _decode_nlri(afi, safi, r.rest()), reserved)


# MP_UNREACH_NLRI (type 15), RFC 4760 section 4:  | AFI (2) | SAFI (1) | Withdrawn Routes |
@_register
@dataclass(frozen=True)
class MpUnreachNlri(PathAttribute):
    TYPE, FLAGS, ON_ERROR = AttrType.MP_UNREACH_NLRI, OPTIONAL_NON_TRANSITIVE, ErrorAction.SESSION_RESET
    afi: int
    safi: int
    nlri: tuple[Nlri, ...] = ()

    def encode_value(self, asn4: bool) -> bytes:
        check_uint("afi", self.afi, 16)
        check_uint("safi", self.safi, 8)
        return self.afi.to_bytes(2, "big") + bytes((self.safi,)) + encode_prefixes(self.nlri)

    @classmethod
    def read_value(cls, r: Reader, asn4: bool) -> MpUnreachNlri:
        afi, safi = r.u16(), r.u8()
        return cls(afi, safi, _decode_nlri(afi, safi, r.rest()))


# EXTENDED_COMMUNITIES (type 16), RFC 4360 section 2, optional transitive:
# 8-octet communities back to back.   -- RFC 7606 7.14: length not a multiple of 8
@_register
@dataclass(frozen=True)
class ExtCommunities(PathAttribute):
    TYPE = AttrType.EXTENDED_COMMUNITIES
    communities: tuple[ExtCommunity, ...] = ()

    def encode_value(self, asn4: bool) -> bytes:
        return b"".join(c.encode() for c in self.communities)

    @classmethod
    def read_value(cls, r: Reader, asn4: bool) -> ExtCommunities:
        if r.remaining % EXT_COMMUNITY_LEN:
            raise r.error(f"length {r.remaining} is not a multiple of {EXT_COMMUNITY_LEN}")
        return cls(tuple(decode_ext_community(r.take(EXT_COMMUNITY_LEN)) for _ in range(r.remaining // 8)))


# PMSI_TUNNEL (type 22), RFC 6514 section 5, optional transitive; layout in evpn_nlri.
# RFC 7606 does not list it; it steers BUM forwarding, so a malformed one withdraws.
@_register
@dataclass(frozen=True)
class PmsiTunnelAttr(PathAttribute):
    TYPE = AttrType.PMSI_TUNNEL
    tunnel: PmsiTunnel

    def encode_value(self, asn4: bool) -> bytes:
        return self.tunnel.encode()

    @classmethod
    def read_value(cls, r: Reader, asn4: bool) -> PmsiTunnelAttr:
        return cls(PmsiTunnel.decode(r.rest()))


def standard_evpn_attributes(
    nlri: tuple[EvpnRoute, ...], next_hop: IPv4Address, communities: tuple[ExtCommunity, ...],
    pmsi: PmsiTunnel | None, as_path: AsPath | tuple[int, ...], local_pref: int | None, origin: int,
) -> tuple[PathAttribute, ...]:
    attrs: list[PathAttribute] = [
        MpReachNlri(Afi.L2VPN, Safi.EVPN, next_hop, nlri),
        OriginAttr(origin),
        as_path if isinstance(as_path, AsPath) else AsPath.sequence(*as_path),
    ]
    if local_pref is not None:
        attrs.append(LocalPref(local_pref))
    if communities:
        attrs.append(ExtCommunities(communities))
    if pmsi is not None:
        attrs.append(PmsiTunnelAttr(pmsi))
    return tuple(attrs)
