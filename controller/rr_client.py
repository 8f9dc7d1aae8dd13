"""One route reflector client as the reflector's parts (route_reflector.py's sessions, rr_rib.py's
Adj-RIBs-In, rr_fanout.py's sending, rr_limits.py's limits) share it: its session, what it announced
and what the check reads of it. Plain data, no behaviour: each part owns what it does with it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from bgp.evpn_nlri import EvpnRoute
from bgp.speaker import Speaker
from controller.rr_check import ClientState


@dataclass(frozen=True, slots=True)
class Held:
    """One accepted route as we reflect it: the encoded UPDATE (one NLRI, our ORIGINATOR_ID and
    CLUSTER_LIST), the route and its encoding (a withdrawal copies octets, encodes nothing), and its
    originator (never sent back to it)."""

    data: bytes
    nlri: EvpnRoute
    wire: bytes
    originator: IPv4Address


@dataclass
class Client:
    """One session from one address (a gateway's system IP, with a view)."""

    address: str
    speaker: Speaker
    state: ClientState
    router_id: str | None = None
    router_ip: IPv4Address | None = None
    counters: Counter = field(default_factory=Counter)
    over_since: float | None = None  # first over-limit refusal (cleared once below the limit again)
    excess: int = 0  # routes refused beyond the limit since then
    warned: bool = False
    closing: bool = False
    catch_up: asyncio.Task | None = None

    @property
    def routes(self) -> dict[bytes, Held]:
        """Its Adj-RIB-In, in the form we reflect it (ClientState types it as the check reads it)."""
        return self.state.routes  # type: ignore[return-value]
