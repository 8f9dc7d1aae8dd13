"""EVPN RIB: remote MAC/IP and inclusive-multicast routes -> the kernel objects that forward by them.

Pure. Input: routes as received (one entry per advertiser); output: the FDB entries (MAC -> remote
VTEP on the VNI's VXLAN device), the flood list (head-end replication, the all-zero MAC toward every
VTEP with an inclusive multicast route, RFC 7432 section 11 / RFC 8365 section 9), and neighbour
entries (IP -> MAC on the bridge, for ARP suppression, RFC 7432 section 10).

Among several advertisements of one MAC in one VNI the best wins (RFC 7432 section 15): the
highest MAC Mobility sequence number; on a tie, the advertiser with the lowest VTEP address.
Routes whose next hop is one of our own VTEP addresses are ours reflected back and are ignored.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field

from nsg.dataplane.desired import bridge_name, vxlan_name
from nsg.dataplane.types import ZERO_MAC, Fdb


@dataclass(frozen=True, order=True)
class MacRoute:
    """An EVPN type-2 route as received: MAC (and maybe IP) in a VNI, behind a VTEP."""

    vni: int
    mac: str  # lowercase aa:bb:cc:dd:ee:ff
    vtep: str  # next hop: the advertiser's VXLAN source address
    ip: str | None = None
    seq: int = 0  # MAC Mobility sequence number (0 without the extended community)
    sticky: bool = False


@dataclass(frozen=True, order=True)
class ImetRoute:
    """An EVPN type-3 route: this VTEP wants BUM traffic of this VNI (ingress replication)."""

    vni: int
    vtep: str


@dataclass(frozen=True, order=True)
class PrefixRoute:
    """An EVPN type-5 route as received: an IPv4 prefix reachable via a gateway IP in a subnet
    (RFC 9136, the GW IP as overlay index), from the VTEP that advertised it."""

    prefix: str  # "203.0.113.0/24"
    gateway: str
    vtep: str


@dataclass(frozen=True, order=True)
class Neighbor:
    ifname: str
    ip: str
    mac: str


@functools.lru_cache(maxsize=4096)
def _vtep_key(vtep: str) -> int:
    return int(ipaddress.ip_address(vtep))


@dataclass
class EvpnRib:
    local_vteps: frozenset[str] = frozenset()
    macs: dict[tuple[int, str], dict[tuple[str, str | None], MacRoute]] = field(default_factory=dict)
    imets: set[ImetRoute] = field(default_factory=set)
    prefixes: dict[str, dict[str, PrefixRoute]] = field(default_factory=dict)  # prefix -> vtep -> route

    # --- updates ----------------------------------------------------------------------------

    def add(self, route: MacRoute | ImetRoute | PrefixRoute) -> bool:
        """Returns False for a route of our own that came back (e.g. through a reflector)."""
        if route.vtep in self.local_vteps:
            return False
        if isinstance(route, ImetRoute):
            self.imets.add(route)
            return True
        if isinstance(route, PrefixRoute):
            self.prefixes.setdefault(route.prefix, {})[route.vtep] = route
            return True
        paths = self.macs.setdefault((route.vni, route.mac), {})
        paths[(route.vtep, route.ip)] = route  # a newer advertisement replaces the older one
        return True

    def withdraw(self, route: MacRoute | ImetRoute | PrefixRoute) -> None:
        if isinstance(route, ImetRoute):
            self.imets.discard(route)
            return
        if isinstance(route, PrefixRoute):
            paths = self.prefixes.get(route.prefix, {})
            paths.pop(route.vtep, None)
            if not paths:
                self.prefixes.pop(route.prefix, None)
            return
        paths = self.macs.get((route.vni, route.mac))
        if paths is None:
            return
        paths.pop((route.vtep, route.ip), None)
        if not paths:
            del self.macs[(route.vni, route.mac)]

    def withdraw_vtep(self, vtep: str) -> None:
        """A peer is gone (session down, no graceful restart): everything behind it goes too."""
        self.imets = {r for r in self.imets if r.vtep != vtep}
        for key in list(self.prefixes):
            self.prefixes[key].pop(vtep, None)
            if not self.prefixes[key]:
                del self.prefixes[key]
        for key in list(self.macs):
            self.macs[key] = {k: r for k, r in self.macs[key].items() if r.vtep != vtep}
            if not self.macs[key]:
                del self.macs[key]

    # --- selection -----------------------------------------------------------------------------

    def best(self, vni: int, mac: str) -> MacRoute | None:
        paths = self.macs.get((vni, mac))
        if not paths:
            return None
        if len(paths) == 1:  # the usual case: one advertiser
            return next(iter(paths.values()))
        winner = max(paths.values(), key=lambda r: (r.seq, -_vtep_key(r.vtep)))
        return winner

    def next_local_seq(self, vni: int, mac: str) -> int:
        """Sequence number for a MAC that just appeared locally: one above any remote claim
        (RFC 7432 15.1), so every PE moves it to us."""
        paths = self.macs.get((vni, mac), {})
        return max((r.seq for r in paths.values()), default=-1) + 1

    # --- kernel view ---------------------------------------------------------------------------

    def fdb(self, vnis: set[int] | None = None) -> frozenset[Fdb]:
        out = set()
        for (vni, mac), _paths in self.macs.items():
            if vnis is not None and vni not in vnis:
                continue
            best = self.best(vni, mac)
            if best is not None:
                out.add(Fdb(vxlan_name(vni), mac, best.vtep))  # where the VXLAN device sends it
                out.add(Fdb(vxlan_name(vni), mac, "", master=True))  # the bridge: toward the VXLAN port

        for r in self.imets:
            if vnis is None or r.vni in vnis:
                out.add(Fdb(vxlan_name(r.vni), ZERO_MAC, r.vtep))
        return frozenset(out)

    def best_prefixes(self) -> dict[str, PrefixRoute]:
        """One path per prefix: the lowest advertising VTEP (a stable choice every site makes alike)."""
        return {p: min(paths.values(), key=lambda r: _vtep_key(r.vtep)) for p, paths in self.prefixes.items()}

    def neighbors(self, vnis: set[int] | None = None) -> frozenset[Neighbor]:
        out = set()
        for (vni, mac), paths in self.macs.items():
            if vnis is not None and vni not in vnis:
                continue
            best = self.best(vni, mac)
            for r in paths.values():
                # one MAC may carry several IPs; each IP follows the MAC's best VTEP
                if r.ip is not None and best is not None and r.vtep == best.vtep:
                    out.add(Neighbor(bridge_name(vni), r.ip, mac))
        return frozenset(out)
