"""The gateway's own input guard: what may reach the box itself from its uplinks and from the overlay.
Pure: config in, nftables document out. Independent of the tenant's firewall (table inet nsg) and
present from the first apply, also when the tenant has no policy.

    table inet nsg_guard
      input (hook input, priority filter - 10, policy accept)
        udp dport 4789 -> jump overlay        VXLAN (RFC 7348 section 5)
        tcp dport 179  -> jump overlay        BGP (RFC 4271 section 8.2.1)
        iifname <uplinks> -> jump uplink
      overlay: from a peer's system IP, decrypted (through the ESP TUN, or with an XFRM secpath) -> accept
               else count "guard.overlay" and drop
      uplink:  established/related (the channel's, DNS's return traffic; ICMP errors for our flows),
               DHCP client (RFC 2131: server port 67 -> client port 68), IKE (UDP 500) and
               ESP-in-UDP/IKE (UDP 4500, RFC 3948), services the config opens on the uplinks
               -> accept; else count "guard.uplink" and drop

With transport "plain" (a lab setting) the overlay crosses the WAN in the clear: VXLAN and BGP are then
accepted from peers' system IPs on any interface, nothing authenticates them, and `nsg status` says so.
Traffic from LAN bridges and from the box itself (lo) never meets the uplink chain; it meets the overlay
chain only for VXLAN and BGP, which a LAN host has no business sending to the gateway either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from nsg.dataplane.desired import ESP_TUN, VXLAN_PORT
from nsg.model import GatewayConfig

FAMILY, TABLE = "inet", "nsg_guard"
BGP_PORT = 179  # RFC 4271 section 8.2.1
IKE_PORT, NATT_PORT = 500, 4500  # RFC 7296 section 2; RFC 3948 section 2
DHCP_SERVER_PORT, DHCP_CLIENT_PORT = 67, 68  # RFC 2131 section 4.1
PRIORITY = -10  # ahead of anything at filter priority
COUNTERS = ("guard.overlay", "guard.uplink")


@dataclass(frozen=True)
class Guard:
    """What the guard lets in, derived from a config."""

    uplinks: tuple[str, ...]  # interface names
    peers: tuple[str, ...]  # system IPs (and EVPN neighbours) the overlay may come from
    encrypted: bool  # transport esp: the overlay only from the tunnel
    services: tuple[tuple[str, int], ...]  # (tcp|udp, port) opened on the uplinks by the config

    @property
    def protected(self) -> bool:
        return self.encrypted


def guard_for(cfg: GatewayConfig) -> Guard:
    peers = {str(p.system_ip) for p in cfg.peers}
    if cfg.evpn is not None:
        peers |= {str(n.address) for n in cfg.evpn.peers}
    return Guard(uplinks=tuple(sorted(u.interface for u in cfg.uplinks)), peers=tuple(sorted(peers)),
                 encrypted=cfg.transport == "esp",
                 services=tuple(sorted({(s.protocol, s.port) for s in cfg.uplink_services})))


def _match(left: dict, right: object, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


def _port(proto: str, field: str, port: int | dict) -> dict:
    return _match({"payload": {"protocol": proto, "field": field}}, port)


def _set(values: tuple[str, ...] | list) -> object:
    return values[0] if len(values) == 1 else {"set": list(values)}


def render(g: Guard) -> str:
    """One transaction that replaces table inet nsg_guard whole (add, delete, add: no error whether or
    not it existed)."""
    head = {"family": FAMILY, "table": TABLE}
    cmds: list[dict] = [{"add": {"table": {"family": FAMILY, "name": TABLE}}},
                        {"delete": {"table": {"family": FAMILY, "name": TABLE}}},
                        {"add": {"table": {"family": FAMILY, "name": TABLE}}},
                        {"add": {"chain": {**head, "name": "input", "type": "filter", "hook": "input",
                                           "prio": PRIORITY, "policy": "accept"}}},
                        {"add": {"chain": {**head, "name": "overlay"}}},
                        {"add": {"chain": {**head, "name": "uplink"}}}]

    def rule(chain: str, *expr: dict, comment: str | None = None) -> None:
        r = {**head, "chain": chain, "expr": list(expr)}
        if comment:
            r["comment"] = comment
        cmds.append({"add": {"rule": r}})

    rule("input", _port("udp", "dport", VXLAN_PORT), {"jump": {"target": "overlay"}})
    rule("input", _port("tcp", "dport", BGP_PORT), {"jump": {"target": "overlay"}})
    if g.uplinks:
        rule("input", _match({"meta": {"key": "iifname"}}, _set(g.uplinks)), {"jump": {"target": "uplink"}})

    saddr = {"payload": {"protocol": "ip", "field": "saddr"}}
    if g.peers:
        if g.encrypted:
            rule("overlay", _match(saddr, _set(g.peers)), _match({"meta": {"key": "iifname"}}, ESP_TUN),
                 {"accept": None})
            rule("overlay", _match(saddr, _set(g.peers)), _match({"meta": {"key": "ipsec"}}, True),
                 {"accept": None})
        else:
            rule("overlay", _match(saddr, _set(g.peers)), {"accept": None})
    rule("overlay", {"counter": None}, {"drop": None}, comment=COUNTERS[0])

    rule("uplink", _match({"ct": {"key": "state"}}, {"set": ["established", "related"]}), {"accept": None})
    rule("uplink", _port("udp", "sport", DHCP_SERVER_PORT), _port("udp", "dport", DHCP_CLIENT_PORT),
         {"accept": None})
    rule("uplink", _port("udp", "dport", {"set": [IKE_PORT, NATT_PORT]}), {"accept": None})
    if g.peers and g.encrypted:
        # what the kernel's ESP decrypted (XFRM: it comes in on the uplink itself, where the userspace
        # engine's arrives on its TUN): a peer's system IP, authenticated by its SA and checked by the
        # XFRM inbound policy, may start traffic to us (a strongSwan peer's ping, say)
        rule("uplink", _match(saddr, _set(g.peers)), _match({"meta": {"key": "ipsec"}}, True), {"accept": None})
    for proto, port in g.services:
        rule("uplink", _port(proto, "dport", port), {"accept": None})
    rule("uplink", {"counter": None}, {"drop": None}, comment=COUNTERS[1])
    return json.dumps({"nftables": cmds})


def remove_document() -> str:
    return json.dumps({"nftables": [{"add": {"table": {"family": FAMILY, "name": TABLE}}},
                                    {"delete": {"table": {"family": FAMILY, "name": TABLE}}}]})
