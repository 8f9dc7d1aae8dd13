"""The gateway's EVPN control plane, the driver: one BGP speaker (bgp/speaker.py) per configured
peer, and the stale timers of graceful restart. Every decision is made by the sans-IO core
(routes.py): received UPDATEs, session losses, timer expiries and what the LAN side learns go in;
the UPDATEs, timers and "the kernel view changed" it returns are carried out here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bgp import fsm
from bgp.codec import UpdateResult
from bgp.speaker import Speaker
from nsg.dataplane.types import Fdb, Neigh, Route
from nsg.evpn.effects import Effects, StartStaleTimer
from nsg.evpn.local import IpEvent, LocalTable, MacEvent
from nsg.evpn.rib import EvpnRib
from nsg.evpn.routes import EvpnRoutes
from nsg.model import GatewayConfig
from nsg.model.status import BgpPeerStatus, EvpnStatus

log = logging.getLogger("nsg.evpn")

GR_RESTART_TIME = 120  # seconds we ask peers to keep our routes if our session drops (RFC 4724)


class EvpnControl:
    """Speakers toward the configured peers; received routes into the RIB; our routes out: one
    type-3 per VNI, a type-5 per configured prefix and a type-2 per MAC (and MAC+IP) learned on
    the LAN side. ``changed``: called when fdb(), neighbors() or routes() may answer differently."""

    def __init__(self, rib: EvpnRib, changed: Callable[[], None]):
        self.core = EvpnRoutes(rib)
        self.changed = changed
        self.speakers: dict[str, Speaker] = {}
        self._stale_timers: dict[str, asyncio.TimerHandle] = {}
        self._stopping: set[asyncio.Task] = set()  # speakers of peers no longer configured

    @property
    def rib(self) -> EvpnRib:
        return self.core.rib

    @property
    def config(self) -> GatewayConfig | None:
        return self.core.config

    @property
    def local(self) -> LocalTable:
        return self.core.local

    @property
    def counters(self) -> dict[str, int]:
        return self.core.counters

    # --- inputs -----------------------------------------------------------------------------------

    def apply(self, cfg: GatewayConfig, local: str) -> None:
        """(Re)announce our routes for this config; start speakers toward new peers, stop the others."""
        assert cfg.evpn is not None
        self._do(self.core.configure(cfg))
        sysip = str(cfg.system_ip)
        overlay = {str(p.system_ip) for p in cfg.peers}
        wanted = {str(p.address) for p in cfg.evpn.peers}
        for addr in [a for a in self.speakers if a not in wanted]:
            sp = self.speakers.pop(addr)
            task = asyncio.get_running_loop().create_task(sp.stop())
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)
            self._do(self.core.peer_down(addr, restart_time=None))
        for peer in cfg.evpn.peers:
            addr = str(peer.address)
            if addr in self.speakers:
                continue
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
            sp.announce = self.core.announcements()
            sp.start()

    def on_local(self, resync: frozenset[int] | None, events: list[MacEvent | IpEvent]) -> None:
        """A batch from the neighbour watch; ``resync``: the full state of those VNIs."""
        self._do(self.core.learned(resync, events))

    def _on_update(self, peer: str, result: UpdateResult) -> None:
        self._do(self.core.received(peer, result))

    def _state(self, peer: str, state: str) -> None:
        if state != "down":
            return
        sp = self.speakers.get(peer)
        # graceful restart only if the peer offered it for EVPN and the session broke without a
        # NOTIFICATION (RFC 4724 4.2; RFC 8538's N bit is not negotiated)
        restart = sp.peer_restart_time if sp is not None and not sp.notified else None
        self._do(self.core.peer_down(peer, restart_time=restart))

    def _stale_expired(self, peer: str) -> None:
        self._stale_timers.pop(peer, None)
        self._do(self.core.stale_expired(peer))

    def _do(self, effects: Effects) -> None:
        for t in effects.timers:  # a start replaces the peer's running timer, a cancel just ends it
            old = self._stale_timers.pop(t.peer, None)
            if old is not None:
                old.cancel()
            if isinstance(t, StartStaleTimer):
                self._stale_timers[t.peer] = asyncio.get_running_loop().call_later(
                    t.seconds, self._stale_expired, t.peer)
        for sp in self.speakers.values():
            if effects.announce is not None:
                sp.announce = list(effects.announce)
            for upd in effects.send:
                sp.send(upd)
        if effects.changed:
            self.changed()

    # --- what the kernel gets -----------------------------------------------------------------------

    def fdb(self) -> frozenset[Fdb]:
        return self.core.fdb()

    def routes(self) -> frozenset[Route]:
        return self.core.routes()

    def neighbors(self) -> frozenset[Neigh]:
        return self.core.neighbors()

    # --- sessions -------------------------------------------------------------------------------------

    def kick(self) -> None:
        """A tunnel came up: sessions still waiting to connect try at once."""
        for sp in self.speakers.values():
            sp.kick()

    async def stop(self) -> None:
        for t in self._stale_timers.values():
            t.cancel()
        self._stale_timers.clear()
        for sp in self.speakers.values():
            await sp.stop()

    # --- for the operator -----------------------------------------------------------------------------

    def status(self) -> EvpnStatus:
        return EvpnStatus(
            peers={a: BgpPeerStatus(state=sp.session.state.value, **sp.session.counters)
                   for a, sp in self.speakers.items()},
            routes=self.core.route_counts(),
            counters=dict(self.core.counters))

    def show(self) -> dict:
        """Every EVPN route we hold: what we originate and what each peer sent (best paths marked)."""
        return self.core.show()
