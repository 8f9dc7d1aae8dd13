"""Routes received from a BGP peer, in RIB terms. Pure.

A peer's UPDATE (after RFC 7606 error handling) becomes RIB paths (rib.py), each keyed by its NLRI
identity, and goes into that peer's Adj-RIB-In (RFC 4271 section 3.2, ``PeerRib``). A withdrawal
names the route only, not its next hop or attributes: the Adj-RIB-In is what finds the path it
removes. Graceful restart (RFC 4724 section 4.2, receiving side) marks a peer's routes stale; what
the peer does not send again before its End-of-RIB (or its restart time) goes.
"""

from __future__ import annotations

import functools
import sys
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


WARN_AT = 0.8  # of a limit: the alert that the limit is near
REARM_AT = 0.7  # of a limit: below it, the next approach is alerted again


@dataclass
class PeerRib:
    """What one peer told us (its Adj-RIB-In): NLRI identity -> the route as the RIB holds it
    (the RIB keys its paths by peer too). ``stale``: identities kept across a graceful restart,
    not sent again yet. ``restarting``: the peer's restart timer runs (RFC 4724 4.2).
    ``refused``: routes held here but kept out of the RIB, with why (a type-5 route no config
    allows). ``per_site``: how many of its routes have each next hop; ``alerted``: the limits
    (None: the peer's; a next hop: that site's) already alerted at 80 % / at the limit."""

    routes: dict[NlriKey, RibRoute] = field(default_factory=dict)
    stale: set[NlriKey] = field(default_factory=set)
    restarting: bool = False
    refused: dict[NlriKey, str] = field(default_factory=dict)
    per_site: dict[str, int] = field(default_factory=dict)
    alerted: dict[str | None, bool] = field(default_factory=dict)  # limit -> at the limit (else at 80 %)

    def put(self, key: NlriKey, r: RibRoute) -> None:
        self.routes[key] = r
        self.per_site[r.vtep] = self.per_site.get(r.vtep, 0) + 1

    def pop(self, key: NlriKey) -> RibRoute | None:
        r = self.routes.pop(key, None)
        if r is not None:
            self.refused.pop(key, None)
            n = self.per_site.get(r.vtep, 0) - 1
            if n > 0:
                self.per_site[r.vtep] = n
            else:
                self.per_site.pop(r.vtep, None)
        return r

    def room(self, r: RibRoute, per_peer: int, per_site: int) -> tuple[bool, list[tuple[str | None, int, int, bool]]]:
        """Whether a new route fits under the peer's and its next hop's limits, and the limits to
        alert now: (site or None, routes, limit, refusing), each once per approach."""
        counts = ((None, len(self.routes), per_peer), (r.vtep, self.per_site.get(r.vtep, 0), per_site))
        fits = all(n < limit for _s, n, limit in counts)
        alerts = []
        for site, n, limit in counts:
            was = self.alerted.get(site)
            if n >= limit:
                if was is not True:
                    self.alerted[site] = True
                    alerts.append((site, n, limit, True))
            elif fits and n + 1 >= WARN_AT * limit and was is None:
                self.alerted[site] = False
                alerts.append((site, n + 1, limit, False))
            elif was is not None and n < REARM_AT * limit:
                del self.alerted[site]
        return fits, alerts


@functools.lru_cache(maxsize=4096)
def text(value) -> str:
    """An RD or address as text, made once and shared: a flood of routes from one site carries the
    same RD and next hop in every path (interned: one string for all of them)."""
    return sys.intern(str(value))


def nlri_key(route) -> NlriKey | None:
    """What makes two EVPN routes the same route (RFC 7432 section 7.2 for type 2, 7.3 for type 3,
    RFC 9136 section 3 for type 5): RD and Ethernet tag, then MAC and IP / originator / prefix. Not
    the labels, next hop or attributes: a route announced again with new ones replaces the old."""
    if isinstance(route, MacIpRoute):
        return ("mac", text(route.rd), route.eth_tag, route.mac, str(route.ip) if route.ip else None)
    if isinstance(route, InclusiveMulticastRoute):
        return ("imet", text(route.rd), route.eth_tag, str(route.originator))
    if isinstance(route, IpPrefixRoute):
        return ("prefix", text(route.rd), route.eth_tag, str(route.prefix), route.prefix_len)
    return None


def is_end_of_rib(result: UpdateResult) -> bool:
    """RFC 4724 section 2: for a family other than IPv4 unicast, an UPDATE whose only attribute is an
    empty MP_UNREACH_NLRI."""
    upd = result.update
    return upd is not None and upd.mp_reach is None and upd.mp_unreach is not None and not upd.mp_unreach.nlri


def _convert(route, peer: str, vtep: str | None, seq: int, sticky: bool, key: NlriKey) -> RibRoute | None:
    rd = key[1]  # the RD's text, shared with the key
    if isinstance(route, MacIpRoute):
        return MacRoute(route.vni, key[3], vtep or NO_VTEP, key[4], seq, sticky, rd=rd, peer=peer,
                        eth_tag=route.eth_tag)
    if isinstance(route, InclusiveMulticastRoute):
        return ImetRoute(0, str(route.originator), rd=rd, peer=peer)  # the VNI comes from the PMSI label
    if isinstance(route, IpPrefixRoute) and route.prefix.version == 4:
        net = IPv4Network(f"{route.prefix}/{route.prefix_len}", strict=False)
        return PrefixRoute(str(net), str(route.gateway), vtep or NO_VTEP, rd=rd, peer=peer)
    return None


def _keyed(routes, peer: str, vtep: str | None = None, seq: int = 0, sticky: bool = False) -> Keyed:
    out = []
    peer = sys.intern(peer)
    for route in routes:
        key = nlri_key(route)
        r = _convert(route, peer, vtep, seq, sticky, key) if key is not None else None
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
    vtep = text(reach.next_hop) if reach is not None else None
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


@functools.lru_cache(maxsize=4096)
def _unicast(address: str) -> bool:
    vtep = IPv4Address(address) if address.count(".") == 3 else None
    return not (vtep is None or vtep.is_unspecified or vtep.is_multicast or vtep.is_loopback or vtep.is_reserved
                or vtep == LIMITED_BROADCAST)


def unusable(r: RibRoute) -> str | None:
    """Why a received route cannot go into the kernel, or None. Next hops must be unicast IPv4;
    a type-2 MAC must be unicast and not all-zero (the all-zero MAC is the flood list's)."""
    if not _unicast(r.vtep):
        return f"next hop {r.vtep} is not a unicast IPv4 address"
    if isinstance(r, MacRoute) and (r.mac == ZERO_MAC or int(r.mac[:2], 16) & MAC_GROUP_BIT):
        return f"MAC {r.mac} is not a unicast host MAC"
    return None
