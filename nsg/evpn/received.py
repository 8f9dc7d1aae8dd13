"""Routes received from a BGP peer, in RIB terms. Pure.

A peer's UPDATE (after RFC 7606 error handling) becomes RIB paths (rib.py), each keyed by its NLRI
identity, and goes into that peer's Adj-RIB-In (RFC 4271 section 3.2, ``PeerRib``). A withdrawal
names the route only, not its next hop or attributes: the Adj-RIB-In is what finds the path it
removes. Graceful restart (RFC 4724 section 4.2, receiving side) marks a peer's routes stale; what
the peer does not send again before its End-of-RIB (or its restart time) goes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from bgp.attributes import ExtCommunities, PmsiTunnelAttr
from bgp.codec import UpdateResult
from bgp.constants import AttrType
from bgp.evpn_nlri import InclusiveMulticastRoute, IpPrefixRoute, MacIpRoute, MacMobility
from nsg.dataplane.types import ZERO_MAC
from nsg.evpn.rib import ImetRoute, MacRoute, PrefixRoute

RibRoute = MacRoute | ImetRoute | PrefixRoute
NlriKey = tuple  # a received route's BGP identity (see nlri_key)
Keyed = list[tuple[NlriKey, RibRoute]]

MAC_GROUP_BIT = 0x01  # IEEE 802: the I/G bit, lowest bit of a MAC's first octet (set: multicast)
LIMITED_BROADCAST = IPv4Address("255.255.255.255")
NO_VTEP = "0.0.0.0"  # next hop of a withdrawn route (a withdrawal carries none)


@dataclass
class PeerRib:
    """What one peer told us (its Adj-RIB-In): NLRI identity -> the route as the RIB holds it
    (the RIB keys its paths by peer too). ``stale``: identities kept across a graceful restart,
    not sent again yet. ``restarting``: the peer's restart timer runs (RFC 4724 4.2)."""

    routes: dict[NlriKey, RibRoute] = field(default_factory=dict)
    stale: set[NlriKey] = field(default_factory=set)
    restarting: bool = False


def nlri_key(route) -> NlriKey | None:
    """What makes two EVPN routes the same route (RFC 7432 section 7.2 for type 2, 7.3 for type 3,
    RFC 9136 section 3 for type 5): RD and Ethernet tag, then MAC and IP / originator / prefix. Not
    the labels, next hop or attributes: a route announced again with new ones replaces the old."""
    if isinstance(route, MacIpRoute):
        return ("mac", str(route.rd), route.eth_tag, route.mac, str(route.ip) if route.ip else None)
    if isinstance(route, InclusiveMulticastRoute):
        return ("imet", str(route.rd), route.eth_tag, str(route.originator))
    if isinstance(route, IpPrefixRoute):
        return ("prefix", str(route.rd), route.eth_tag, str(route.prefix), route.prefix_len)
    return None


def is_end_of_rib(result: UpdateResult) -> bool:
    """RFC 4724 section 2: for a family other than IPv4 unicast, an UPDATE whose only attribute is an
    empty MP_UNREACH_NLRI."""
    upd = result.update
    return upd is not None and upd.mp_reach is None and upd.mp_unreach is not None and not upd.mp_unreach.nlri


def _convert(route, peer: str, vtep: str | None, seq: int, sticky: bool) -> RibRoute | None:
    rd = str(route.rd) if hasattr(route, "rd") else ""
    if isinstance(route, MacIpRoute):
        return MacRoute(route.vni, route.mac, vtep or NO_VTEP, str(route.ip) if route.ip else None, seq, sticky,
                        rd=rd, peer=peer, eth_tag=route.eth_tag)
    if isinstance(route, InclusiveMulticastRoute):
        return ImetRoute(0, str(route.originator), rd=rd, peer=peer)  # the VNI comes from the PMSI label
    if isinstance(route, IpPrefixRoute) and route.prefix.version == 4:
        net = IPv4Network(f"{route.prefix}/{route.prefix_len}", strict=False)
        return PrefixRoute(str(net), str(route.gateway), vtep or NO_VTEP, rd=rd, peer=peer)
    return None


def _keyed(routes, peer: str, vtep: str | None = None, seq: int = 0, sticky: bool = False) -> Keyed:
    out = []
    for route in routes:
        key, r = nlri_key(route), _convert(route, peer, vtep, seq, sticky)
        if key is not None and r is not None:
            out.append((key, r))
    return out


def rib_routes(result: UpdateResult, peer: str) -> tuple[Keyed, Keyed]:
    """(announced, withdrawn) in RIB terms, each route with its NLRI identity. Routes of other
    families and route types are left out. Treat-as-withdraw results withdraw all they carried."""
    upd = result.update
    if upd is None:  # RFC 7606 treat-as-withdraw: every route the message carried is withdrawn
        return [], _keyed(result.withdraw_nlri, peer)
    seq, sticky = 0, False
    ext = upd.get(AttrType.EXTENDED_COMMUNITIES)
    if isinstance(ext, ExtCommunities):
        mobility = [c for c in ext.communities if isinstance(c, MacMobility)]
        seq = max((c.sequence for c in mobility), default=0)
        sticky = any(c.sticky for c in mobility)  # RFC 7432 7.7: the "static" flag
    pmsi = upd.get(AttrType.PMSI_TUNNEL)
    reach, unreach = upd.mp_reach, upd.mp_unreach
    vtep = str(reach.next_hop) if reach is not None else None
    add: Keyed = []
    for key, r in _keyed(reach.nlri if reach is not None else (), peer, vtep, seq, sticky):
        if isinstance(r, ImetRoute):
            if not isinstance(pmsi, PmsiTunnelAttr):
                continue  # RFC 8365 9.1: without the PMSI attribute we cannot tell the VNI
            tunnel = (pmsi.tunnel.vtep and str(pmsi.tunnel.vtep)) or r.vtep
            add.append((key, ImetRoute(pmsi.tunnel.vni, tunnel, rd=r.rd, peer=peer)))
        else:
            add.append((key, r))
    return add, _keyed(unreach.nlri if unreach is not None else (), peer)


def unusable(r: RibRoute) -> str | None:
    """Why a received route cannot go into the kernel, or None. Next hops must be unicast IPv4;
    a type-2 MAC must be unicast and not all-zero (the all-zero MAC is the flood list's)."""
    vtep = IPv4Address(r.vtep) if r.vtep.count(".") == 3 else None
    if vtep is None or vtep.is_unspecified or vtep.is_multicast or vtep.is_loopback or vtep.is_reserved \
            or vtep == LIMITED_BROADCAST:
        return f"next hop {r.vtep} is not a unicast IPv4 address"
    if isinstance(r, MacRoute) and (r.mac == ZERO_MAC or int(r.mac[:2], 16) & MAC_GROUP_BIT):
        return f"MAC {r.mac} is not a unicast host MAC"
    return None
