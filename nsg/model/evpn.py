"""EVPN control plane settings: which BGP peers (route reflectors) a gateway talks to."""

from __future__ import annotations

from ipaddress import IPv4Address

from pydantic import Field

from nsg.model.base import Frozen


class BgpPeer(Frozen):
    address: IPv4Address
    asn: int = Field(ge=1, le=(1 << 32) - 1)


class EvpnConfig(Frozen):
    """With this section the flood lists and MAC entries come from BGP EVPN (RFC 7432/8365)
    instead of being derived from the static peer list."""

    asn: int = Field(ge=1, le=(1 << 32) - 1)
    peers: tuple[BgpPeer, ...] = Field(min_length=1, max_length=8)
    hold_time: int = Field(default=9, ge=3, le=65535)
