"""EVPN NLRI, route distinguishers, extended communities and PMSI: golden bytes
from the RFC layouts, round trips, and malformed input."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from bgp.constants import ErrorCode, ExtType, PmsiTunnelType, UpdateSubcode
from bgp.errors import LocalBgpError, RemoteBgpError
from bgp.evpn_nlri import (
    DefaultGateway,
    Encapsulation,
    InclusiveMulticastRoute,
    IpPrefixRoute,
    MacIpRoute,
    MacMobility,
    PmsiTunnel,
    RawExtCommunity,
    RouteDistinguisher,
    RoutersMac,
    RouteTarget,
    UnknownEvpnRoute,
    decode_evpn_nlri,
    decode_ext_community,
    encap_vxlan,
    encode_evpn_nlri,
    inclusive_multicast_route,
    mac_ip_route,
    route_target,
)


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


RD = RouteDistinguisher.ipv4("192.0.2.1", 7)


@pytest.mark.parametrize(
    ("rd", "wire", "text"),
    [
        (RouteDistinguisher.as2(65000, 100), "0000 fde8 00000064", "65000:100"),
        (RouteDistinguisher.ipv4("192.0.2.1", 7), "0001 c0000201 0007", "192.0.2.1:7"),
        (RouteDistinguisher.as4(4_200_000_000, 9), "0002 fa56ea00 0009", "4200000000:9"),
        (RouteDistinguisher(5, h("010203040506")), "0005 010203040506", "type5:010203040506"),
    ],
)
def test_route_distinguishers(rd: RouteDistinguisher, wire: str, text: str) -> None:
    assert rd.encode() == h(wire) and str(rd) == text
    route = InclusiveMulticastRoute(rd, IPv4Address("192.0.2.1"))
    assert decode_evpn_nlri(route.encode()) == (route,)


def test_rd_local_errors() -> None:
    for make in (lambda: RouteDistinguisher.ipv4("192.0.2.1", 70000), lambda: RouteDistinguisher.as2(70000, 1),
                 lambda: RouteDistinguisher(1, b"short")):
        with pytest.raises(LocalBgpError):
            make()


def test_mac_ip_route_golden_with_ipv6_and_label2() -> None:
    route = MacIpRoute(RD, "02:00:00:00:00:0A", IPv6Address("2001:db8::1"), 100, 5000, bytes(range(10)), 3)
    wire = h("02 34 0001 c0000201 0007 00010203040506070809 00000003 30 02000000000a"
             "80 20010db8000000000000000000000001 000064 001388")
    assert route.encode() == wire
    assert decode_evpn_nlri(wire) == (route,)
    assert route.mac == "02:00:00:00:00:0a" and route.vni == 100


def test_mac_only_route() -> None:
    route = mac_ip_route(RD, "02:00:00:00:00:01", None, 16_777_215)
    wire = route.encode()
    assert wire[1] == 33 and wire.endswith(h("00 ffffff"))
    assert decode_evpn_nlri(wire) == (route,)


def test_inclusive_multicast_ipv6_and_helper() -> None:
    route, pmsi = inclusive_multicast_route(RD, 100, "2001:db8::9")
    assert route.encode()[:2] == h("03 1d") and decode_evpn_nlri(route.encode()) == (route,)
    assert pmsi.tunnel_type == PmsiTunnelType.INGRESS_REPLICATION and pmsi.vtep == IPv6Address("2001:db8::9")


def test_ip_prefix_route_golden() -> None:  # RFC 9136 section 3.1, IPv4
    route = IpPrefixRoute(RD, IPv4Address("10.1.0.0"), 16, IPv4Address("0.0.0.0"), 5000)
    wire = h("05 22 0001 c0000201 0007 00000000000000000000 00000000 10 0a010000 00000000 001388")
    assert route.encode() == wire and decode_evpn_nlri(wire) == (route,)
    v6 = IpPrefixRoute(RD, IPv6Address("2001:db8::"), 32, IPv6Address("::"), 1)
    assert decode_evpn_nlri(v6.encode()) == (v6,)
    with pytest.raises(LocalBgpError):
        IpPrefixRoute(RD, IPv4Address("10.0.0.0"), 33, IPv4Address("0.0.0.0"))
    with pytest.raises(LocalBgpError):
        IpPrefixRoute(RD, IPv4Address("10.0.0.0"), 8, IPv6Address("::"))


def test_unknown_route_types_are_kept() -> None:
    wire = h("01 03 aabbcc 04 00")
    routes = decode_evpn_nlri(wire)
    assert routes == (UnknownEvpnRoute(1, h("aabbcc")), UnknownEvpnRoute(4, b""))
    assert encode_evpn_nlri(routes) == wire


@pytest.mark.parametrize(
    "wire",
    [
        "02",  # no length
        "03 11 0001c00002010007",  # truncated body
        "02 25" + "00" * 22 + "2f" + "00" * 14,  # MAC length 47
        "02 25" + "00" * 22 + "30" + "00" * 6 + "18" + "00" * 7,  # IP length 24
        "02 29" + "00" * 22 + "30" + "00" * 6 + "20" + "00" * 11,  # 4 octets too many
        "03 0d" + "00" * 12 + "00",  # originator length 0
        "05 21" + "00" * 33,  # type 5 of 33 octets
        "05 22" + "00" * 22 + "21" + "00" * 11,  # prefix length 33
    ],
)
def test_malformed_routes(wire: str) -> None:
    with pytest.raises(RemoteBgpError) as info:
        decode_evpn_nlri(h(wire))
    assert info.value.code == ErrorCode.UPDATE_MESSAGE
    assert info.value.subcode == UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR


def test_route_local_errors() -> None:
    with pytest.raises(LocalBgpError):
        mac_ip_route(RD, "02:00:00:00:00", None, 1)
    with pytest.raises(LocalBgpError):
        mac_ip_route(RD, "02:00:00:00:00:zz", None, 1)
    with pytest.raises(LocalBgpError):
        mac_ip_route(RD, "02:00:00:00:00:01", None, 1 << 24)
    with pytest.raises(LocalBgpError):
        MacIpRoute(RD, "02:00:00:00:00:01", esi=b"short")


@pytest.mark.parametrize(
    ("community", "wire"),
    [
        (route_target(65000, 100), "0002 fde8 00000064"),
        (route_target(4_200_000_000, 100), "0202 fa56ea00 0064"),
        (RouteTarget(IPv4Address("192.0.2.1"), 5, ExtType.IPV4_ADDRESS), "0102 c0000201 0005"),
        (encap_vxlan(), "030c 00000000 0008"),
        (DefaultGateway(), "030d 000000000000"),
        (MacMobility(5), "0600 00 00 00000005"),
        (MacMobility(1, flags=1), "0600 01 00 00000001"),
        (RoutersMac("02:00:00:00:00:AA"), "0603 0200000000aa"),
        (RawExtCommunity(0x80, 0x06, bytes(6)), "8006 000000000000"),
    ],
)
def test_extended_communities(community: object, wire: str) -> None:
    assert community.encode() == h(wire)  # type: ignore[attr-defined]
    assert decode_ext_community(h(wire)) == community


def test_ext_community_helpers() -> None:
    assert MacMobility(1, flags=1).sticky and not MacMobility(1).sticky
    assert str(route_target(65000, 100)) == "65000:100"
    with pytest.raises(LocalBgpError):
        RouteTarget(4_200_000_000, 100_000, ExtType.FOUR_OCTET_AS)
    with pytest.raises(LocalBgpError):
        RouteTarget(65000, 1, 0x42)
    with pytest.raises(LocalBgpError):
        RouteTarget(IPv4Address("192.0.2.1"), 1, ExtType.TWO_OCTET_AS)


def test_known_community_not_in_our_form_stays_raw() -> None:
    wire = h("030c 00000001 0008")  # encapsulation with a reserved bit set
    assert decode_ext_community(wire) == RawExtCommunity(3, 0x0C, h("00000001 0008"))
    assert decode_ext_community(wire).encode() == wire
    assert isinstance(decode_ext_community(h("030c 00000000 0008")), Encapsulation)


def test_pmsi_golden() -> None:
    pmsi = PmsiTunnel.ingress_replication(100, "192.0.2.1")
    assert pmsi.encode() == h("00 06 000064 c0000201")
    assert PmsiTunnel.decode(pmsi.encode()) == pmsi
    other = PmsiTunnel(PmsiTunnelType.PIM_SSM, 0, h("c0000201 e8000001"), flags=1)
    assert PmsiTunnel.decode(other.encode()) == other and other.vtep is None
    with pytest.raises(RemoteBgpError):
        PmsiTunnel.decode(h("00 06 0000"))
