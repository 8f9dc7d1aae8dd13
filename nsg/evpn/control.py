"""The gateway's EVPN control plane: speakers toward the configured BGP peers, received routes into
the RIB, our inclusive-multicast route per VNI out (RFC 7432 section 7.3, RFC 8365 section 9: VNI in
the label, ingress replication toward our system IP)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network

from bgp import fsm
from bgp.codec import Update, UpdateResult
from bgp.constants import AttrType
from bgp.evpn_nlri import (
    InclusiveMulticastRoute,
    IpPrefixRoute,
    MacIpRoute,
    MacMobility,
    RouteDistinguisher,
    encap_vxlan,
    encode_evpn_nlri,
    inclusive_multicast_route,
    mac_ip_route,
    route_target,
)
from bgp.speaker import Speaker
from nsg.dataplane.desired import bridge_name
from nsg.dataplane.types import ZERO_MAC, Fdb, Neigh, Route
from nsg.evpn.local import IpEvent, LocalRoute, LocalTable, MacEvent
from nsg.evpn.rib import EvpnRib, ImetRoute, MacRoute, PrefixRoute
from nsg.model import GatewayConfig

log = logging.getLogger("nsg.evpn")

GR_RESTART_TIME = 120  # seconds we ask peers to keep our routes if our session drops (RFC 4724)
PREFIX_METRIC = 50  # routes from EVPN type-5 routes (below the uplinks' default routes' 100+)


RibRoute = MacRoute | ImetRoute | PrefixRoute
NlriKey = tuple  # a received route's BGP identity (see _nlri_key)


def _nlri_key(route) -> NlriKey | None:
    """What makes two EVPN routes the same route (RFC 7432 section 7.2 for type 2, 7.3 for type 3,
    RFC 9136 section 3 for type 5): RD and Ethernet tag, then MAC and IP / originator / prefix. Not
    the labels, next hop or attributes: a route announced again with new ones replaces the old."""
    if isinstance(route, MacIpRoute):
        return ("mac", str(route.rd), route.eth_tag, route.mac, str(route.ip) if route.ip else None)
    if isinstance(route, InclusiveMulticastRoute):
        return ("imet", str(route.rd), route.eth_tag, str(route.originator))
    if isinstance(route, IpPrefixRoute):
        return ("prefix", str(route.rd), route.eth_tag, str(route.prefix), route.prefix_len)
    return None


def _rib_routes(result: UpdateResult, peer: str) -> tuple[list[tuple[NlriKey, RibRoute]],
                                                          list[tuple[NlriKey, RibRoute]]]:
    """(announced, withdrawn) in RIB terms, each route with its NLRI identity. Treat-as-withdraw
    results withdraw everything they carried."""
    add: list[tuple[NlriKey, RibRoute]] = []
    gone: list[tuple[NlriKey, RibRoute]] = []

    def convert(route, vtep: str | None, seq: int, sticky: bool) -> RibRoute | None:
        rd = str(route.rd) if hasattr(route, "rd") else ""
        if isinstance(route, MacIpRoute):
            return MacRoute(route.vni, route.mac, vtep or "0.0.0.0", str(route.ip) if route.ip else None, seq,
                            sticky, rd=rd, peer=peer, eth_tag=route.eth_tag)
        if isinstance(route, InclusiveMulticastRoute):
            # the VNI comes from the PMSI label (below)
            return ImetRoute(0, str(route.originator), rd=rd, peer=peer)
        if isinstance(route, IpPrefixRoute) and route.prefix.version == 4:
            net = IPv4Network(f"{route.prefix}/{route.prefix_len}", strict=False)
            return PrefixRoute(str(net), str(route.gateway), vtep or "0.0.0.0", rd=rd, peer=peer)
        return None

    def keyed(routes, vtep: str | None, seq: int, sticky: bool) -> list[tuple[NlriKey, RibRoute]]:
        out = []
        for route in routes:
            key, r = _nlri_key(route), convert(route, vtep, seq, sticky)
            if key is not None and r is not None:
                out.append((key, r))
        return out

    upd = result.update
    if upd is None:  # RFC 7606 treat-as-withdraw: every route the message carried is withdrawn
        return add, keyed(result.withdraw_nlri, None, 0, False)
    seq, sticky = 0, False
    ext = upd.get(AttrType.EXTENDED_COMMUNITIES)
    if ext is not None:
        mobility = [c for c in ext.communities if isinstance(c, MacMobility)]
        seq = max((c.sequence for c in mobility), default=0)
        sticky = any(c.sticky for c in mobility)  # RFC 7432 7.7: the "static" flag
    pmsi = upd.get(AttrType.PMSI_TUNNEL)
    reach, unreach = upd.mp_reach, upd.mp_unreach
    vtep = str(reach.next_hop) if reach is not None else None
    for key, r in keyed(reach.nlri if reach is not None else (), vtep, seq, sticky):
        if isinstance(r, ImetRoute):
            if pmsi is None:
                continue  # RFC 8365 9.1: without the PMSI attribute we cannot tell the VNI
            tunnel = (pmsi.tunnel.vtep and str(pmsi.tunnel.vtep)) or r.vtep
            add.append((key, ImetRoute(pmsi.tunnel.vni, tunnel, rd=r.rd, peer=peer)))
        else:
            add.append((key, r))
    gone = keyed(unreach.nlri if unreach is not None else (), None, 0, False)
    return add, gone


class EvpnControl:
    """Speakers toward the configured peers; received routes into the RIB; our routes out: one
    type-3 per VNI and a type-2 per MAC (and MAC+IP) learned on the LAN side (local.py)."""

    def __init__(self, rib: EvpnRib, changed: Callable[[], None]):
        self.rib = rib
        self.changed = changed
        self.speakers: dict[str, Speaker] = {}
        self.config: GatewayConfig | None = None
        # each peer's Adj-RIB-In: NLRI identity -> the route as the RIB holds it (withdrawals name
        # the route only, not its next hop or attributes; the RIB keys its paths by peer too)
        self._announced: dict[str, dict[NlriKey, RibRoute]] = {}
        self.local = LocalTable()
        self._originated: dict[bytes, Update] = {}  # our type-3 and type-5 routes, by encoded NLRI
        self._rds: dict[int, RouteDistinguisher] = {}  # VNI -> our RD for it
        self._advertised: dict[LocalRoute, Update] = {}  # local route -> the UPDATE that announced it
        self._seq: dict[tuple[int, str], int] = {}  # (vni, mac) -> our MAC Mobility sequence number
        # local MACs another PE advertises as static (sticky): not ours to announce (RFC 7432 15.2)
        self._pinned: set[tuple[int, str]] = set()
        self.counters = {"local_learned": 0, "local_withdrawn": 0, "moved_away": 0, "sticky_conflicts": 0,
                         "stale_kept": 0, "stale_purged": 0, "prefixes_refused": 0, "vteps_refused": 0,
                         "routes_refused": 0}
        self._refused_prefixes: set[str] = set()  # type-5 prefixes not installed (each counted once)
        # graceful restart, receiving side: a peer's routes kept (stale) while its session is down
        self._stale: dict[str, set[tuple]] = {}
        self._stale_timers: dict[str, asyncio.TimerHandle] = {}

    def _on_update(self, peer: str, result: UpdateResult) -> None:
        upd = result.update
        if upd is not None and upd.mp_reach is None and upd.mp_unreach is not None and not upd.mp_unreach.nlri:
            self._purge_stale(peer)  # End-of-RIB: whatever the peer did not send again is gone
            return
        add, gone = _rib_routes(result, peer)
        mine = self._announced.setdefault(peer, {})
        stale = self._stale.get(peer)
        if stale:
            stale.difference_update(key for key, _ in add)
        touched: set[tuple[int, str]] = set()  # MACs whose paths changed
        for key, _r in gone:
            known = mine.pop(key, None)
            if known is not None:
                self._rib_withdraw(known, touched)
        for key, r in add:
            old = mine.pop(key, None)
            if old is not None and old != r:
                self._rib_withdraw(old, touched)  # an implicit withdraw: the same route with new attributes
            why = _unusable(r)
            if why is not None:
                # the kernel would refuse it (and with it every later apply), or it would turn into a
                # flood entry: never let it into the RIB (and what the route said before is gone)
                self.counters["routes_refused"] += 1
                log.warning("EVPN route refused: %s", why, extra={"fields": {"peer": peer, "route": repr(r)}})
                continue
            mine[key] = r
            self.rib.add(r)
            if isinstance(r, MacRoute):
                touched.add((r.vni, r.mac))
        self._contest_local(touched)
        if add or gone:
            self.changed()

    def _rib_withdraw(self, r: RibRoute, touched: set[tuple[int, str]]) -> None:
        self.rib.withdraw(r)
        if isinstance(r, MacRoute):
            touched.add((r.vni, r.mac))

    def _contest_local(self, touched: set[tuple[int, str]]) -> None:
        """Remote paths of MACs that are local here changed: does our route still win?

        RFC 7432 15.1: a remote route with a higher sequence number than ours means the host moved
        there, and so does one with the same sequence number from a PE with a lower address; either
        way ours is withdrawn (if the host is still here its next frame makes the bridge learn it
        again, and we announce it one above). A remote static (sticky) route is handled in
        _sync_local (15.2). Withdrawals of remote paths can make a held-back MAC ours again."""
        local = [(vni, mac) for vni, mac in touched if self.local.is_local(vni, mac)]
        if not local:
            return
        sysip = _ip_int(str(self.config.system_ip)) if self.config is not None else 0
        for vni, mac in local:
            best, ours = self.rib.best(vni, mac), self._seq.get((vni, mac))
            if best is None or ours is None or best.sticky:
                continue
            if best.seq > ours or (best.seq == ours and _ip_int(best.vtep) < sysip):
                self.local.forget_mac(vni, mac)
                self.counters["moved_away"] += 1
                log.info("MAC moved to another site", extra={"fields": {
                    "vni": vni, "mac": mac, "vtep": best.vtep, "their_seq": best.seq, "our_seq": ours}})
        self._sync_local()

    def apply(self, cfg: GatewayConfig, local: str) -> None:
        """Start speakers toward new peers; (re)announce our type-3 routes (one per VNI)."""
        assert cfg.evpn is not None
        routes_before = self.routes()
        self.config = cfg
        sysip = str(cfg.system_ip)
        self.rib.local_vteps = frozenset({sysip})
        # RD type 1, system IP : VNI (its low 16 bits): stable whatever else the config adds or removes
        self._rds = {s.vni: RouteDistinguisher.ipv4(sysip, s.vni & 0xFFFF) for s in cfg.subnets}
        originated: dict[bytes, Update] = {}
        for s in cfg.subnets:
            imet, pmsi = inclusive_multicast_route(self._rds[s.vni], s.vni, sysip)
            originated[encode_evpn_nlri((imet,))] = Update.for_evpn(
                (imet,), IPv4Address(sysip), (route_target(cfg.evpn.asn, s.vni), encap_vxlan()), pmsi=pmsi)
        for ep in cfg.evpn.prefixes:
            home = next(s for s in cfg.subnets if ep.via in s.cidr)  # the config model checked it exists
            route = IpPrefixRoute(self._rds[home.vni], ep.prefix.network_address, ep.prefix.prefixlen, ep.via,
                                  home.vni)
            originated[encode_evpn_nlri((route,))] = Update.for_evpn(
                (route,), IPv4Address(sysip), (route_target(cfg.evpn.asn, home.vni), encap_vxlan()))
        # a config change reaches sessions that are up at once: new or changed routes, withdrawals
        changes = [u for k, u in originated.items() if self._originated.get(k) != u]
        gone = [u.mp_reach.nlri[0] for k, u in self._originated.items() if k not in originated and u.mp_reach]
        if gone:
            changes.insert(0, Update.withdraw_evpn(gone))
        self._originated = originated
        for sp in self.speakers.values():
            sp.announce = self._announcements()
            for upd in changes:
                sp.send(upd)
        for vni in {r.vni for r in self.local.routes()} - set(self._rds):
            self.local.forget_vni(vni)
        self._sync_local()
        if self.routes() != routes_before:  # e.g. our own configured prefixes: the dataplane follows
            self.changed()
        overlay = {str(p.system_ip) for p in cfg.peers}
        wanted = {str(p.address) for p in cfg.evpn.peers}
        for addr in [a for a in self.speakers if a not in wanted]:
            sp = self.speakers.pop(addr)
            asyncio.get_running_loop().create_task(sp.stop())
            self._state(addr, "down")
        for peer in cfg.evpn.peers:
            addr = str(peer.address)
            if addr not in self.speakers:
                # A reflector at a peer's system IP is reached inside the tunnel to that peer: the
                # session must come from our system IP (the tunnel's traffic selector), not the uplink.
                src = sysip if addr in overlay else local
                # our kernel state outlives the daemon (no flush on exit): we ask for graceful restart
                # with the forwarding state kept
                sp = Speaker(fsm.Config(cfg.evpn.asn, sysip, peer.asn, hold_time=cfg.evpn.hold_time), addr,
                             local=src, on_update=lambda res, a=addr: self._on_update(a, res),
                             on_state=lambda st, a=addr: self._state(a, st), restart_time=GR_RESTART_TIME,
                             forwarding_state=True)
                self.speakers[addr] = sp
                sp.announce = self._announcements()
                sp.start()
            else:
                self.speakers[addr].announce = self._announcements()

    def _announcements(self) -> list[Update]:
        return [*self._originated.values(), *self._advertised.values()]

    # --- local learning -------------------------------------------------------------------------

    def on_local(self, resync: frozenset[int] | None, events: list[MacEvent | IpEvent]) -> None:
        """A batch from the neighbour watch; ``resync``: the full state of those VNIs."""
        for vni in resync or ():
            self.local.forget_vni(vni)
        for e in events:
            if e.vni in self._rds:
                self.local.apply(e)
        self._sync_local()

    def _sync_local(self, announce: bool = True) -> None:
        """Announce local routes that appeared, withdraw those that went (to every peer)."""
        assert self.config is None or self.config.evpn is not None
        want: set[LocalRoute] = set()
        pinned: set[tuple[int, str]] = set()
        for r in self.local.routes():
            if r.vni not in self._rds:
                continue
            best = self.rib.best(r.vni, r.mac)
            if best is not None and best.sticky:
                # RFC 7432 15.2: another PE says this MAC is static there and "cannot move": it is not
                # ours to announce, its entry stays installed, and the operator MUST be alerted
                pinned.add((r.vni, r.mac))
                continue
            want.add(r)
        for vni, mac in sorted(pinned - self._pinned):
            self.counters["sticky_conflicts"] += 1
            log.warning("MAC learned on the LAN is static (sticky) at another site: not announced",
                        extra={"fields": {"vni": vni, "mac": mac, "vtep": self.rib.best(vni, mac).vtep}})
        pinned_changed = pinned != self._pinned
        self._pinned = pinned
        gone = [r for r in self._advertised if r not in want]
        new = sorted(want - set(self._advertised), key=LocalRoute.sort_key)
        if not gone and not new:
            if pinned_changed:
                self.changed()
            return
        sysip = self.config.system_ip if self.config is not None else None
        outgoing: list[Update] = []
        if gone:
            # withdrawn as announced (the RD they carried then)
            routes = [nlri for r in gone for nlri in self._advertised[r].mp_reach.nlri]
            for r in gone:
                del self._advertised[r]
                if r.ip is None:
                    self._seq.pop((r.vni, r.mac), None)
            outgoing.append(Update.withdraw_evpn(routes))
            self.counters["local_withdrawn"] += len(gone)
        for r in new:
            assert self.config is not None and self.config.evpn is not None and sysip is not None
            seq = self._seq.get((r.vni, r.mac))
            if seq is None:
                seq = self._seq[(r.vni, r.mac)] = self.rib.next_local_seq(r.vni, r.mac)
            comms = [route_target(self.config.evpn.asn, r.vni), encap_vxlan()]
            if seq > 0:
                comms.append(MacMobility(seq))
            upd = Update.for_evpn((mac_ip_route(self._rds[r.vni], r.mac, r.ip, r.vni),), sysip, comms)
            self._advertised[r] = upd
            outgoing.append(upd)
            self.counters["local_learned"] += 1
        announcements = self._announcements()
        for sp in self.speakers.values():
            sp.announce = list(announcements)
            if announce:
                for upd in outgoing:
                    sp.send(upd)
        # the kernel only cares when a MAC that was remote became ours or went (fdb() leaves local
        # MACs out); a host appearing on our LAN changes nothing in it
        if pinned_changed or any((r.vni, r.mac) in self.rib.macs for r in (*gone, *new)):
            self.changed()

    # --- what the kernel gets ---------------------------------------------------------------------

    def _ours(self, vni: int, mac: str) -> bool:
        """A MAC on our LAN that we announce: the kernel gets no remote entry for it."""
        return self.local.is_local(vni, mac) and (vni, mac) not in self._pinned

    def fdb(self) -> frozenset[Fdb]:
        """The RIB's entries, minus MACs that are ours now (a host that moved here from elsewhere).
        With transport "esp" only VTEPs that are our peers' system IPs are used: those are the ones
        inside tunnels; a route naming any other would send tenant frames across the WAN in clear."""
        entries = [f for f in self.rib.fdb() if f.mac == ZERO_MAC or not self._ours(_vni_of_vxlan(f.ifname), f.mac)]
        cfg = self.config
        if cfg is None or cfg.transport != "esp":
            return frozenset(entries)
        tunnels = {str(p.system_ip) for p in cfg.peers}
        outside = {(f.ifname, f.mac) for f in entries if not f.master and f.dst not in tunnels}
        self.counters["vteps_refused"] = len(outside)  # currently held back (a gauge, not a total)
        return frozenset(f for f in entries if (f.mac == ZERO_MAC and f.dst in tunnels)
                         or (f.mac != ZERO_MAC and (f.ifname, f.mac) not in outside))

    def routes(self) -> frozenset[Route]:
        """Type-5 prefixes -> kernel routes via their gateway IP on the subnet's bridge (our own
        configured prefixes too: every site routes a prefix the same way)."""
        cfg = self.config
        if cfg is None or cfg.evpn is None:
            return frozenset()
        wanted = {str(ep.prefix): str(ep.via) for ep in cfg.evpn.prefixes}
        for prefix, r in self.rib.best_prefixes().items():
            wanted.setdefault(prefix, r.gateway)
        # what a prefix from the network must never cover: the overlay's own addresses (system IPs,
        # the peers' WAN endpoints, the BGP peers, our uplinks' networks) and the tenant subnets
        protected = [IPv4Network(f"{cfg.system_ip}/32")]
        protected += [IPv4Network(f"{a}/32") for p in cfg.peers for a in (p.system_ip, p.endpoint)]
        protected += [IPv4Network(f"{p.address}/32") for p in cfg.evpn.peers]
        protected += [u.address.network for u in cfg.uplinks if u.address is not None]
        protected += [s.cidr for s in cfg.subnets]
        out = set()
        for prefix, gw in wanted.items():
            net = IPv4Network(prefix)
            home = next((s for s in cfg.subnets if IPv4Address(gw) in s.cidr), None)
            if home is None or net.prefixlen == 0 or any(net.overlaps(p) for p in protected):
                self.counters["prefixes_refused"] += prefix not in self._refused_prefixes
                self._refused_prefixes.add(prefix)
                continue  # not resolvable here, or it would capture the overlay / a subnet / the default
            out.add(Route(prefix, f"br-{home.vni}", gw, None, PREFIX_METRIC))
        return frozenset(out)

    def neighbors(self) -> frozenset[Neigh]:
        """MAC+IP routes -> neighbour entries, only for host addresses of the VNI's own subnet other
        than its gateway (an entry for our gateway address would hijack the subnet's next hop)."""
        hosts = {bridge_name(s.vni): s for s in self.config.subnets} if self.config is not None else {}
        out = set()
        for n in self.rib.neighbors():
            subnet = hosts.get(n.ifname)
            ip = IPv4Address(n.ip) if n.ip.count(".") == 3 else None
            if subnet is None or ip is None or ip not in subnet.cidr or ip in (
                    subnet.gateway, subnet.cidr.network_address, subnet.cidr.broadcast_address):
                continue
            if not self._ours(_vni_of_bridge(n.ifname), n.mac):
                out.add(Neigh(n.ifname, n.ip, n.mac))
        return frozenset(out)

    # --- sessions ---------------------------------------------------------------------------------

    def _state(self, peer: str, state: str) -> None:
        if state != "down":
            return
        sp = self.speakers.get(peer)
        if sp is not None and sp.peer_restart_time and not sp.notified and self._announced.get(peer):
            # RFC 4724 4.2: the peer does graceful restart and the session just broke (no NOTIFICATION):
            # keep its routes, marked stale, for its restart time; forwarding goes on meanwhile
            keys = set(self._announced[peer])
            self._stale.setdefault(peer, set()).update(keys)
            self.counters["stale_kept"] += len(keys)
            old = self._stale_timers.pop(peer, None)
            if old is not None:
                old.cancel()
            self._stale_timers[peer] = asyncio.get_running_loop().call_later(
                sp.peer_restart_time, self._purge_stale, peer)
            log.info("BGP peer down, keeping its routes (graceful restart)",
                     extra={"fields": {"peer": peer, "routes": len(keys), "for_s": sp.peer_restart_time}})
            return
        # without graceful restart, what the peer told us is gone with it
        self._stale.pop(peer, None)
        touched: set[tuple[int, str]] = set()
        for r in self._announced.pop(peer, {}).values():
            self._rib_withdraw(r, touched)
        self._contest_local(touched)
        self.changed()

    def _purge_stale(self, peer: str) -> None:
        """End-of-RIB from the peer, or its restart time ran out: stale routes go."""
        timer = self._stale_timers.pop(peer, None)
        if timer is not None:
            timer.cancel()
        keys = self._stale.pop(peer, set())
        mine = self._announced.get(peer, {})
        gone = [mine.pop(k) for k in keys if k in mine]
        touched: set[tuple[int, str]] = set()
        for r in gone:
            self._rib_withdraw(r, touched)
        self._contest_local(touched)
        if gone:
            self.counters["stale_purged"] += len(gone)
            self.changed()

    def kick(self) -> None:
        """A tunnel came up: sessions still waiting to connect try at once."""
        for sp in self.speakers.values():
            sp.kick()

    async def stop(self) -> None:
        for t in self._stale_timers.values():
            t.cancel()
        for sp in self.speakers.values():
            await sp.stop()

    def status(self) -> dict:
        return {
            "peers": {a: {"state": sp.session.state.value, **sp.session.counters} for a, sp in self.speakers.items()},
            "routes": {"mac": sum(len(p) for p in self.rib.macs.values()), "imet": len(self.rib.imets),
                       "prefix": sum(len(p) for p in self.rib.prefixes.values()), "local": len(self._advertised)},
            "counters": dict(self.counters),
        }

    def show(self) -> dict:
        """Every EVPN route we hold: what we originate and what each peer sent (best paths marked)."""
        local = [{"type": 3, "vni": vni, "rd": str(rd), "vtep": str(self.config.system_ip) if self.config else None}
                 for vni, rd in sorted(self._rds.items())]
        if self.config is not None and self.config.evpn is not None:
            local += [{"type": 5, "prefix": str(ep.prefix), "gateway_ip": str(ep.via),
                       "vtep": str(self.config.system_ip)} for ep in self.config.evpn.prefixes]
        local += [{"type": 2, "vni": r.vni, "mac": r.mac, "ip": r.ip, "rd": str(self._rds[r.vni]),
                   "seq": self._seq.get((r.vni, r.mac), 0)}
                  for r in sorted(self._advertised, key=LocalRoute.sort_key) if r.vni in self._rds]
        remote = []
        best_prefixes, ip_winners = self.rib.best_prefixes(), self.rib.ip_winners()
        for peer, routes in sorted(self._announced.items()):
            stale = self._stale.get(peer, set())
            for key, r in sorted(routes.items(), key=lambda kv: (type(kv[1]).__name__, kv[1].vtep, repr(kv[1]))):
                if isinstance(r, ImetRoute):
                    remote.append({"type": 3, "vni": r.vni, "vtep": r.vtep, "peer": peer})
                elif isinstance(r, PrefixRoute):
                    best = best_prefixes.get(r.prefix)
                    remote.append({"type": 5, "prefix": r.prefix, "gateway_ip": r.gateway, "vtep": r.vtep,
                                   "peer": peer, "best": best is not None and best.vtep == r.vtep})
                else:
                    remote.append({"type": 2, "vni": r.vni, "mac": r.mac, "ip": r.ip, "vtep": r.vtep, "seq": r.seq,
                                   "rd": r.rd, "peer": peer, "best": self.rib.in_use(r, ip_winners)})
                    if r.sticky:
                        remote[-1]["sticky"] = True
                if key in stale:
                    remote[-1]["stale"] = True
        return {"local": local, "received": remote}


def _unusable(r: RibRoute) -> str | None:
    """Why a received route cannot go into the kernel, or None. Next hops must be unicast IPv4;
    a type-2 MAC must be unicast and not all-zero (the all-zero MAC is the flood list's)."""
    vtep = IPv4Address(r.vtep) if r.vtep.count(".") == 3 else None
    if vtep is None or vtep.is_unspecified or vtep.is_multicast or vtep.is_loopback or vtep.is_reserved \
            or vtep == IPv4Address("255.255.255.255"):
        return f"next hop {r.vtep} is not a unicast IPv4 address"
    if isinstance(r, MacRoute) and (r.mac == ZERO_MAC or int(r.mac[:2], 16) & 1):
        return f"MAC {r.mac} is not a unicast host MAC"
    return None


def _ip_int(address: str) -> int:
    return int(IPv4Address(address))


def _vni_of_vxlan(ifname: str) -> int:
    return int(ifname.removeprefix("vx-"))


def _vni_of_bridge(ifname: str) -> int:
    return int(ifname.removeprefix("br-"))
