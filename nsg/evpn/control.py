"""The gateway's EVPN control plane: speakers toward the configured BGP peers, received routes into
the RIB, our inclusive-multicast route per VNI out (RFC 7432 section 7.3, RFC 8365 section 9: VNI in
the label, ingress replication toward our system IP)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from ipaddress import IPv4Address

from nsg.evpn import fsm
from nsg.evpn.codec import Update, UpdateResult
from nsg.evpn.evpn_nlri import (
    InclusiveMulticastRoute,
    MacIpRoute,
    MacMobility,
    RouteDistinguisher,
    encap_vxlan,
    inclusive_multicast_route,
    route_target,
)
from nsg.evpn.rib import EvpnRib, ImetRoute, MacRoute
from nsg.evpn.speaker import Speaker
from nsg.model import GatewayConfig

log = logging.getLogger("nsg.evpn")


def _rib_routes(result: UpdateResult) -> tuple[list[MacRoute | ImetRoute], list[MacRoute | ImetRoute]]:
    """(announced, withdrawn) in RIB terms. Treat-as-withdraw results withdraw everything they carried."""
    add: list[MacRoute | ImetRoute] = []
    gone: list[MacRoute | ImetRoute] = []

    def convert(route, vtep: str | None, seq: int) -> MacRoute | ImetRoute | None:
        if isinstance(route, MacIpRoute):
            return MacRoute(route.vni, route.mac, vtep or "0.0.0.0", str(route.ip) if route.ip else None, seq)
        if isinstance(route, InclusiveMulticastRoute):
            return ImetRoute(0, str(route.originator))  # the VNI comes from the PMSI label (below)
        return None

    upd = result.update
    if upd is None:
        return add, gone
    seq = 0
    ext = upd.get(16)  # EXTENDED_COMMUNITIES
    if ext is not None:
        seq = max((c.sequence for c in ext.communities if isinstance(c, MacMobility)), default=0)
    pmsi = upd.get(22)
    reach, unreach = upd.mp_reach, upd.mp_unreach
    vtep = str(reach.next_hop) if reach is not None else None
    for route in reach.nlri if reach is not None else ():
        r = convert(route, vtep, seq)
        if isinstance(r, ImetRoute):
            if pmsi is None:
                continue  # RFC 8365 9.1: without the PMSI attribute we cannot tell the VNI
            r = ImetRoute(pmsi.tunnel.vni, (pmsi.tunnel.vtep and str(pmsi.tunnel.vtep)) or r.vtep)
        if r is not None:
            add.append(r)
    for route in unreach.nlri if unreach is not None else ():
        r = convert(route, None, 0)
        if r is not None:
            gone.append(r)
    return add, gone


class EvpnControl:
    def __init__(self, rib: EvpnRib, changed: Callable[[], None]):
        self.rib = rib
        self.changed = changed
        self.speakers: dict[str, Speaker] = {}
        self.config = None
        # withdrawals name routes without their next hop: remember who announced what, per peer
        self._announced: dict[str, dict[tuple, MacRoute | ImetRoute]] = {}

    def _key(self, r) -> tuple:
        return ("mac", r.vni, r.mac, r.ip) if isinstance(r, MacRoute) else ("imet", r.vtep)

    def _on_update(self, peer: str, result: UpdateResult) -> None:
        add, gone = _rib_routes(result)
        mine = self._announced.setdefault(peer, {})
        for r in gone:
            known = mine.pop(self._key(r), None)
            if known is not None:
                self.rib.withdraw(known)
        for r in add:
            old = mine.get(self._key(r))
            if old is not None and old != r:
                self.rib.withdraw(old)  # an implicit withdraw: the same route with new attributes
            mine[self._key(r)] = r
            self.rib.add(r)
        if add or gone:
            self.changed()

    def apply(self, cfg: GatewayConfig, local: str) -> None:
        """Start speakers toward new peers; (re)announce our type-3 routes (one per VNI)."""
        assert cfg.evpn is not None
        sysip = str(cfg.system_ip)
        self.rib.local_vteps = frozenset({sysip})
        updates = []
        for i, s in enumerate(cfg.subnets, start=1):
            rd = RouteDistinguisher.ipv4(sysip, i)
            imet, pmsi = inclusive_multicast_route(rd, s.vni, sysip)
            updates.append(Update.for_evpn((imet,), IPv4Address(sysip), (route_target(cfg.evpn.asn, s.vni),
                                                                          encap_vxlan()), pmsi=pmsi))
        for peer in cfg.evpn.peers:
            addr = str(peer.address)
            if addr not in self.speakers:
                sp = Speaker(fsm.Config(cfg.evpn.asn, sysip, peer.asn, hold_time=cfg.evpn.hold_time), addr,
                             local=local, on_update=lambda res, a=addr: self._on_update(a, res),
                             on_state=lambda st, a=addr: self._state(a, st))
                self.speakers[addr] = sp
                sp.announce = list(updates)
                sp.start()
            else:
                self.speakers[addr].announce = list(updates)

    def _state(self, peer: str, state: str) -> None:
        if state == "down":  # without graceful restart, what the peer told us is gone with it
            for r in self._announced.pop(peer, {}).values():
                self.rib.withdraw(r)
            self.changed()

    async def stop(self) -> None:
        for sp in self.speakers.values():
            await sp.stop()

    def status(self) -> dict:
        return {
            "peers": {a: {"state": sp.session.state.value, **sp.session.counters} for a, sp in self.speakers.items()},
            "routes": {"mac": sum(len(p) for p in self.rib.macs.values()), "imet": len(self.rib.imets)},
        }
