"""What this gateway has learned on its own LAN side, as the type-2 routes it should originate. Pure.

Input: neighbour-table events in kernel terms, already reduced by the watcher (watch.py) to
  - a MAC seen on (or gone from) a LAN port of a subnet's bridge  -> MAC-only route (RFC 7432 7.2)
  - an IP bound to (or released from) a MAC on the subnet's bridge -> MAC+IP route (ARP suppression
    at the other sites, RFC 7432 section 10)
Output: the set of LocalRoute values; the control plane announces what appears and withdraws what
goes. A MAC+IP route is only originated while its MAC is itself local: an IP whose MAC sits behind
another VTEP is that VTEP's to advertise.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LocalRoute:
    vni: int
    mac: str
    ip: str | None = None

    def sort_key(self) -> tuple[int, str, bool, str]:
        """MAC-only before MAC+IP of the same MAC (a peer learns the MAC first)."""
        return (self.vni, self.mac, self.ip is not None, self.ip or "")


@dataclass(frozen=True)
class MacEvent:
    """The bridge of ``vni`` has (``present``) or lost the MAC on one of its LAN ports."""

    vni: int
    mac: str
    port: str
    present: bool


@dataclass(frozen=True)
class IpEvent:
    """The bridge of ``vni`` resolved ``ip`` to ``mac`` (``present``) or lost that binding
    (``mac`` may then be "": the kernel does not always say which MAC a failed entry had)."""

    vni: int
    ip: str
    mac: str
    present: bool


class LocalTable:
    def __init__(self) -> None:
        self.macs: dict[tuple[int, str], str] = {}  # (vni, mac) -> LAN port
        self.ips: dict[tuple[int, str], str] = {}  # (vni, ip) -> mac

    def apply(self, event: MacEvent | IpEvent) -> None:
        if isinstance(event, MacEvent):
            key = (event.vni, event.mac)
            if event.present:
                self.macs[key] = event.port
            elif self.macs.get(key) == event.port:  # a stale delete from the port it moved away from
                del self.macs[key]
        else:
            key = (event.vni, event.ip)
            if event.present:
                self.ips[key] = event.mac
            elif key in self.ips and (not event.mac or self.ips[key] == event.mac):
                del self.ips[key]

    def forget_vni(self, vni: int) -> None:
        self.macs = {k: v for k, v in self.macs.items() if k[0] != vni}
        self.ips = {k: v for k, v in self.ips.items() if k[0] != vni}

    def forget_mac(self, vni: int, mac: str) -> None:
        """The MAC moved to another site (a remote route with a higher sequence number)."""
        self.macs.pop((vni, mac), None)

    def is_local(self, vni: int, mac: str) -> bool:
        return (vni, mac) in self.macs

    def routes(self) -> set[LocalRoute]:
        out = {LocalRoute(vni, mac) for (vni, mac) in self.macs}
        out |= {LocalRoute(vni, mac, ip) for (vni, ip), mac in self.ips.items() if (vni, mac) in self.macs}
        return out
