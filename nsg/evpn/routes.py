"""The gateway's EVPN route logic, sans-IO: control.py drives it (speakers, timers) and does what it
returns. No sockets, no asyncio, no clock: every input is a method call, every output is data.

Inputs, each returning ``Effects`` (effects.py: UPDATEs to send, timers, "the kernel view changed"):

  configure(cfg)                 a config with an evpn section: our type-3 / type-5 routes follow it
  received(peer, result)         one UPDATE from a peer after RFC 7606 handling (End-of-RIB too)
  peer_down(peer, restart_time)  the peer's session ended; ``restart_time``: its graceful-restart
                                 time if it does GR for EVPN and the session broke without a
                                 NOTIFICATION (RFC 4724 4.2), else None
  stale_expired(peer)            the timer a StartStaleTimer(peer) asked for ran out
  learned(resync, events)        what the bridges learned on their LAN ports (watch.py, local.py)

Queries: fdb(), neighbors(), routes() (what the kernel should hold), announcements() (what a
session gets when it comes up), show(), route_counts() and ``counters`` (for the operator).

State: ``peers`` holds each peer's Adj-RIB-In with its stale marks (received.py), ``rib`` every
usable path with best-path selection (rib.py), ``origin`` what we announce (originate.py). None of
today's decisions needs the time; one that will (e.g. "N moves in M seconds") takes ``now`` as an
argument of the input it belongs to, never from a clock.
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Address, IPv4Network

from bgp.codec import Update, UpdateResult
from bgp.constants import EvpnRouteType
from nsg.dataplane.desired import bridge_name, vxlan_name
from nsg.dataplane.types import ZERO_MAC, Fdb, Neigh, Route
from nsg.evpn.effects import CancelStaleTimer, Effects, Pending, StartStaleTimer
from nsg.evpn.local import IpEvent, LocalTable, MacEvent
from nsg.evpn.originate import Mac, Origination
from nsg.evpn.received import PeerRib, RibRoute, is_end_of_rib, rib_routes, unusable
from nsg.evpn.rib import EvpnRib, ImetRoute, MacRoute, PrefixRoute
from nsg.model import GatewayConfig
from nsg.model.status import EvpnRouteCounts

log = logging.getLogger("nsg.evpn")

PREFIX_METRIC = 50  # routes from EVPN type-5 routes (below the uplinks' default routes' 100+)


class EvpnRoutes:
    """All EVPN route state of the gateway; ``rib`` is shared with nobody but the driver's readers."""

    def __init__(self, rib: EvpnRib):
        self.rib = rib
        self.counters = {"local_learned": 0, "local_withdrawn": 0, "moved_away": 0, "sticky_conflicts": 0,
                         "stale_kept": 0, "stale_purged": 0, "prefixes_refused": 0, "vteps_refused": 0,
                         "routes_refused": 0}
        self.origin = Origination(self.counters)
        self.peers: dict[str, PeerRib] = {}
        self._refused_prefixes: set[str] = set()  # type-5 prefixes not installed (each counted once)

    @property
    def config(self) -> GatewayConfig | None:
        return self.origin.config

    @property
    def local(self) -> LocalTable:
        return self.origin.local

    def announcements(self) -> list[Update]:
        return self.origin.announcements()

    # --- inputs ---------------------------------------------------------------------------------

    def configure(self, cfg: GatewayConfig) -> Effects:
        """A config (with an evpn section): our RDs, type-3 and type-5 routes follow it; MACs learned
        in VNIs it no longer has are withdrawn. Peers are the driver's (it reports their sessions)."""
        assert cfg.evpn is not None
        out = Pending()
        routes_before = self.routes()
        self.rib.local_vteps = frozenset({str(cfg.system_ip)})
        self.origin.configure(cfg, self.rib, out)
        if self.routes() != routes_before:  # e.g. our own configured prefixes: the dataplane follows
            out.changed = True
        return self._done(out)

    def received(self, peer: str, result: UpdateResult) -> Effects:
        if is_end_of_rib(result):
            return self._purge_stale(peer, end_of_rib=True)  # whatever the peer did not send again is gone
        out = Pending()
        add, gone = rib_routes(result, peer)
        adj = self.peers.setdefault(peer, PeerRib())
        if adj.stale:
            adj.stale.difference_update(key for key, _ in add)
        touched: set[Mac] = set()  # MACs whose paths changed
        for key, _r in gone:
            known = adj.routes.pop(key, None)
            if known is not None:
                self._withdraw(known, touched)
        for key, r in add:
            old = adj.routes.pop(key, None)
            if old is not None and old != r:
                self._withdraw(old, touched)  # an implicit withdraw: the same route with new attributes
            why = unusable(r)
            if why is not None:
                # the kernel would refuse it (and with it every later apply), or it would turn into a
                # flood entry: never let it into the RIB (and what the route said before is gone)
                self.counters["routes_refused"] += 1
                log.warning("EVPN route refused: %s", why, extra={"fields": {"peer": peer, "route": repr(r)}})
                continue
            adj.routes[key] = r
            self.rib.add(r)
            if isinstance(r, MacRoute):
                touched.add((r.vni, r.mac))
        self.origin.contest(self.rib, touched, out)
        if add or gone:
            out.changed = True
        return self._done(out)

    def peer_down(self, peer: str, restart_time: int | None) -> Effects:
        """The session to ``peer`` ended (or the peer left the config: ``restart_time`` None)."""
        out = Pending()
        adj = self.peers.get(peer)
        if restart_time and adj is not None and adj.routes:
            # RFC 4724 4.2: the peer does graceful restart and the session just broke (no NOTIFICATION):
            # keep its routes, marked stale, for its restart time; forwarding goes on meanwhile
            adj.stale.update(adj.routes)
            adj.restarting = True
            self.counters["stale_kept"] += len(adj.routes)
            out.timers.append(StartStaleTimer(peer, restart_time))
            log.info("BGP peer down, keeping its routes (graceful restart)",
                     extra={"fields": {"peer": peer, "routes": len(adj.routes), "for_s": restart_time}})
            return self._done(out)
        # without graceful restart, what the peer told us is gone with it
        adj = self.peers.pop(peer, None)
        touched: set[Mac] = set()
        if adj is not None:
            if adj.restarting:
                out.timers.append(CancelStaleTimer(peer))
            for r in adj.routes.values():
                self._withdraw(r, touched)
        self.origin.contest(self.rib, touched, out)
        out.changed = True
        return self._done(out)

    def stale_expired(self, peer: str) -> Effects:
        """The peer's restart time ran out before its End-of-RIB: its stale routes go."""
        return self._purge_stale(peer, end_of_rib=False)

    def learned(self, resync: frozenset[int] | None, events: list[MacEvent | IpEvent]) -> Effects:
        """A batch from the neighbour watch; ``resync``: the full state of those VNIs."""
        out = Pending()
        self.origin.learned(resync, events, self.rib, out)
        return self._done(out)

    def _purge_stale(self, peer: str, *, end_of_rib: bool) -> Effects:
        """End-of-RIB from the peer, or its restart time ran out: stale routes go."""
        out = Pending()
        adj = self.peers.get(peer)
        if adj is None:
            return self._done(out)
        if adj.restarting and end_of_rib:
            out.timers.append(CancelStaleTimer(peer))
        adj.restarting = False
        keys, adj.stale = adj.stale, set()
        gone = [adj.routes.pop(k) for k in keys if k in adj.routes]
        touched: set[Mac] = set()
        for r in gone:
            self._withdraw(r, touched)
        self.origin.contest(self.rib, touched, out)
        if gone:
            self.counters["stale_purged"] += len(gone)
            out.changed = True
        return self._done(out)

    def _withdraw(self, r: RibRoute, touched: set[Mac]) -> None:
        self.rib.withdraw(r)
        if isinstance(r, MacRoute):
            touched.add((r.vni, r.mac))

    def _done(self, out: Pending) -> Effects:
        return out.effects(self.origin.announcements)

    # --- what the kernel gets ---------------------------------------------------------------------

    def fdb(self) -> frozenset[Fdb]:
        """The RIB's entries, minus MACs that are ours now (a host that moved here from elsewhere).
        With transport "esp" only VTEPs that are our peers' system IPs are used: those are the ones
        inside tunnels; a route naming any other would send tenant frames across the WAN in clear."""
        ours = {(vxlan_name(vni), mac) for vni, mac in self.origin.ours()}
        entries = [f for f in self.rib.fdb() if f.mac == ZERO_MAC or (f.ifname, f.mac) not in ours]
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
            out.add(Route(prefix, bridge_name(home.vni), gw, None, PREFIX_METRIC))
        return frozenset(out)

    def neighbors(self) -> frozenset[Neigh]:
        """MAC+IP routes -> neighbour entries, only for host addresses of the VNI's own subnet other
        than its gateway (an entry for our gateway address would hijack the subnet's next hop)."""
        hosts = {bridge_name(s.vni): s for s in self.config.subnets} if self.config is not None else {}
        ours = {(bridge_name(vni), mac) for vni, mac in self.origin.ours()}
        out = set()
        for n in self.rib.neighbors():
            subnet = hosts.get(n.ifname)
            ip = IPv4Address(n.ip) if n.ip.count(".") == 3 else None
            if subnet is None or ip is None or ip not in subnet.cidr or ip in (
                    subnet.gateway, subnet.cidr.network_address, subnet.cidr.broadcast_address):
                continue
            if (n.ifname, n.mac) not in ours:
                out.add(Neigh(n.ifname, n.ip, n.mac))
        return frozenset(out)

    # --- for the operator -----------------------------------------------------------------------

    def route_counts(self) -> EvpnRouteCounts:
        return EvpnRouteCounts(mac=sum(len(p) for p in self.rib.macs.values()), imet=len(self.rib.imets),
                               prefix=sum(len(p) for p in self.rib.prefixes.values()),
                               local=len(self.origin.advertised))

    def show(self) -> dict:
        """Every EVPN route we hold: what we originate and what each peer sent (best paths marked)."""
        remote = []
        best_prefixes, ip_winners = self.rib.best_prefixes(), self.rib.ip_winners()
        for peer, adj in sorted(self.peers.items()):
            for key, r in sorted(adj.routes.items(), key=lambda kv: (type(kv[1]).__name__, kv[1].vtep, repr(kv[1]))):
                if isinstance(r, ImetRoute):
                    remote.append({"type": EvpnRouteType.INCLUSIVE_MULTICAST.value, "vni": r.vni, "vtep": r.vtep,
                                   "peer": peer})
                elif isinstance(r, PrefixRoute):
                    best = best_prefixes.get(r.prefix)
                    remote.append({"type": EvpnRouteType.IP_PREFIX.value, "prefix": r.prefix, "gateway_ip": r.gateway,
                                   "vtep": r.vtep, "peer": peer, "best": best is not None and best.vtep == r.vtep})
                else:
                    remote.append({"type": EvpnRouteType.MAC_IP_ADVERTISEMENT.value, "vni": r.vni, "mac": r.mac,
                                   "ip": r.ip, "vtep": r.vtep, "seq": r.seq, "rd": r.rd, "peer": peer,
                                   "best": self.rib.in_use(r, ip_winners)})
                    if r.sticky:
                        remote[-1]["sticky"] = True
                if key in adj.stale:
                    remote[-1]["stale"] = True
        return {"local": self.origin.show(), "received": remote}
