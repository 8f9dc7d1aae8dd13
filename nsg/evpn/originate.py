"""The EVPN routes this gateway originates. Pure.

- per VNI an inclusive multicast route (type 3, RFC 7432 section 7.3; RFC 8365 section 9: the VNI
  in the label, ingress replication toward our system IP);
- per configured prefix an IP prefix route (type 5, RFC 9136, the gateway IP as overlay index);
- per MAC (and MAC+IP) learned on the LAN side (local.py) a type-2 route (RFC 7432 section 7.2),
  with a MAC Mobility sequence number (section 7.7) one above every remote claim of the MAC.

Which local MACs we announce follows the remote paths of the same MACs in the RIB: a remote route
that wins over ours means the host moved away (RFC 7432 15.1), a remote static (sticky) route means
the MAC is not ours to announce at all (15.2). Either way of a move (our LAN to another site, or
another site to our LAN) counts for duplicate-MAC detection (mobility.py): a MAC frozen here is not
moved away by a remote route, and a MAC frozen at another site is not announced while frozen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from ipaddress import IPv4Address

from bgp.codec import Update
from bgp.constants import RD_IPV4_NUMBER_MAX, EvpnRouteType
from bgp.evpn_nlri import (
    IpPrefixRoute,
    MacMobility,
    RouteDistinguisher,
    encap_vxlan,
    encode_evpn_nlri,
    inclusive_multicast_route,
    mac_ip_route,
    route_target,
)
from nsg.evpn.effects import Pending
from nsg.evpn.local import IpEvent, LocalRoute, LocalTable, MacEvent
from nsg.evpn.mobility import LOCAL, DuplicateMacs
from nsg.evpn.rib import EvpnRib
from nsg.model import GatewayConfig

log = logging.getLogger("nsg.evpn")

Mac = tuple[int, str]  # (vni, mac)


def route_distinguishers(cfg: GatewayConfig) -> dict[int, RouteDistinguisher]:
    """VNI -> our RD for it: type 1, system IP : VNI (its low 16 bits; the config model refuses VNIs
    that share them). Stable whatever else the config adds or removes."""
    sysip = str(cfg.system_ip)
    return {s.vni: RouteDistinguisher.ipv4(sysip, s.vni & RD_IPV4_NUMBER_MAX) for s in cfg.subnets}


def configured_routes(cfg: GatewayConfig, rds: dict[int, RouteDistinguisher]) -> dict[bytes, Update]:
    """Our type-3 and type-5 routes, by encoded NLRI."""
    assert cfg.evpn is not None
    sysip = IPv4Address(str(cfg.system_ip))
    out: dict[bytes, Update] = {}
    for s in cfg.subnets:
        imet, pmsi = inclusive_multicast_route(rds[s.vni], s.vni, sysip)
        out[encode_evpn_nlri((imet,))] = Update.for_evpn(
            (imet,), sysip, (route_target(cfg.evpn.asn, s.vni), encap_vxlan()), pmsi=pmsi)
    for ep in cfg.evpn.prefixes:
        home = next(s for s in cfg.subnets if ep.via in s.cidr)  # the config model checked it exists
        route = IpPrefixRoute(rds[home.vni], ep.prefix.network_address, ep.prefix.prefixlen, ep.via, home.vni)
        out[encode_evpn_nlri((route,))] = Update.for_evpn(
            (route,), sysip, (route_target(cfg.evpn.asn, home.vni), encap_vxlan()))
    return out


def changes(old: dict[bytes, Update], new: dict[bytes, Update]) -> list[Update]:
    """What sessions that are up need when our configured routes go from ``old`` to ``new``: one
    withdrawal of the routes that went, then the routes that are new or changed."""
    out = [u for k, u in new.items() if old.get(k) != u]
    gone = [u.mp_reach.nlri[0] for k, u in old.items() if k not in new and u.mp_reach]
    if gone:
        out.insert(0, Update.withdraw_evpn(gone))
    return out


def mac_ip_update(cfg: GatewayConfig, rd: RouteDistinguisher, route: LocalRoute, seq: int) -> Update:
    """A type-2 route for a local MAC (or MAC+IP); MAC Mobility only once the MAC has moved (seq > 0)."""
    assert cfg.evpn is not None
    comms = [route_target(cfg.evpn.asn, route.vni), encap_vxlan()]
    if seq > 0:
        comms.append(MacMobility(seq))
    return Update.for_evpn((mac_ip_route(rd, route.mac, route.ip, route.vni),), cfg.system_ip, comms)


class Origination:
    """Our announced routes and the state behind them. ``counters`` and ``dup`` are the core's,
    shared; ``where`` tells the remote VTEP a MAC is installed at (the core's kernel view).
    ``changed`` / ``changed_ips``: MACs whose being ours, and IPs whose local binding, may have
    changed since the core last looked (it drains them)."""

    def __init__(self, counters: dict[str, int], dup: DuplicateMacs | None = None):
        self.counters = counters
        self.dup = dup if dup is not None else DuplicateMacs(counters)
        self.where: Callable[[Mac], str | None] = lambda m: None
        self.changed: set[Mac] = set()
        self.changed_ips: set[tuple[int, str]] = set()
        self.away: set[Mac] = set()  # local MACs frozen at another site: not announced
        self.config: GatewayConfig | None = None
        self.local = LocalTable()
        self.rds: dict[int, RouteDistinguisher] = {}
        self.configured: dict[bytes, Update] = {}  # type-3 and type-5, by encoded NLRI
        self.advertised: dict[LocalRoute, Update] = {}  # local route -> the UPDATE that announced it
        self.seq: dict[Mac, int] = {}  # our MAC Mobility sequence number per local MAC
        self.pinned: set[Mac] = set()  # local MACs another PE advertises as static (RFC 7432 15.2)

    def announcements(self) -> list[Update]:
        return [*self.configured.values(), *self.advertised.values()]

    def ours(self) -> set[Mac]:
        """MACs on our LAN that we announce: the kernel gets no remote entries for them."""
        return {m for m in self.local.macs if self.is_ours(m)}

    def is_ours(self, m: Mac) -> bool:
        return m in self.local.macs and m not in self.pinned and m not in self.away

    # --- inputs ---------------------------------------------------------------------------------

    def configure(self, cfg: GatewayConfig, rib: EvpnRib, out: Pending, now: float) -> None:
        self.config = cfg
        self.rds = route_distinguishers(cfg)
        configured = configured_routes(cfg, self.rds)
        out.send += changes(self.configured, configured)  # a config change reaches sessions that are up
        self.configured = configured
        out.announce = True
        for vni in {r.vni for r in self.local.routes()} - set(self.rds):
            self._forget_vni(vni)
        self.sync(rib, out, now)

    def learned(self, resync: frozenset[int] | None, events: list[MacEvent | IpEvent], rib: EvpnRib,
                out: Pending, now: float) -> None:
        """A batch from the neighbour watch; ``resync``: the full state of those VNIs."""
        for vni in resync or ():
            self._forget_vni(vni)
        for e in events:
            if e.vni in self.rds:
                self.local.apply(e)
                if isinstance(e, MacEvent):
                    self.changed.add((e.vni, e.mac))
                else:
                    self.changed_ips.add((e.vni, e.ip))
        self.sync(rib, out, now)

    def _forget_vni(self, vni: int) -> None:
        self.changed.update(m for m in self.local.macs if m[0] == vni)
        self.changed_ips.update(k for k in self.local.ips if k[0] == vni)
        self.local.forget_vni(vni)

    def contest(self, rib: EvpnRib, touched: set[Mac], out: Pending, now: float) -> None:
        """Remote paths of MACs that are local here changed: does our route still win?

        RFC 7432 15.1: a remote route with a higher sequence number than ours means the host moved
        there, and so does one with the same sequence number from a PE with a lower address; either
        way ours is withdrawn (if the host is still here its next frame makes the bridge learn it
        again, and we announce it one above), unless that move is one too many (mobility.py): then
        the MAC is frozen here and stays ours. A remote static (sticky) route is handled in sync
        (15.2). Withdrawals of remote paths can make a held-back MAC ours again."""
        local = [(vni, mac) for vni, mac in touched if self.local.is_local(vni, mac)]
        if not local:
            return
        sysip = _ip_int(str(self.config.system_ip)) if self.config is not None else 0
        for vni, mac in local:
            best, ours = rib.best(vni, mac), self.seq.get((vni, mac))
            if best is None or ours is None or best.sticky:
                continue
            if best.seq > ours or (best.seq == ours and _ip_int(best.vtep) < sysip):
                allowed, alert = self.dup.move((vni, mac), LOCAL, best.vtep, now, here=True)
                if alert is not None:
                    out.alerts.append(alert)
                if not allowed:
                    continue  # frozen here: ours, announced as it is
                self.local.forget_mac(vni, mac)
                self.changed.add((vni, mac))
                self.counters["moved_away"] += 1
                log.info("MAC moved to another site", extra={"fields": {
                    "vni": vni, "mac": mac, "vtep": best.vtep, "their_seq": best.seq, "our_seq": ours}})
        self.sync(rib, out, now)

    def sync(self, rib: EvpnRib, out: Pending, now: float) -> None:
        """Announce local routes that appeared, withdraw those that went (to every peer)."""
        cfg = self.config
        pinned: set[Mac] = set()
        away: set[Mac] = set()
        mine: set[Mac] = set()
        for m in self.local.macs:
            if m[0] not in self.rds:
                continue
            best = rib.best(*m)
            if best is not None and best.sticky:
                # RFC 7432 15.2: another PE says this MAC is static there and "cannot move": it is not
                # ours to announce, its entry stays installed, and the operator MUST be alerted
                pinned.add(m)
                continue
            at = self.dup.frozen_at(m)
            if at is not None and at != LOCAL:
                if any(p.vtep == at for p in rib.paths(*m)):
                    away.add(m)  # frozen at another site: not ours to announce while the hold lasts
                    continue
                self.dup.relocate(m, LOCAL)  # that site withdrew it: it is held here, where it is
                at = LOCAL
            if at is None and LocalRoute(*m) not in self.advertised:
                there = self.where(m)
                if there is not None:  # it was installed toward another site: it moves here
                    allowed, alert = self.dup.move(m, there, LOCAL, now, here=True)
                    if alert is not None:
                        out.alerts.append(alert)
                    if not allowed:
                        away.add(m)
                        continue
            mine.add(m)
        want = {r for r in self.local.routes() if (r.vni, r.mac) in mine}
        for vni, mac in sorted(pinned - self.pinned):
            self.counters["sticky_conflicts"] += 1
            best = rib.best(vni, mac)
            log.warning("MAC learned on the LAN is static (sticky) at another site: not announced",
                        extra={"fields": {"vni": vni, "mac": mac, "vtep": best.vtep if best else None}})
        self.changed |= (pinned ^ self.pinned) | (away ^ self.away)
        self.pinned, self.away = pinned, away
        gone = [r for r in self.advertised if r not in want]
        new = sorted(want - set(self.advertised), key=LocalRoute.sort_key)
        if gone:
            # withdrawn as announced (the RD they carried then)
            out.send.append(Update.withdraw_evpn([nlri for r in gone for nlri in self._nlri(r)]))
            for r in gone:
                del self.advertised[r]
                if r.ip is None:
                    self.seq.pop((r.vni, r.mac), None)
            self.counters["local_withdrawn"] += len(gone)
        for r in new:
            assert cfg is not None
            seq = self.seq.get((r.vni, r.mac))
            if seq is None:
                seq = self.seq[(r.vni, r.mac)] = rib.next_local_seq(r.vni, r.mac)
            upd = mac_ip_update(cfg, self.rds[r.vni], r, seq)
            self.advertised[r] = upd
            out.send.append(upd)
            self.counters["local_learned"] += 1
        if gone or new:
            out.announce = True
            self.changed.update((r.vni, r.mac) for r in (*gone, *new))

    def _nlri(self, r: LocalRoute) -> tuple:
        reach = self.advertised[r].mp_reach
        return reach.nlri if reach is not None else ()

    # --- show -----------------------------------------------------------------------------------

    def show(self) -> list[dict]:
        cfg = self.config
        sysip = str(cfg.system_ip) if cfg is not None else None
        out = [{"type": EvpnRouteType.INCLUSIVE_MULTICAST.value, "vni": vni, "rd": str(rd), "vtep": sysip}
               for vni, rd in sorted(self.rds.items())]
        if cfg is not None and cfg.evpn is not None:
            out += [{"type": EvpnRouteType.IP_PREFIX.value, "prefix": str(ep.prefix), "gateway_ip": str(ep.via),
                     "vtep": sysip} for ep in cfg.evpn.prefixes]
        out += [{"type": EvpnRouteType.MAC_IP_ADVERTISEMENT.value, "vni": r.vni, "mac": r.mac, "ip": r.ip,
                 "rd": str(self.rds[r.vni]), "seq": self.seq.get((r.vni, r.mac), 0)}
                for r in sorted(self.advertised, key=LocalRoute.sort_key) if r.vni in self.rds]
        return out


def _ip_int(address: str) -> int:
    return int(IPv4Address(address))
