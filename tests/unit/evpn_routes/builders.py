"""Inputs for the EVPN route core (nsg/evpn/routes.py) as a BGP peer would send them, and views of
its outputs. Addresses: our system IP SYSIP; remote VTEPs A < B < SYSIP < HIGH; route reflectors
RR1, RR2 (the core's BGP peers)."""

from __future__ import annotations

from ipaddress import ip_address

from bgp.attributes import ExtCommunities
from bgp.codec import Update, UpdateResult
from bgp.constants import MAC_MOBILITY_STICKY, AttrType, ErrorAction
from bgp.evpn_nlri import (
    IpPrefixRoute,
    MacIpRoute,
    MacMobility,
    RouteDistinguisher,
    encap_vxlan,
    inclusive_multicast_route,
    mac_ip_route,
    route_target,
)
from nsg.evpn.effects import Effects
from nsg.evpn.rib import EvpnRib
from nsg.evpn.routes import EvpnRoutes
from nsg.model import parse_config

SYSIP = "198.19.255.10"
A, B, HIGH = "198.19.255.2", "198.19.255.3", "198.19.255.20"
RR1, RR2 = "198.18.0.1", "198.18.0.5"
M1, M2 = "02:00:00:00:00:01", "02:00:00:00:00:02"
VNI = 100


def config(vnis=(VNI,), *, apps=(), **evpn):
    """Our config: a subnet 198.19.<i>.0/24 per VNI; ``apps``: (name, address) of apps on the first;
    ``evpn``: more of the evpn section (remote_prefixes, limits, duplicate_mac)."""
    return parse_config({
        "schema_version": 1, "system_ip": SYSIP,
        "uplinks": [{"name": "w", "interface": "eth0", "mode": "static", "address": "198.18.0.2/24",
                     "gateway": "198.18.0.1"}],
        "subnets": [{"name": f"s{v}", "vni": v, "cidr": f"198.19.{i}.0/24", "gateway": f"198.19.{i}.1",
                     "ports": [f"lan{i}"]} for i, v in enumerate(vnis)],
        "apps": [{"name": n, "image": "acme/web:1", "subnet": f"s{vnis[0]}", "address": a} for n, a in apps],
        "evpn": {"asn": 65000, "peers": [{"address": a, "asn": 65000} for a in (RR1, RR2)], **evpn}})


def core(vnis=(VNI,), **kw) -> EvpnRoutes:
    c = EvpnRoutes(EvpnRib())
    c.configure(config(vnis, **kw))
    return c


def rd(vtep: str) -> RouteDistinguisher:
    return RouteDistinguisher.ipv4(vtep, VNI)


def mac(vtep: str, seq: int = 0, *, m: str = M1, ip: str | None = None, sticky: bool = False,
        rd_of: str | None = None) -> UpdateResult:
    """A type-2 route of ``vtep`` (its RD unless ``rd_of`` names another VTEP's)."""
    comms = [route_target(65000, VNI), encap_vxlan()]
    if seq or sticky:
        comms.append(MacMobility(seq, MAC_MOBILITY_STICKY if sticky else 0))
    route = mac_ip_route(rd(rd_of or vtep), m, ip, VNI)
    return UpdateResult(ErrorAction.NONE, update=Update.for_evpn((route,), vtep, comms))


def unmac(vtep: str, *, m: str = M1, ip: str | None = None) -> UpdateResult:
    """The withdrawal of ``mac(vtep, ...)``: the NLRI only."""
    return UpdateResult(ErrorAction.NONE, update=Update.withdraw_evpn((mac_ip_route(rd(vtep), m, ip, VNI),)))


def broken(vtep: str, *, m: str = M1) -> UpdateResult:
    """RFC 7606 treat-as-withdraw of an UPDATE that carried ``mac(vtep)``."""
    return UpdateResult(ErrorAction.TREAT_AS_WITHDRAW, withdraw_nlri=(mac_ip_route(rd(vtep), m, None, VNI),))


def imet(vtep: str, *, pmsi: bool = True) -> UpdateResult:
    route, tunnel = inclusive_multicast_route(rd(vtep), VNI, vtep)
    upd = Update.for_evpn((route,), vtep, (route_target(65000, VNI), encap_vxlan()), pmsi=tunnel if pmsi else None)
    return UpdateResult(ErrorAction.NONE, update=upd)


def prefix(vtep: str, net: str, gw: str = "198.19.0.77") -> UpdateResult:
    """A type-5 route of ``vtep`` (RFC 9136): ``net`` via the gateway IP ``gw``."""
    addr, length = net.split("/")
    route = IpPrefixRoute(rd(vtep), ip_address(addr), int(length), ip_address(gw), VNI)
    return UpdateResult(ErrorAction.NONE, update=Update.for_evpn((route,), vtep, (route_target(65000, VNI),
                                                                                encap_vxlan())))


def unprefix(vtep: str, net: str, gw: str = "198.19.0.77") -> UpdateResult:
    addr, length = net.split("/")
    route = IpPrefixRoute(rd(vtep), ip_address(addr), int(length), ip_address(gw), VNI)
    return UpdateResult(ErrorAction.NONE, update=Update.withdraw_evpn((route,)))


def macs(vtep: str, count: int, start: int = 0) -> UpdateResult:
    """One UPDATE of ``count`` MAC-only routes of ``vtep`` (02:66:..: a flood's)."""
    routes = tuple(mac_ip_route(rd(vtep), f"02:66:00:00:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}", None, VNI)
                   for i in range(start, start + count))
    return UpdateResult(ErrorAction.NONE, update=Update.for_evpn(routes, vtep, (route_target(65000, VNI),
                                                                              encap_vxlan())))


def eor() -> UpdateResult:
    return UpdateResult(ErrorAction.NONE, update=Update.withdraw_evpn(()))


def installed(c: EvpnRoutes) -> set[tuple[str, str]]:
    """(MAC, VTEP) of the kernel's remote FDB entries; the flood list as ("flood", VTEP)."""
    return {("flood" if f.mac == "00:00:00:00:00:00" else f.mac, f.dst) for f in c.fdb() if not f.master}


def sent(effects: Effects) -> list[tuple[str, str, int]]:
    """Our type-2 routes in the UPDATEs to send: ("+" or "-", MAC, MAC Mobility sequence)."""
    out = []
    for upd in effects.send:
        if upd.mp_reach is not None:
            ext = upd.get(AttrType.EXTENDED_COMMUNITIES)
            comms = ext.communities if isinstance(ext, ExtCommunities) else ()
            seq = max((c.sequence for c in comms if isinstance(c, MacMobility)), default=0)
            out += [("+", r.mac, seq) for r in upd.mp_reach.nlri if isinstance(r, MacIpRoute)]
        if upd.mp_unreach is not None:
            out += [("-", r.mac, 0) for r in upd.mp_unreach.nlri if isinstance(r, MacIpRoute)]
    return out
