"""The gateway's EVPN route logic, sans-IO: control.py drives it (speakers, timers) and does what it
returns. No sockets, no asyncio, no clock: every input is a method call, the time an argument.

Inputs, each returning ``Effects`` (effects.py: UPDATEs to send, timers, alerts, "the kernel view
changed"):

  configure(cfg, now)            a config with an evpn section: our type-3 / type-5 routes follow it
  received(peer, result, now)    one UPDATE from a peer after RFC 7606 handling (End-of-RIB too)
  peer_down(peer, restart_time)  the peer's session ended; ``restart_time``: its graceful-restart
                                 time if it does GR for EVPN and the session broke without a
                                 NOTIFICATION (RFC 4724 4.2), else None
  stale_expired(peer)            the timer a StartStaleTimer(peer) asked for ran out
  learned(resync, events, now)   what the bridges learned on their LAN ports (watch.py, local.py)
  tick(now)                      the timer a StartFreezeTimer asked for ran out

Queries: fdb(), neighbors(), routes() (what the kernel should hold: install.py, one frozenset per
change), ``devices`` (the devices those are on), announcements() (what a session gets when it comes
up), show(), route_counts(), frozen() and ``counters`` (for the operator).

State: ``peers`` holds each peer's Adj-RIB-In with its stale marks (received.py), ``rib`` every
usable path with best-path selection (rib.py), ``origin`` what we announce (originate.py), ``dup``
duplicate-MAC detection (mobility.py), ``view`` the kernel's entries (install.py).

What a gateway accepts, whatever the reflector passes on (it may be wrong, or replaced):
- routes the kernel would refuse, or that would become flood entries, never reach the RIB
  (``routes_refused``; received.py ``unusable``);
- per peer at most ``evpn.max_routes_per_peer`` paths, and through it at most
  ``evpn.max_routes_per_site`` with one next hop (that site's own ``evpn.remote_limits`` entry if
  the controller rendered one: what its LAN can honestly hold): new paths past either are refused
  (``routes_over_limit``), with an alert at 80 % and one at the limit (effects.RouteLimitAlert);
- a type-5 route only if ``evpn.remote_prefixes`` lists exactly that prefix for its next hop (the
  advertising site's system IP): not one inside it, around it, nor a default in pieces; refused
  ones stay in the Adj-RIB-In, out of the RIB, shown with the reason (``prefixes_refused``);
- MAC moves: duplicate-MAC detection (mobility.py); MAC+IP bindings: install.py rules (a)-(c).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from bgp.codec import Update, UpdateResult
from bgp.constants import EvpnRouteType
from nsg.dataplane.types import Fdb, Neigh, Route
from nsg.evpn.effects import CancelStaleTimer, Effects, Pending, RouteLimitAlert, StartFreezeTimer, StartStaleTimer
from nsg.evpn.install import KernelView
from nsg.evpn.local import IpEvent, LocalTable, MacEvent
from nsg.evpn.mobility import DuplicateMacs
from nsg.evpn.originate import Mac, Origination
from nsg.evpn.received import NlriKey, PeerRib, RibRoute, is_end_of_rib, rib_routes, unusable
from nsg.evpn.rib import EvpnRib, ImetRoute, MacRoute, PrefixRoute
from nsg.model import GatewayConfig
from nsg.model.evpn import MAX_ROUTES_PER_PEER, MAX_ROUTES_PER_SITE
from nsg.model.status import EvpnRouteCounts

log = logging.getLogger("nsg.evpn")

NOT_ALLOWED = "not in evpn.remote_prefixes for this next hop"
COUNTERS = ("local_learned", "local_withdrawn", "moved_away", "sticky_conflicts", "stale_kept", "stale_purged",
            "prefixes_refused", "vteps_refused", "routes_refused", "routes_over_limit", "duplicate_macs",
            "moves_ignored", "ip_refused_own_address", "ip_refused_local_neighbor", "ip_refused_lower_sequence")


@dataclass
class Touched:
    """What one input changed in the RIB or in what is ours: the view decides these again."""

    macs: set[Mac] = field(default_factory=set)
    ips: set[tuple[int, str]] = field(default_factory=set)
    flood: bool = False
    prefixes: bool = False

    def route(self, r: RibRoute) -> None:
        if isinstance(r, MacRoute):
            self.macs.add((r.vni, r.mac))
            if r.ip is not None:
                self.ips.add((r.vni, r.ip))
        elif isinstance(r, ImetRoute):
            self.flood = True
        else:
            self.prefixes = True


class EvpnRoutes:
    """All EVPN route state of the gateway; ``rib`` is shared with nobody but the driver's readers."""

    def __init__(self, rib: EvpnRib):
        self.rib = rib
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.dup = DuplicateMacs(self.counters)
        self.origin = Origination(self.counters, self.dup)
        self.peers: dict[str, PeerRib] = {}
        self.view = KernelView(rib, self.dup, self.origin.is_ours, self.origin.local.ips.get, self.counters)
        self.origin.where = self.view.mac_at.get
        self.site_limits: dict[str, int] = {}  # next hop -> its evpn.remote_limits entry
        self.now = 0.0  # the latest time an input brought
        self._freeze_timer: float | None = None  # when the freeze timer asked for runs out

    @property
    def config(self) -> GatewayConfig | None:
        return self.origin.config

    @property
    def local(self) -> LocalTable:
        return self.origin.local

    @property
    def devices(self) -> frozenset[str]:
        """The devices every entry of fdb(), neighbors() and routes() is on (the config's subnets)."""
        return self.view.devices

    def announcements(self) -> list[Update]:
        return self.origin.announcements()

    # --- inputs ---------------------------------------------------------------------------------

    def configure(self, cfg: GatewayConfig, now: float | None = None) -> Effects:
        """A config (with an evpn section): our RDs, type-3 and type-5 routes follow it; MACs learned
        in VNIs it no longer has are withdrawn; received type-5 routes are checked against its
        allow-list again; the kernel view is decided afresh. Peers are the driver's."""
        assert cfg.evpn is not None
        out, version = Pending(), self.view.version
        self._time(now)
        dm = cfg.evpn.duplicate_mac
        self.dup.configure(dm.max_moves, dm.window_s, dm.freeze_s)
        self.rib.local_vteps = frozenset({str(cfg.system_ip)})
        self.origin.configure(cfg, self.rib, out, self.now)
        self.origin.changed.clear()
        self.origin.changed_ips.clear()
        self.site_limits = {str(rl.system_ip): rl.max_routes for rl in cfg.evpn.remote_limits}
        allowed = {(str(rp.system_ip), str(rp.prefix)) for rp in cfg.evpn.remote_prefixes}
        for adj in self.peers.values():
            for key, r in adj.routes.items():
                if not isinstance(r, PrefixRoute):
                    continue
                if (r.vtep, r.prefix) in allowed and key in adj.refused:
                    del adj.refused[key]
                    self.rib.add(r)
                elif (r.vtep, r.prefix) not in allowed and key not in adj.refused:
                    adj.refused[key] = NOT_ALLOWED
                    self.counters["prefixes_refused"] += 1
                    self.rib.withdraw(r)
        self.view.rebuild(cfg)
        return self._done(out, version)

    def received(self, peer: str, result: UpdateResult, now: float) -> Effects:
        self._time(now)
        if is_end_of_rib(result):
            return self._purge_stale(peer, end_of_rib=True)  # whatever the peer did not send again is gone
        out, version = Pending(), self.view.version
        self._expire(out)
        add, gone = rib_routes(result, peer)
        adj = self.peers.setdefault(peer, PeerRib())
        if adj.stale:
            adj.stale.difference_update(key for key, _ in add)
        touched = Touched()
        for key, _r in gone:
            known = adj.pop(key)
            if known is not None:
                self._withdraw(known, touched)
        for key, r in add:
            held = key in adj.refused  # in the Adj-RIB-In, not in the RIB
            old = adj.pop(key)
            if old is not None and old != r and not held:
                self._withdraw(old, touched)  # an implicit withdraw: the same route with new attributes
            if not self._admit(peer, adj, key, r, old, out):
                continue
            adj.put(key, r)
            if isinstance(r, PrefixRoute) and not self._allowed(r):
                if not (held and old == r):  # counted once, not at every re-announcement
                    self.counters["prefixes_refused"] += 1
                    log.warning("EVPN type-5 route refused: %s", NOT_ALLOWED,
                                extra={"fields": {"peer": peer, "prefix": r.prefix, "next_hop": r.vtep}})
                adj.refused[key] = NOT_ALLOWED
                continue
            self.rib.add(r)
            touched.route(r)
        self._settle(touched, out, moves=True)
        return self._done(out, version)

    def peer_down(self, peer: str, restart_time: int | None) -> Effects:
        """The session to ``peer`` ended (or the peer left the config: ``restart_time`` None)."""
        out, version = Pending(), self.view.version
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
            return self._done(out, version)
        # without graceful restart, what the peer told us is gone with it
        adj = self.peers.pop(peer, None)
        touched = Touched()
        if adj is not None:
            if adj.restarting:
                out.timers.append(CancelStaleTimer(peer))
            for key, r in adj.routes.items():
                if key not in adj.refused:
                    self._withdraw(r, touched)
        self._settle(touched, out, moves=False)
        return self._done(out, version)

    def stale_expired(self, peer: str) -> Effects:
        """The peer's restart time ran out before its End-of-RIB: its stale routes go."""
        return self._purge_stale(peer, end_of_rib=False)

    def learned(self, resync: frozenset[int] | None, events: list[MacEvent | IpEvent], now: float) -> Effects:
        """A batch from the neighbour watch; ``resync``: the full state of those VNIs."""
        self._time(now)
        out, version = Pending(), self.view.version
        self._expire(out)
        self.origin.learned(resync, events, self.rib, out, self.now)
        self._settle(Touched(), out, moves=False)
        return self._done(out, version)

    def tick(self, now: float) -> Effects:
        """The freeze timer ran out: holds that are over end (their MACs go where their routes say)."""
        self._time(now)
        out, version = Pending(), self.view.version
        self._freeze_timer = None
        self._expire(out)
        return self._done(out, version)

    # --- the steps every input shares ------------------------------------------------------------

    def _time(self, now: float | None) -> None:
        if now is not None:
            self.now = max(self.now, now)

    def _expire(self, out: Pending) -> None:
        done = self.dup.expire(self.now)
        if done:
            # each goes where its routes say: a remote one to the best path, a local one frozen here
            # may be moved away now, one frozen elsewhere but on our LAN is announced now
            log.info("duplicate MAC hold over", extra={"fields": {"macs": len(done)}})
            self._settle(Touched(macs=set(done)), out, moves=True)

    def _admit(self, peer: str, adj: PeerRib, key: NlriKey, r: RibRoute, old: RibRoute | None,
               out: Pending) -> bool:
        why = unusable(r)
        if why is not None:
            # the kernel would refuse it (and with it every later apply), or it would turn into a
            # flood entry: never let it into the RIB (and what the route said before is gone)
            self.counters["routes_refused"] += 1
            log.warning("EVPN route refused: %s", why, extra={"fields": {"peer": peer, "route": repr(r)}})
            return False
        if old is not None and old.vtep == r.vtep:
            return True  # a route we hold, sent again: it takes no more room
        evpn = self.config.evpn if self.config is not None else None
        per_peer = evpn.max_routes_per_peer if evpn is not None else MAX_ROUTES_PER_PEER
        per_site = self.site_limits.get(r.vtep) or (evpn.max_routes_per_site if evpn is not None
                                                    else MAX_ROUTES_PER_SITE)
        fits, alerts = adj.room(r, per_peer, per_site)
        for site, n, limit, refusing in alerts:
            out.alerts.append(RouteLimitAlert(peer, site, n, limit, refusing))
            log.warning("EVPN routes at the limit: new ones refused" if refusing else "EVPN routes near the limit",
                        extra={"fields": {"peer": peer, "site": site, "routes": n, "limit": limit}})
        if not fits:
            self.counters["routes_over_limit"] += 1
        return fits

    def _allowed(self, r: PrefixRoute) -> bool:
        cfg = self.config
        if cfg is None or cfg.evpn is None:
            return False
        return any(str(rp.system_ip) == r.vtep and str(rp.prefix) == r.prefix for rp in cfg.evpn.remote_prefixes)

    def _purge_stale(self, peer: str, *, end_of_rib: bool) -> Effects:
        """End-of-RIB from the peer, or its restart time ran out: stale routes go."""
        out, version = Pending(), self.view.version
        adj = self.peers.get(peer)
        if adj is None:
            return self._done(out, version)
        if adj.restarting and end_of_rib:
            out.timers.append(CancelStaleTimer(peer))
        adj.restarting = False
        keys, adj.stale = adj.stale, set()
        touched = Touched()
        gone = 0
        for k in keys:
            held = k in adj.refused
            r = adj.pop(k)
            if r is not None:
                gone += 1
                if not held:
                    self._withdraw(r, touched)
        self._settle(touched, out, moves=False)
        if gone:
            self.counters["stale_purged"] += gone
        return self._done(out, version)

    def _withdraw(self, r: RibRoute, touched: Touched) -> None:
        self.rib.withdraw(r)
        touched.route(r)

    def _settle(self, touched: Touched, out: Pending, *, moves: bool) -> None:
        """After the RIB changed: remote MACs that moved (duplicate-MAC detection), local MACs that
        a remote route contests (originate.py), then the kernel view of everything touched."""
        if moves:
            self._remote_moves(touched.macs, out)
        self.origin.contest(self.rib, touched.macs, out, self.now)
        touched.macs |= self.origin.changed
        touched.ips |= self.origin.changed_ips
        self.origin.changed.clear()
        self.origin.changed_ips.clear()
        for vni, mac in touched.macs:  # the IPs bound through a MAC follow whether the MAC is ours
            touched.ips.update((vni, p.ip) for p in self.rib.paths(vni, mac) if p.ip is not None)
        self.view.macs(touched.macs)
        self.view.ips(touched.ips)
        if touched.flood:
            self.view.flood()
        if touched.prefixes:
            self.view.prefixes()

    def _remote_moves(self, macs: set[Mac], out: Pending) -> None:
        """RFC 7432 15.1 for MACs that are not on our LAN: an announcement that takes a MAC from the
        VTEP it is installed at (whose path is still there) to another is a move."""
        for m in macs:
            if self.origin.local.is_local(*m):
                continue  # ours or held back here: originate.contest counts those
            old, paths = self.view.mac_at.get(m), self.rib.paths(*m)
            if old is None or not paths or paths[0].vtep == old:
                continue
            if not any(p.vtep == old for p in paths):
                continue  # its old location was withdrawn: that is not a move
            _allowed, alert = self.dup.move(m, old, paths[0].vtep, self.now, here=False)
            if alert is not None:
                out.alerts.append(alert)

    def _done(self, out: Pending, version: int) -> Effects:
        for a in out.alerts:
            if a.kind == "duplicate-mac":
                log.warning("duplicate MAC: frozen", extra={"fields": a.detail()})
        due = self.dup.next_expiry()
        if due is not None and due != self._freeze_timer:
            self._freeze_timer = due
            out.timers.append(StartFreezeTimer(max(0.0, due - self.now)))
        if self.view.version != version:
            out.changed = True
        return out.effects(self.origin.announcements)

    # --- what the kernel gets ---------------------------------------------------------------------

    def fdb(self) -> frozenset[Fdb]:
        """Remote MACs (minus those that are ours now: a host that moved here from elsewhere) and the
        flood lists. With transport "esp" only VTEPs that are our peers' system IPs are used: those
        are the ones inside tunnels; a route naming any other would send tenant frames across the
        WAN in clear."""
        return self.view.fdb()

    def routes(self) -> frozenset[Route]:
        """Type-5 prefixes -> kernel routes via their gateway IP on the subnet's bridge (our own
        configured prefixes too: every site routes a prefix the same way)."""
        return self.view.routes()

    def neighbors(self) -> frozenset[Neigh]:
        """MAC+IP bindings -> neighbour entries (install.py: never our own addresses, never against
        our LAN, never to a lower sequence number)."""
        return self.view.neighbors()

    # --- for the operator -------------------------------------------------------------------------

    def route_counts(self) -> EvpnRouteCounts:
        mac = imet = prefix = 0
        for adj in self.peers.values():  # what was received, refused type-5 routes included
            for key in adj.routes:
                if key[0] == "mac":
                    mac += 1
                elif key[0] == "imet":
                    imet += 1
                else:
                    prefix += 1
        return EvpnRouteCounts(mac=mac, imet=imet, prefix=prefix, local=len(self.origin.advertised))

    def frozen(self, now: float | None = None) -> list[dict]:
        """MACs frozen by duplicate-MAC detection, for status (``now``: the driver's clock)."""
        now = self.now if now is None else now
        return [{"vni": vni, "mac": mac, "at": f.at, "sites": list(f.sites), "moves": f.moves,
                 "remaining_s": round(max(0.0, f.until - now), 1)}
                for (vni, mac), f in sorted(self.dup.frozen.items())]

    def show(self) -> dict:
        """Every EVPN route we hold: what we originate and what each peer sent (best paths marked,
        refused ones with the reason)."""
        remote = []
        best_prefixes = self.rib.best_prefixes()
        for peer, adj in sorted(self.peers.items()):
            for key, r in sorted(adj.routes.items(), key=lambda kv: (type(kv[1]).__name__, kv[1].vtep, repr(kv[1]))):
                if isinstance(r, ImetRoute):
                    remote.append({"type": EvpnRouteType.INCLUSIVE_MULTICAST.value, "vni": r.vni, "vtep": r.vtep,
                                   "peer": peer})
                elif isinstance(r, PrefixRoute):
                    best = best_prefixes.get(r.prefix)
                    remote.append({"type": EvpnRouteType.IP_PREFIX.value, "prefix": r.prefix, "gateway_ip": r.gateway,
                                   "vtep": r.vtep, "peer": peer,
                                   "best": key not in adj.refused and best is not None and best.vtep == r.vtep})
                    why = adj.refused.get(key) or (self.view.refused_prefixes.get(r.prefix) if remote[-1]["best"]
                                                   else None)
                    if why is not None:
                        remote[-1]["refused"] = why
                else:
                    remote.append({"type": EvpnRouteType.MAC_IP_ADVERTISEMENT.value, "vni": r.vni, "mac": r.mac,
                                   "ip": r.ip, "vtep": r.vtep, "seq": r.seq, "rd": r.rd, "peer": peer,
                                   "best": self._in_use(r)})
                    if r.sticky:
                        remote[-1]["sticky"] = True
                    why = self.view.ip_refusal(r)
                    if why is not None:
                        remote[-1]["refused"] = why
                    if self.dup.frozen_at((r.vni, r.mac)) is not None:
                        remote[-1]["frozen"] = True
                if key in adj.stale:
                    remote[-1]["stale"] = True
        return {"local": self.origin.show(), "received": remote}

    def _in_use(self, r: MacRoute) -> bool:
        """Whether the kernel follows this path: for a MAC-only path, that the MAC is installed at
        its VTEP; for a MAC+IP path, that the IP is bound to its MAC by it."""
        if r.ip is None:
            return self.view.mac_at.get((r.vni, r.mac)) == r.vtep
        return self.view.binding.get((r.vni, r.ip)) == r

