"""EVPN RIB: remote MAC/IP and inclusive-multicast routes -> the kernel objects that forward by them.

Pure. Input: every path as received (an Adj-RIB-In: one entry per advertising peer and route
identity); output: the FDB entries (MAC -> remote VTEP on the VNI's VXLAN device), the flood list
(head-end replication, the all-zero MAC toward every VTEP with an inclusive multicast route,
RFC 7432 section 11 / RFC 8365 section 9), and neighbour entries (IP -> MAC on the bridge, for ARP
suppression, RFC 7432 section 10).

A path's identity is its peer plus the route's BGP key: for a type-2 route the RD, Ethernet tag,
MAC and IP (RFC 7432 section 7.2: the labels, ESI and attributes are not part of it). So one MAC can
be known through several paths at once: advertised by two VTEPs during a move (two RDs), by the
same VTEP under two RDs, or reflected by two route reflectors. All of them are kept; the best one
(``path_rank``) is installed, and when it is withdrawn the next one takes its place.
Routes whose next hop is one of our own VTEP addresses are ours reflected back and are ignored.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field

from nsg.dataplane.desired import bridge_name, vxlan_name
from nsg.dataplane.types import ZERO_MAC, Fdb

PathKey = tuple  # ("mac"|"imet"|"prefix", peer, route identity ...): see each route's ``path_key``


@dataclass(frozen=True, order=True, slots=True)
class MacRoute:
    """An EVPN type-2 route as received: MAC (and maybe IP) in a VNI, behind a VTEP."""

    vni: int
    mac: str  # lowercase aa:bb:cc:dd:ee:ff
    vtep: str  # next hop: the advertiser's VXLAN source address
    ip: str | None = None
    seq: int = 0  # MAC Mobility sequence number (0 without the extended community)
    sticky: bool = False  # MAC Mobility "static" flag (RFC 7432 section 7.7)
    rd: str = ""  # route distinguisher as text; "" when unknown (then the next hop stands in for it)
    peer: str = ""  # the BGP peer it came from
    eth_tag: int = 0

    @property
    def path_key(self) -> PathKey:
        # RFC 7432 7.2: RD, Ethernet tag, MAC, IP make the route; the label (our VNI) does not: the
        # same route announced again with another label replaces the old one
        return ("mac", self.peer, self.rd or f"nh:{self.vtep}", self.eth_tag, self.mac, self.ip)


@dataclass(frozen=True, order=True, slots=True)
class ImetRoute:
    """An EVPN type-3 route: this VTEP wants BUM traffic of this VNI (ingress replication)."""

    vni: int
    vtep: str
    rd: str = ""
    peer: str = ""

    @property
    def path_key(self) -> PathKey:
        return ("imet", self.peer, self.rd, self.vni, self.vtep)


@dataclass(frozen=True, order=True, slots=True)
class PrefixRoute:
    """An EVPN type-5 route as received: an IPv4 prefix reachable via a gateway IP in a subnet
    (RFC 9136, the GW IP as overlay index), from the VTEP that advertised it."""

    prefix: str  # "203.0.113.0/24"
    gateway: str
    vtep: str
    rd: str = ""
    peer: str = ""

    @property
    def path_key(self) -> PathKey:
        return ("prefix", self.peer, self.rd, self.prefix, self.vtep)


@dataclass(frozen=True, order=True, slots=True)
class Neighbor:
    ifname: str
    ip: str
    mac: str


@functools.lru_cache(maxsize=4096)
def _vtep_key(vtep: str) -> int:
    return int(ipaddress.ip_address(vtep))


def path_rank(r: MacRoute) -> tuple:
    """Sort key of a MAC's paths, best first (RFC 7432 section 15):

    1. static (sticky) first: section 15.2, a MAC advertised as static "cannot move", so no
       sequence number, however high, takes it anywhere else;
    2. the highest MAC Mobility sequence number: section 15.1, the newest location of the host;
    3. the lowest VTEP (next hop) address: section 15.1 for equal sequence numbers ("selects the
       route advertised by the PE with the lowest IP address"). We take the next hop as the PE's
       address rather than the ORIGINATOR_ID or the RD: the next hop is what the FDB entry points
       at, it is present on every path (ORIGINATOR_ID only on reflected ones), and it is the
       address the PE itself compares against in 15.1, so every PE ends up with the same winner;
    4. then, only so the choice never depends on arrival order (the VTEP is the same, so the FDB
       is too): the RD, the peer, and MAC-only before MAC+IP.
    """
    return (not r.sticky, -r.seq, _vtep_key(r.vtep), r.rd, r.peer, r.ip or "")


@dataclass
class EvpnRib:
    """Every usable received path. Per MAC its paths as a tuple, best first (``path_rank``); per
    (VNI, IP) the MAC+IP paths carrying that IP. A tuple, not a dict per MAC: a MAC has one path or
    a few, and a flood of tens of thousands of MACs must stay small in memory. Which path a route
    identity names (a withdrawal, a label change) is the Adj-RIB-In's to know (received.py)."""

    local_vteps: frozenset[str] = frozenset()
    macs: dict[tuple[int, str], tuple[MacRoute, ...]] = field(default_factory=dict)  # (vni, mac) -> paths
    ips: dict[tuple[int, str], tuple[MacRoute, ...]] = field(default_factory=dict)  # (vni, ip) -> MAC+IP paths
    imets: dict[PathKey, ImetRoute] = field(default_factory=dict)
    prefixes: dict[str, dict[PathKey, PrefixRoute]] = field(default_factory=dict)  # prefix -> paths

    # --- updates ----------------------------------------------------------------------------

    def add(self, route: MacRoute | ImetRoute | PrefixRoute) -> bool:
        """Returns False for a route of our own that came back (e.g. through a reflector). A route
        whose path key is known replaces that path (a BGP implicit withdraw)."""
        if route.vtep in self.local_vteps:
            return False
        if isinstance(route, ImetRoute):
            self.imets[route.path_key] = route
            return True
        if isinstance(route, PrefixRoute):
            self.prefixes.setdefault(route.prefix, {})[route.path_key] = route
            return True
        key = route.path_key
        m = (route.vni, route.mac)
        paths = self.macs.get(m, ())
        old = next((p for p in paths if p.path_key == key), None)
        if old is not None and old.ip is not None:
            self._drop_ip(old)
        rest = tuple(p for p in paths if p is not old)
        self.macs[m] = tuple(sorted((*rest, route), key=path_rank)) if rest else (route,)
        if route.ip is not None:
            ipk = (route.vni, route.ip)
            self.ips[ipk] = (*self.ips.get(ipk, ()), route)
        return True

    def withdraw(self, route: MacRoute | ImetRoute | PrefixRoute) -> None:
        """Remove the path with the route's path key; only the key matters (a BGP withdrawal names
        the route, not its next hop or attributes). Unknown paths are ignored."""
        if isinstance(route, ImetRoute):
            self.imets.pop(route.path_key, None)
            return
        if isinstance(route, PrefixRoute):
            paths = self.prefixes.get(route.prefix, {})
            paths.pop(route.path_key, None)
            if not paths:
                self.prefixes.pop(route.prefix, None)
            return
        key = route.path_key
        m = (route.vni, route.mac)
        old = next((p for p in self.macs.get(m, ()) if p.path_key == key), None)
        if old is not None:
            self._drop_mac_path(old)

    def _drop_mac_path(self, route: MacRoute) -> None:
        m = (route.vni, route.mac)
        rest = tuple(p for p in self.macs.get(m, ()) if p is not route)
        if rest:
            self.macs[m] = rest
        else:
            self.macs.pop(m, None)
        if route.ip is not None:
            self._drop_ip(route)

    def _drop_ip(self, route: MacRoute) -> None:
        ipk = (route.vni, route.ip)
        rest = tuple(p for p in self.ips.get(ipk, ()) if p is not route)
        if rest:
            self.ips[ipk] = rest
        else:
            self.ips.pop(ipk, None)

    def withdraw_vtep(self, vtep: str) -> None:
        """A VTEP is gone: every path naming it as next hop goes too."""
        self.imets = {k: r for k, r in self.imets.items() if r.vtep != vtep}
        for key in list(self.prefixes):
            self.prefixes[key] = {k: r for k, r in self.prefixes[key].items() if r.vtep != vtep}
            if not self.prefixes[key]:
                del self.prefixes[key]
        for r in [r for paths in self.macs.values() for r in paths if r.vtep == vtep]:
            self._drop_mac_path(r)

    def paths(self, vni: int, mac: str) -> tuple[MacRoute, ...]:
        """The MAC's paths, best first."""
        return self.macs.get((vni, mac), ())

    # --- selection -----------------------------------------------------------------------------

    def best(self, vni: int, mac: str) -> MacRoute | None:
        """The path the MAC is installed by (path_rank), among its MAC and MAC+IP paths."""
        paths = self.macs.get((vni, mac))
        return paths[0] if paths else None

    def in_use(self, route: MacRoute, ip_winners: dict[tuple[int, str], MacRoute] | None = None) -> bool:
        """Whether a received path is what the kernel follows: for a MAC-only path, that its VTEP
        is where the MAC is installed; for a MAC+IP path, that it is its IP's winning path.
        ``ip_winners``: ``self.ip_winners()`` computed once by a caller asking for many paths."""
        best = self.best(route.vni, route.mac)
        if best is None or all(p.path_key != route.path_key for p in self.paths(route.vni, route.mac)):
            return False
        if route.ip is None:
            return route.vtep == best.vtep
        winners = ip_winners if ip_winners is not None else self.ip_winners({route.vni})
        winner = winners.get((route.vni, route.ip))
        return winner is not None and winner.path_key == route.path_key

    def next_local_seq(self, vni: int, mac: str) -> int:
        """Sequence number for a MAC that just appeared locally: one above every remote claim
        still held, whichever peer or RD it came with (RFC 7432 15.1), so every PE moves it to us."""
        return max((r.seq for r in self.paths(vni, mac)), default=-1) + 1

    # --- kernel view ---------------------------------------------------------------------------

    def fdb(self, vnis: set[int] | None = None) -> frozenset[Fdb]:
        out = set()
        for vni, mac in self.macs:
            if vnis is not None and vni not in vnis:
                continue
            best = self.best(vni, mac)
            if best is not None:
                out.add(Fdb(vxlan_name(vni), mac, best.vtep))  # where the VXLAN device sends it
                out.add(Fdb(vxlan_name(vni), mac, "", master=True))  # the bridge: toward the VXLAN port

        for r in self.imets.values():
            if vnis is None or r.vni in vnis:
                out.add(Fdb(vxlan_name(r.vni), ZERO_MAC, r.vtep))
        return frozenset(out)

    def best_prefixes(self) -> dict[str, PrefixRoute]:
        """One path per prefix: the lowest advertising VTEP (a stable choice every site makes alike)."""
        return {p: min(paths.values(), key=lambda r: (_vtep_key(r.vtep), r.rd, r.peer))
                for p, paths in self.prefixes.items()}

    def ip_winners(self, vnis: set[int] | None = None) -> dict[tuple[int, str], MacRoute]:
        """(vni, ip) -> the MAC+IP path that decides the IP's MAC: the best by path_rank among every
        path carrying that IP, whatever its MAC (an IP that moved to another MAC, e.g. a VM
        re-created elsewhere, gets one neighbour entry, not two fighting ones)."""
        return {k: min(paths, key=path_rank) for k, paths in self.ips.items() if vnis is None or k[0] in vnis}

    def neighbors(self, vnis: set[int] | None = None) -> frozenset[Neighbor]:
        return frozenset(Neighbor(bridge_name(vni), ip, r.mac) for (vni, ip), r in self.ip_winners(vnis).items())
