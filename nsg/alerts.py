"""The gateway's security alerts: what it noticed that an operator should hear of (a duplicate MAC
frozen, a BGP peer or site at its route limit, a LAN port refusing new MACs). Pure bookkeeping:
every alert is counted by reason, the last few are kept for `nsg status`, and each is queued once
for the controller (a channel Event of kind "security"); the daemon logs and sends them.

Alerts are bounded like everything caused by the network: at most MAX_KEPT are kept and MAX_QUEUED
wait for the channel (the oldest unsent go first, counted as ``dropped``).

Port security is read from nftables counters (nsg/policy/port_guard.py), so its alert is derived
here from two readings: a LAN port whose refusals grew since the last look raises one alert naming
the port, how many new MACs it refused in that interval, and its limit.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from nsg.model.status import AlertsStatus, PortGuardStatus, SecurityAlert

MAX_KEPT = 32
MAX_QUEUED = 64
MAX_MESSAGE = 512  # as the channel's SecurityDetail allows


@dataclass
class Alerts:
    counts: Counter = field(default_factory=Counter)
    kept: deque = field(default_factory=lambda: deque(maxlen=MAX_KEPT))
    queued: deque = field(default_factory=deque)
    dropped: int = 0

    def add(self, ts: float, reason: str, message: str, **fields: object) -> SecurityAlert:
        alert = SecurityAlert(ts=ts, reason=reason, message=message[:MAX_MESSAGE], fields=dict(fields))
        self.counts[reason] += 1
        self.kept.append(alert)
        if len(self.queued) >= MAX_QUEUED:
            self.queued.popleft()
            self.dropped += 1
        self.queued.append(alert)
        return alert

    def take(self) -> list[SecurityAlert]:
        """The alerts not yet handed to the controller (the caller puts back what it could not send)."""
        out = list(self.queued)
        self.queued.clear()
        return out

    def put_back(self, unsent: list[SecurityAlert]) -> None:
        for alert in reversed(unsent):
            if len(self.queued) >= MAX_QUEUED:
                self.dropped += 1
                continue
            self.queued.appendleft(alert)

    def status(self) -> AlertsStatus:
        return AlertsStatus(counts=dict(self.counts), last=list(self.kept), unsent=len(self.queued),
                            dropped=self.dropped)


def evpn_alert_message(a) -> str:
    """An EVPN alert (nsg.evpn.effects.DuplicateMacAlert or RouteLimitAlert) said for people."""
    if a.kind == "duplicate-mac":
        return (f"MAC {a.mac} (VNI {a.vni}) moved {a.moves} times in {a.window:.0f} s between "
                f"{', '.join(a.sites)}: frozen at {a.frozen_at} for {a.hold:.0f} s")
    where = f"site {a.site} via peer {a.peer}" if a.site else f"BGP peer {a.peer}"
    return f"{where}: {a.routes} EVPN routes, limit {a.limit}" + ("; new ones refused" if a.refusing else " (warning)")


def refused_macs(st: PortGuardStatus | None) -> dict[str, int]:
    """Per LAN port: new MACs refused so far (over the limit or over the learn rate)."""
    if st is None:
        return {}
    return {name: sum(c.packets for c in p.dropped.values()) for name, p in st.ports.items()
            if p.kind in ("lan", "bridge")}


def port_alerts(before: dict[str, int], now: PortGuardStatus | None, interval_s: float,
                system: str) -> list[tuple[str, str, dict]]:
    """(reason, message, fields) for each LAN port that refused new MACs since ``before``."""
    out = []
    if now is None:
        return out
    for name, refused in sorted(refused_macs(now).items()):
        grew = refused - before.get(name, 0)
        if grew <= 0:
            continue
        p = now.ports[name]
        if p.kind == "bridge":
            out.append(("port-security", f"bridge {name} of {system}: {grew} frames from ports nsg did not put "
                        f"there dropped in {interval_s:.0f} s", {"bridge": name, "dropped": grew}))
            continue
        out.append(("port-security",
                    f"port {name} of {system}: {grew} frames from new MACs refused in {interval_s:.0f} s, "
                    f"limited to {p.max_macs} MACs", {"port": name, "refused": grew, "max_macs": p.max_macs,
                                                       "macs": p.macs}))
    return out
