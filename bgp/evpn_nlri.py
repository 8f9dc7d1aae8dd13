"""EVPN NLRI (RFC 7432 section 7, RFC 8365, RFC 9136), route distinguishers
(RFC 4364 section 4.2), extended communities (RFC 4360, RFC 7432, RFC 9012,
RFC 9135) and the PMSI tunnel attribute value (RFC 6514 section 5).

Sans-IO: ``encode()`` gives bytes, ``decode``/``read`` parse them through a
bounds-checked ``Reader``. Route types and extended communities are registered
by type code; unknown ones are kept as raw bytes so that a route reflector can
pass them on unchanged. Constructors check widths and raise ``LocalBgpError``;
a peer's malformed value raises ``RemoteBgpError`` (UPDATE Message Error,
Optional Attribute Error: these all live inside MP_REACH/MP_UNREACH or optional
attributes).

For VXLAN (RFC 8365 section 5.1.3) the 3-octet MPLS label field carries the
whole 24-bit VNI, as FRR and GoBGP send it, so ``label1 == vni``.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import ClassVar, Self

from bgp.constants import (
    ESI_LEN,
    EXT_COMMUNITY_LEN,
    MAC_LEN_BITS,
    MAC_MOBILITY_STICKY,
    EvpnRouteType,
    ExtSubtype,
    ExtType,
    PmsiTunnelType,
    RdType,
    TunnelEncap,
)
from bgp.errors import LocalBgpError, Reader, check_uint

IPAddress = IPv4Address | IPv6Address
ZERO_ESI = bytes(ESI_LEN)


def _addr_from(raw: bytes) -> IPAddress:
    return IPv4Address(raw) if len(raw) == 4 else IPv6Address(raw)


def _read_ip(r: Reader, bits: int, what: str, allowed: tuple[int, ...]) -> IPAddress | None:
    if bits not in allowed:
        raise r.error(f"{what} length {bits} bits, expected one of {allowed}")
    return _addr_from(r.take(bits // 8)) if bits else None


def _ip_len(ip: IPAddress | None) -> int:
    return 0 if ip is None else ip.max_prefixlen


def _ip_bytes(ip: IPAddress | None) -> bytes:
    return b"" if ip is None else ip.packed


def mac_to_bytes(mac: str) -> bytes:
    parts = mac.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise LocalBgpError(f"MAC {mac!r} is not aa:bb:cc:dd:ee:ff")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError as exc:
        raise LocalBgpError(f"MAC {mac!r} is not hexadecimal") from exc


def mac_from_bytes(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _canonical_mac(mac: str) -> str:
    return mac_from_bytes(mac_to_bytes(mac))


# Route Distinguisher, RFC 4364 section 4.2: 2-octet type, 6-octet value.
#   type 0: | 0x0000 | AS (2)      | assigned number (4) |
#   type 1: | 0x0001 | IPv4 (4)    | assigned number (2) |   <- nsg: system IP : id
#   type 2: | 0x0002 | AS (4)      | assigned number (2) |
@dataclass(frozen=True)
class RouteDistinguisher:
    rd_type: int
    value: bytes  # the 6 octets after the type; kept raw so unknown types round-trip

    def __post_init__(self) -> None:
        check_uint("rd_type", self.rd_type, 16)
        if len(self.value) != 6:
            raise LocalBgpError(f"RD value must be 6 octets, got {len(self.value)}")

    @classmethod
    def ipv4(cls, address: IPv4Address | str, number: int) -> RouteDistinguisher:
        check_uint("RD assigned number", number, 16)
        return cls(RdType.IPV4, IPv4Address(address).packed + number.to_bytes(2, "big"))

    @classmethod
    def as2(cls, asn: int, number: int) -> RouteDistinguisher:
        check_uint("RD AS", asn, 16)
        check_uint("RD assigned number", number, 32)
        return cls(RdType.AS2, asn.to_bytes(2, "big") + number.to_bytes(4, "big"))

    @classmethod
    def as4(cls, asn: int, number: int) -> RouteDistinguisher:
        check_uint("RD AS", asn, 32)
        check_uint("RD assigned number", number, 16)
        return cls(RdType.AS4, asn.to_bytes(4, "big") + number.to_bytes(2, "big"))

    def encode(self) -> bytes:
        return self.rd_type.to_bytes(2, "big") + self.value

    @classmethod
    def read(cls, r: Reader) -> RouteDistinguisher:
        return cls(r.u16(), r.take(6))

    def __str__(self) -> str:
        v = self.value
        if self.rd_type == RdType.AS2:
            return f"{int.from_bytes(v[:2], 'big')}:{int.from_bytes(v[2:], 'big')}"
        if self.rd_type == RdType.IPV4:
            return f"{IPv4Address(v[:4])}:{int.from_bytes(v[4:], 'big')}"
        if self.rd_type == RdType.AS4:
            return f"{int.from_bytes(v[:4], 'big')}:{int.from_bytes(v[4:], 'big')}"
        return f"type{self.rd_type}:{v.hex()}"


# --- EVPN NLRI, RFC 7432 section 7 -------------------------------------------------------
#   +-----------------------------------+
#   |    Route Type (1 octet)           |
#   +-----------------------------------+
#   |     Length (1 octet)              |
#   +-----------------------------------+
#   | Route Type specific (variable)    |
#   +-----------------------------------+
@dataclass(frozen=True)
class EvpnRoute:
    ROUTE_TYPE: ClassVar[int] = 0

    @property
    def route_type(self) -> int:
        return self.ROUTE_TYPE

    def encode_body(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def read_body(cls, r: Reader) -> Self:
        raise NotImplementedError

    def encode(self) -> bytes:
        body = self.encode_body()
        check_uint("EVPN route length", len(body), 8)
        return bytes((self.route_type, len(body))) + body


EVPN_ROUTE_CLASSES: dict[int, type[EvpnRoute]] = {}


def _register_route(cls: type[EvpnRoute]) -> type[EvpnRoute]:
    EVPN_ROUTE_CLASSES[cls.ROUTE_TYPE] = cls
    return cls


def _check_label(name: str, label: int | None) -> None:
    if label is not None:
        check_uint(name, label, 24)


def _check_esi(esi: bytes) -> None:
    if len(esi) != ESI_LEN:
        raise LocalBgpError(f"ESI must be {ESI_LEN} octets, got {len(esi)}")


@dataclass(frozen=True)
class UnknownEvpnRoute(EvpnRoute):
    """Route types 1, 4 and any future one: carried, not interpreted."""

    unknown_type: int
    body: bytes

    def __post_init__(self) -> None:
        check_uint("route type", self.unknown_type, 8)

    @property
    def route_type(self) -> int:
        return self.unknown_type

    def encode_body(self) -> bytes:
        return self.body


# Type 2, MAC/IP Advertisement, RFC 7432 section 7.2:
#   | RD (8) | ESI (10) | Ethernet Tag ID (4) | MAC Address Length (1) = 48 |
#   | MAC Address (6) | IP Address Length (1) = 0/32/128 | IP Address (0/4/16) |
#   | MPLS Label1 (3) | MPLS Label2 (0 or 3) |
@_register_route
@dataclass(frozen=True)
class MacIpRoute(EvpnRoute):
    ROUTE_TYPE = EvpnRouteType.MAC_IP_ADVERTISEMENT
    rd: RouteDistinguisher
    mac: str  # normalised to lowercase aa:bb:cc:dd:ee:ff
    ip: IPAddress | None = None
    label1: int = 0  # the VNI for VXLAN (RFC 8365 section 5.1.3)
    label2: int | None = None  # the L3 VNI in symmetric IRB (RFC 9135)
    esi: bytes = ZERO_ESI
    eth_tag: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mac", _canonical_mac(self.mac))
        _check_label("label1", self.label1)
        _check_label("label2", self.label2)
        _check_esi(self.esi)
        check_uint("eth_tag", self.eth_tag, 32)

    @property
    def vni(self) -> int:
        return self.label1

    def encode_body(self) -> bytes:
        label2 = b"" if self.label2 is None else self.label2.to_bytes(3, "big")
        return (
            self.rd.encode() + self.esi + self.eth_tag.to_bytes(4, "big") + bytes((MAC_LEN_BITS,))
            + mac_to_bytes(self.mac) + bytes((_ip_len(self.ip),)) + _ip_bytes(self.ip)
            + self.label1.to_bytes(3, "big") + label2
        )

    @classmethod
    def read_body(cls, r: Reader) -> MacIpRoute:
        rd, esi, tag = RouteDistinguisher.read(r), r.take(ESI_LEN), r.u32()
        mac_len = r.u8()
        if mac_len != MAC_LEN_BITS:
            raise r.error(f"MAC address length {mac_len} bits, expected {MAC_LEN_BITS}")
        mac = mac_from_bytes(r.take(6))
        ip = _read_ip(r, r.u8(), "IP address", (0, 32, 128))
        label1 = r.u24()
        label2 = r.u24() if r.remaining else None
        return cls(rd, mac, ip, label1, label2, esi, tag)


# Type 3, Inclusive Multicast Ethernet Tag, RFC 7432 section 7.3:
#   | RD (8) | Ethernet Tag ID (4) | IP Address Length (1) | Originating Router's IP (4/16) |
# With VXLAN the Ethernet Tag is 0 and the VNI rides in the PMSI label (RFC 8365 section 5.1.3).
@_register_route
@dataclass(frozen=True)
class InclusiveMulticastRoute(EvpnRoute):
    ROUTE_TYPE = EvpnRouteType.INCLUSIVE_MULTICAST
    rd: RouteDistinguisher
    originator: IPAddress
    eth_tag: int = 0

    def __post_init__(self) -> None:
        check_uint("eth_tag", self.eth_tag, 32)

    def encode_body(self) -> bytes:
        ip = self.originator
        return self.rd.encode() + self.eth_tag.to_bytes(4, "big") + bytes((_ip_len(ip),)) + ip.packed

    @classmethod
    def read_body(cls, r: Reader) -> InclusiveMulticastRoute:
        rd, tag = RouteDistinguisher.read(r), r.u32()
        originator = _read_ip(r, r.u8(), "originating router IP", (32, 128))
        if originator is None:  # unreachable: 0 is not an allowed length; keeps the type exact
            raise r.error("no originating router IP")
        return cls(rd, originator, tag)


# Type 5, IP Prefix, RFC 9136 section 3.1 (IPv4: 34 octets, IPv6: 58):
#   | RD (8) | ESI (10) | Ethernet Tag ID (4) | IP Prefix Length (1) |
#   | IP Prefix (4/16) | GW IP Address (4/16) | MPLS Label (3) |
@_register_route
@dataclass(frozen=True)
class IpPrefixRoute(EvpnRoute):
    ROUTE_TYPE = EvpnRouteType.IP_PREFIX
    rd: RouteDistinguisher
    prefix: IPAddress  # the address as sent, host bits included
    prefix_len: int
    gateway: IPAddress
    label: int = 0  # the L3 VNI for VXLAN
    esi: bytes = ZERO_ESI
    eth_tag: int = 0

    def __post_init__(self) -> None:
        if self.prefix.version != self.gateway.version:
            raise LocalBgpError("IP prefix and gateway must be of one family")
        if not 0 <= self.prefix_len <= self.prefix.max_prefixlen:
            raise LocalBgpError(f"prefix length {self.prefix_len} too long for {self.prefix}")
        _check_label("label", self.label)
        _check_esi(self.esi)
        check_uint("eth_tag", self.eth_tag, 32)

    def encode_body(self) -> bytes:
        return (
            self.rd.encode() + self.esi + self.eth_tag.to_bytes(4, "big") + bytes((self.prefix_len,))
            + self.prefix.packed + self.gateway.packed + self.label.to_bytes(3, "big")
        )

    @classmethod
    def read_body(cls, r: Reader) -> IpPrefixRoute:
        size = {34: 4, 58: 16}.get(r.remaining)
        if size is None:
            raise r.error(f"IP prefix route of {r.remaining} octets, expected 34 or 58")
        rd, esi, tag, plen = RouteDistinguisher.read(r), r.take(ESI_LEN), r.u32(), r.u8()
        if plen > size * 8:
            raise r.error(f"IP prefix length {plen} exceeds {size * 8}")
        prefix, gateway = _addr_from(r.take(size)), _addr_from(r.take(size))
        return cls(rd, prefix, plen, gateway, r.u24(), esi, tag)


def read_evpn_route(r: Reader) -> EvpnRoute:
    route_type, length = r.u8(), r.u8()
    body = Reader(r.take(length), f"EVPN route type {route_type}")
    cls = EVPN_ROUTE_CLASSES.get(route_type)
    if cls is None:
        return UnknownEvpnRoute(route_type, body.rest())
    route = cls.read_body(body)
    body.end()
    return route


def decode_evpn_nlri(data: bytes) -> tuple[EvpnRoute, ...]:
    """The NLRI field of MP_REACH/MP_UNREACH for AFI 25 / SAFI 70: routes back to back."""
    r = Reader(data, "EVPN NLRI")
    routes = []
    while r.remaining:
        routes.append(read_evpn_route(r))
    return tuple(routes)


def encode_evpn_nlri(routes: tuple[EvpnRoute, ...]) -> bytes:
    return b"".join(route.encode() for route in routes)


# --- Extended communities, RFC 4360 section 2 --------------------------------------------
#   | Type high (1) | Sub-type (1) | Value (6) |
# Types are registered by (type high, sub-type). A known one is decoded only when
# it re-encodes to the same eight octets (reserved octets zero, flags known);
# otherwise it stays raw, so what we pass on is what we got.
@dataclass(frozen=True)
class ExtCommunity:
    TYPES: ClassVar[tuple[tuple[int, int], ...]] = ()

    def encode(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def from_value(cls, type_high: int, value: bytes) -> Self:
        raise NotImplementedError


EXT_COMMUNITY_CLASSES: dict[tuple[int, int], type[ExtCommunity]] = {}


def _register_ext(cls: type[ExtCommunity]) -> type[ExtCommunity]:
    for key in cls.TYPES:
        EXT_COMMUNITY_CLASSES[key] = cls
    return cls


@dataclass(frozen=True)
class RawExtCommunity(ExtCommunity):
    type_high: int
    subtype: int
    value: bytes

    def __post_init__(self) -> None:
        check_uint("type_high", self.type_high, 8)
        check_uint("subtype", self.subtype, 8)
        if len(self.value) != 6:
            raise LocalBgpError(f"extended community value must be 6 octets, got {len(self.value)}")

    def encode(self) -> bytes:
        return bytes((self.type_high, self.subtype)) + self.value


# Route Target, RFC 4360 sections 3.1-3.2 and RFC 5668: transitive, sub-type 0x02.
#   0x00: | AS (2) | number (4) |   0x01: | IPv4 (4) | number (2) |   0x02: | AS (4) | number (2) |
@_register_ext
@dataclass(frozen=True)
class RouteTarget(ExtCommunity):
    TYPES = tuple((t, ExtSubtype.ROUTE_TARGET) for t in (ExtType.TWO_OCTET_AS, ExtType.IPV4_ADDRESS,
                                                          ExtType.FOUR_OCTET_AS))
    admin: int | IPv4Address
    assigned: int
    ext_type: int = ExtType.TWO_OCTET_AS

    def __post_init__(self) -> None:
        admin_bits, assigned_bits = {ExtType.TWO_OCTET_AS: (16, 32), ExtType.IPV4_ADDRESS: (0, 16),
                                     ExtType.FOUR_OCTET_AS: (32, 16)}.get(self.ext_type, (-1, -1))
        if admin_bits < 0:
            raise LocalBgpError(f"route target type {self.ext_type} unknown")
        if admin_bits == 0:
            if not isinstance(self.admin, IPv4Address):
                raise LocalBgpError("IPv4-specific route target needs an IPv4 administrator")
        elif isinstance(self.admin, IPv4Address):
            raise LocalBgpError("AS-specific route target needs an AS number")
        else:
            check_uint("route target AS", self.admin, admin_bits)
        check_uint("route target number", self.assigned, assigned_bits)

    def encode(self) -> bytes:
        if isinstance(self.admin, IPv4Address):
            admin, size = self.admin.packed, 2
        else:
            width = 2 if self.ext_type == ExtType.TWO_OCTET_AS else 4
            admin, size = self.admin.to_bytes(width, "big"), 6 - width
        return bytes((self.ext_type, ExtSubtype.ROUTE_TARGET)) + admin + self.assigned.to_bytes(size, "big")

    @classmethod
    def from_value(cls, type_high: int, value: bytes) -> RouteTarget:
        if type_high == ExtType.IPV4_ADDRESS:
            return cls(IPv4Address(value[:4]), int.from_bytes(value[4:], "big"), type_high)
        width = 2 if type_high == ExtType.TWO_OCTET_AS else 4
        return cls(int.from_bytes(value[:width], "big"), int.from_bytes(value[width:], "big"), type_high)

    def __str__(self) -> str:
        return f"{self.admin}:{self.assigned}"


# Encapsulation, RFC 9012 section 4.1 (opaque, sub-type 0x0c):
#   | 0x03 | 0x0c | Reserved (4) | Tunnel Type (2) |     VXLAN = 8 (RFC 8365 section 5.1.3)
@_register_ext
@dataclass(frozen=True)
class Encapsulation(ExtCommunity):
    TYPES = ((ExtType.OPAQUE, ExtSubtype.ENCAPSULATION),)
    tunnel_type: int = TunnelEncap.VXLAN

    def __post_init__(self) -> None:
        check_uint("tunnel_type", self.tunnel_type, 16)

    def encode(self) -> bytes:
        return bytes((ExtType.OPAQUE, ExtSubtype.ENCAPSULATION)) + bytes(4) + self.tunnel_type.to_bytes(2, "big")

    @classmethod
    def from_value(cls, type_high: int, value: bytes) -> Encapsulation:
        return cls(int.from_bytes(value[4:], "big"))


# Default Gateway, RFC 7432 section 7.8: | 0x03 | 0x0d | Reserved (6) |
@_register_ext
@dataclass(frozen=True)
class DefaultGateway(ExtCommunity):
    TYPES = ((ExtType.OPAQUE, ExtSubtype.DEFAULT_GATEWAY),)

    def encode(self) -> bytes:
        return bytes((ExtType.OPAQUE, ExtSubtype.DEFAULT_GATEWAY)) + bytes(6)

    @classmethod
    def from_value(cls, type_high: int, value: bytes) -> DefaultGateway:
        return cls()


# MAC Mobility, RFC 7432 section 7.7:
#   | 0x06 | 0x00 | Flags (1) | Reserved (1) | Sequence Number (4) |   flag 0x01 = sticky/static
@_register_ext
@dataclass(frozen=True)
class MacMobility(ExtCommunity):
    TYPES = ((ExtType.EVPN, ExtSubtype.MAC_MOBILITY),)
    sequence: int
    flags: int = 0

    def __post_init__(self) -> None:
        check_uint("sequence", self.sequence, 32)
        check_uint("flags", self.flags, 8)

    @property
    def sticky(self) -> bool:
        return bool(self.flags & MAC_MOBILITY_STICKY)

    def encode(self) -> bytes:
        return bytes((ExtType.EVPN, ExtSubtype.MAC_MOBILITY, self.flags, 0)) + self.sequence.to_bytes(4, "big")

    @classmethod
    def from_value(cls, type_high: int, value: bytes) -> MacMobility:
        return cls(int.from_bytes(value[2:], "big"), value[0])


# Router's MAC, RFC 9135 section 8.1: | 0x06 | 0x03 | Router's MAC (6) |
@_register_ext
@dataclass(frozen=True)
class RoutersMac(ExtCommunity):
    TYPES = ((ExtType.EVPN, ExtSubtype.ROUTERS_MAC),)
    mac: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "mac", _canonical_mac(self.mac))

    def encode(self) -> bytes:
        return bytes((ExtType.EVPN, ExtSubtype.ROUTERS_MAC)) + mac_to_bytes(self.mac)

    @classmethod
    def from_value(cls, type_high: int, value: bytes) -> RoutersMac:
        return cls(mac_from_bytes(value))


def decode_ext_community(raw: bytes) -> ExtCommunity:
    """One 8-octet community; the caller has checked the length (RFC 7606 section 7.14)."""
    if len(raw) != EXT_COMMUNITY_LEN:
        raise LocalBgpError(f"extended community must be 8 octets, got {len(raw)}")
    cls = EXT_COMMUNITY_CLASSES.get((raw[0], raw[1]))
    if cls is not None:
        known = cls.from_value(raw[0], raw[2:])
        if known.encode() == raw:
            return known
    return RawExtCommunity(raw[0], raw[1], raw[2:])


# --- PMSI Tunnel attribute value, RFC 6514 section 5 -------------------------------------
#   | Flags (1) | Tunnel Type (1) | MPLS Label (3) | Tunnel Identifier (variable) |
# For ingress replication (type 6) the identifier is the unicast address of the
# originating VTEP (RFC 7432 section 11.2) and, for VXLAN, the label is the VNI.
@dataclass(frozen=True)
class PmsiTunnel:
    tunnel_type: int
    label: int
    tunnel_id: bytes
    flags: int = 0

    def __post_init__(self) -> None:
        check_uint("tunnel_type", self.tunnel_type, 8)
        check_uint("label", self.label, 24)
        check_uint("flags", self.flags, 8)

    @classmethod
    def ingress_replication(cls, vni: int, vtep: IPAddress | str) -> PmsiTunnel:
        return cls(PmsiTunnelType.INGRESS_REPLICATION, vni, ip_address(vtep).packed)

    @property
    def vni(self) -> int:
        return self.label

    @property
    def vtep(self) -> IPAddress | None:
        """The tunnel endpoint for ingress replication, None for other tunnel types."""
        if self.tunnel_type == PmsiTunnelType.INGRESS_REPLICATION and len(self.tunnel_id) in (4, 16):
            return _addr_from(self.tunnel_id)
        return None

    def encode(self) -> bytes:
        return bytes((self.flags, self.tunnel_type)) + self.label.to_bytes(3, "big") + self.tunnel_id

    @classmethod
    def decode(cls, value: bytes) -> PmsiTunnel:
        r = Reader(value, "PMSI tunnel")
        flags, tunnel_type, label = r.u8(), r.u8(), r.u24()
        return cls(tunnel_type, label, r.rest(), flags)


# --- What nsg originates -----------------------------------------------------------------
def mac_ip_route(
    rd: RouteDistinguisher, mac: str, ip: IPAddress | str | None, vni: int, *, l3vni: int | None = None,
    esi: bytes = ZERO_ESI,
) -> MacIpRoute:
    """A type-2 route for a local MAC (and IP) in a VNI (RFC 8365 section 5.1.3: Ethernet Tag 0)."""
    return MacIpRoute(rd, mac, None if ip is None else ip_address(ip), vni, l3vni, esi)


def inclusive_multicast_route(rd: RouteDistinguisher, vni: int, originator: IPAddress | str) -> tuple[
    InclusiveMulticastRoute, PmsiTunnel
]:
    """A type-3 route and the PMSI tunnel attribute (ingress replication, VNI as label) it needs."""
    vtep = ip_address(originator)
    return InclusiveMulticastRoute(rd, vtep), PmsiTunnel.ingress_replication(vni, vtep)


def route_target(asn: int, vni: int) -> RouteTarget:
    """AS:VNI, in the 2-octet-AS form when the AS fits, else the 4-octet-AS form (RFC 5668)."""
    if 0 <= asn < 1 << 16:
        return RouteTarget(asn, vni, ExtType.TWO_OCTET_AS)
    return RouteTarget(asn, vni, ExtType.FOUR_OCTET_AS)


def encap_vxlan() -> Encapsulation:
    return Encapsulation(TunnelEncap.VXLAN)
