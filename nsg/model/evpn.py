"""EVPN control plane settings: which BGP peers (route reflectors) a gateway talks to, and what the
gateway accepts from them (nsg/evpn/: it defends itself whatever the reflector passes on)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from pydantic import Field

from nsg.model.base import Frozen


class BgpPeer(Frozen):
    address: IPv4Address
    asn: int = Field(ge=1, le=(1 << 32) - 1)


class EvpnPrefix(Frozen):
    """An IP prefix behind a host of one of our subnets (a LAN router): advertised as an EVPN type-5
    route with that host as the gateway IP (RFC 9136: the GW IP is the overlay index; every site
    routes the prefix via the host, whose MAC+IP route tells where it is)."""

    prefix: IPv4Network
    via: IPv4Address


class RemotePrefix(Frozen):
    """A type-5 prefix another site may advertise: the route is accepted only from that site (its
    next hop, the site's system IP) and only for exactly this prefix (not one inside or around it).
    The controller renders every other gateway's ``evpn.prefixes`` here (controller/mesh.py)."""

    system_ip: IPv4Address
    prefix: IPv4Network


class RemoteLimit(Frozen):
    """The most paths one other site (its system IP, the routes' next hop) may give us: the routes that
    site can announce honestly, its LAN port security and workloads counted (controller/route_budget.py).
    The controller renders one for every site whose LAN is bounded (controller/mesh.py); a site not
    listed gets ``max_routes_per_site``."""

    system_ip: IPv4Address
    max_routes: int = Field(ge=1, le=10_000_000)


class DuplicateMac(Frozen):
    """RFC 7432 section 15.1 duplicate-MAC detection: ``max_moves`` moves of one MAC between sites
    (our LAN counts as a site) within ``window_s`` seconds freeze it where it is for ``freeze_s``
    seconds (FRR's 5 moves in 180 s; see nsg/evpn/mobility.py for why the freeze ends by itself)."""

    max_moves: int = Field(default=5, ge=2, le=1000)
    window_s: int = Field(default=180, ge=1, le=86400)
    freeze_s: int = Field(default=180, ge=1, le=86400)


MAX_ROUTES_PER_PEER = 20_000
MAX_ROUTES_PER_SITE = 10_000


class EvpnConfig(Frozen):
    """With this section the flood lists and MAC entries come from BGP EVPN (RFC 7432/8365)
    instead of being derived from the static peer list.

    ``remote_prefixes``: the type-5 routes accepted from other sites (nothing else is).
    ``max_routes_per_peer``: paths one BGP peer (a reflector) may give us; ``max_routes_per_site``:
    paths with one next hop (one site) through one peer, unless ``remote_limits`` names that site's own
    limit. New paths past either are refused and counted; an alert at 80 %."""

    asn: int = Field(ge=1, le=(1 << 32) - 1)
    peers: tuple[BgpPeer, ...] = Field(min_length=1, max_length=8)
    hold_time: int = Field(default=9, ge=3, le=65535)
    prefixes: tuple[EvpnPrefix, ...] = Field(default=(), max_length=256)
    remote_prefixes: tuple[RemotePrefix, ...] = Field(default=(), max_length=16384)
    max_routes_per_peer: int = Field(default=MAX_ROUTES_PER_PEER, ge=1, le=10_000_000)
    max_routes_per_site: int = Field(default=MAX_ROUTES_PER_SITE, ge=1, le=10_000_000)
    remote_limits: tuple[RemoteLimit, ...] = Field(default=(), max_length=16384)
    duplicate_mac: DuplicateMac = DuplicateMac()
