"""EVPN control plane settings: which BGP peers (route reflectors) a gateway talks to."""

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


class EvpnConfig(Frozen):
    """With this section the flood lists and MAC entries come from BGP EVPN (RFC 7432/8365)
    instead of being derived from the static peer list."""

    asn: int = Field(ge=1, le=(1 << 32) - 1)
    peers: tuple[BgpPeer, ...] = Field(min_length=1, max_length=8)
    hold_time: int = Field(default=9, ge=3, le=65535)
    prefixes: tuple[EvpnPrefix, ...] = Field(default=(), max_length=256)
