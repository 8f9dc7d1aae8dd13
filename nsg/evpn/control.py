"""The gateway's EVPN control plane, the driver: one BGP speaker (bgp/speaker.py) per configured
peer, the stale timers of graceful restart and the freeze timer of duplicate-MAC detection, and the
clock (time.monotonic, handed to the core with every input). Every decision is made by the sans-IO
core (routes.py): received UPDATEs, session losses, timer expiries and what the LAN side learns go
in; the UPDATEs, timers, alerts and "the kernel view changed" it returns are carried out here.

Alerts (effects.DuplicateMacAlert, effects.RouteLimitAlert) go to ``on_alert`` (the daemon sends each
to the controller as a channel Event: ``Event(ts, kind=alert.kind, detail=alert.detail())``); the
latest ``RECENT_ALERTS`` are kept for ``nsg status``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from bgp import fsm
from bgp.codec import UpdateResult
from bgp.speaker import Speaker
from nsg.dataplane.types import Fdb, Neigh, Route
from nsg.evpn.effects import Alert, Effects, StartFreezeTimer, StartStaleTimer
from nsg.evpn.local import IpEvent, LocalTable, MacEvent
from nsg.evpn.rib import EvpnRib
from nsg.evpn.routes import EvpnRoutes
from nsg.model import GatewayConfig
from nsg.model.status import BgpPeerStatus, EvpnStatus

log = logging.getLogger("nsg.evpn")

GR_RESTART_TIME = 120  # seconds we ask peers to keep our routes if our session drops (RFC 4724)
RECENT_ALERTS = 32  # alerts kept for status


class EvpnControl:
    """Speakers toward the configured peers; received routes into the RIB; our routes out: one
    type-3 per VNI, a type-5 per configured prefix and a type-2 per MAC (and MAC+IP) learned on
    the LAN side. ``changed``: called when fdb(), neighbors() or routes() answer differently.
    ``on_alert``: called with each alert for the operator (after it is logged and kept)."""

    def __init__(self, rib: EvpnRib, changed: Callable[[], None], on_alert: Callable[[Alert], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.core = EvpnRoutes(rib)
        self.changed = changed
        self.on_alert = on_alert
        self.clock = clock
        self.speakers: dict[str, Speaker] = {}
        self._stale_timers: dict[str, asyncio.TimerHandle] = {}
        self._freeze_timer: asyncio.TimerHandle | None = None
        self._stopping: set[asyncio.Task] = set()  # speakers of peers no longer configured
        self.alerts: deque[tuple[float, Alert]] = deque(maxlen=RECENT_ALERTS)  # (Unix time, alert)

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
        self._do(self.core.configure(cfg, self.clock()))
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
        self._do(self.core.learned(resync, events, self.clock()))

    def _on_update(self, peer: str, result: UpdateResult) -> None:
        self._do(self.core.received(peer, result, self.clock()))

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

    def _tick(self) -> None:
        self._freeze_timer = None
        self._do(self.core.tick(self.clock()))

    def _do(self, effects: Effects) -> None:
        for t in effects.timers:  # a start replaces the peer's running timer, a cancel just ends it
            if isinstance(t, StartFreezeTimer):
                if self._freeze_timer is not None:
                    self._freeze_timer.cancel()
                self._freeze_timer = asyncio.get_running_loop().call_later(t.seconds, self._tick)
                continue
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
        for a in effects.alerts:
            self.alerts.append((time.time(), a))
            if self.on_alert is not None:
                self.on_alert(a)
        if effects.changed:
            self.changed()

    # --- what the kernel gets -----------------------------------------------------------------------

    def fdb(self) -> frozenset[Fdb]:
        return self.core.fdb()

    def routes(self) -> frozenset[Route]:
        return self.core.routes()

    def neighbors(self) -> frozenset[Neigh]:
        return self.core.neighbors()

    @property
    def devices(self) -> frozenset[str]:
        """The devices every entry of fdb(), neighbors() and routes() is on (nsg.compose.EvpnView)."""
        return self.core.devices

    # --- sessions -------------------------------------------------------------------------------------

    def kick(self) -> None:
        """A tunnel came up: sessions still waiting to connect try at once."""
        for sp in self.speakers.values():
            sp.kick()

    async def stop(self) -> None:
        for t in self._stale_timers.values():
            t.cancel()
        self._stale_timers.clear()
        if self._freeze_timer is not None:
            self._freeze_timer.cancel()
            self._freeze_timer = None
        for sp in self.speakers.values():
            await sp.stop()

    # --- for the operator -----------------------------------------------------------------------------

    def status(self) -> EvpnStatus:
        return EvpnStatus(
            peers={a: BgpPeerStatus(state=sp.session.state.value, **sp.session.counters)
                   for a, sp in self.speakers.items()},
            routes=self.core.route_counts(),
            counters=dict(self.core.counters),
            frozen_macs=self.core.frozen(self.clock()),
            alerts=[{"kind": a.kind, "ts": round(ts, 3), **a.detail()} for ts, a in self.alerts])

    def show(self) -> dict:
        """Every EVPN route we hold: what we originate and what each peer sent (best paths marked)."""
        return self.core.show()
