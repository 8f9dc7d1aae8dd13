"""The controller's BGP EVPN route reflector (RFC 4456), built on the BGP library the gateway uses too
(``bgp``: codec and session machine).

Clients (gateways) connect to it; what one client announces is reflected to every other, with
ORIGINATOR_ID set to the client's router id and our cluster id prepended to CLUSTER_LIST. Routes that
would loop (our router id as ORIGINATOR_ID or our cluster id already listed, or going back to their
originator) are not taken or not sent. A client that goes away takes its routes with it.

With a view (``rr_policy.ReflectorView``) each session is bound to one gateway by its source address,
its system IP, and the reflector passes on only what that gateway owns (``rr_check``): foreign routes,
withdrawals of routes it never announced, floods beyond its limits are refused route by route,
counted per client and reason, logged at a bounded rate, and queued as security events for the
controller (``on_security_event``). Without a view (``--client`` only) routes are not checked; the
loop rules and the limits still apply.

This module holds the sessions (accept, up, down, close) and the wiring; the parts:

- ``rr_rib.Rib``: the Adj-RIBs-In, the check's outcome applied, view changes, MAC freezes;
- ``rr_fanout.Fanout``: reflection, withdrawals, the chunked catch-up of a (re)connecting client;
- ``rr_limits.LimitGuard``: route-limit warnings, teardown and reconnect back-off;
- ``rr_events.EventDesk``: security events, logged and forwarded to the controller;
- ``rr_client``: the per-client record they share.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Coroutine
from ipaddress import IPv4Address
from typing import Any

from bgp import fsm
from bgp.codec import Notification
from bgp.constants import CeaseSubcode, ErrorCode, OpenSubcode
from bgp.speaker import Speaker, close_after_notification
from controller.rr_check import ClientState, Limits, Reason, Rules
from controller.rr_client import Client, Held
from controller.rr_events import EventDesk, SecurityHook
from controller.rr_fanout import Fanout
from controller.rr_limits import LimitGuard
from controller.rr_policy import ReflectorView, ViewError
from controller.rr_rib import Rib

__all__ = ["Client", "Held", "RouteReflector", "SecurityHook"]

log = logging.getLogger("controller.rr")

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # linux/in.h: bind to an address not (yet) on the box
RESTART_TIME = 120  # seconds clients keep our routes after our sessions break without a NOTIFICATION
TICK = 1.0  # seconds between the housekeeping rounds (event summaries, limit deadlines)


class RouteReflector:
    def __init__(self, asn: int, router_id: str, *, hold_time: int = 9, allowed: set[str] | None = None,
                 view: ReflectorView | None = None, limits: Limits | None = None,
                 on_security_event: SecurityHook | None = None):
        self.asn = asn
        self.router_id = router_id
        self.cluster_id = IPv4Address(router_id)
        self.hold_time = hold_time
        self.allowed = allowed  # client addresses we accept without a view; None: anyone in AS ``asn``
        self.limits = limits or Limits()
        self.clients: dict[str, Client] = {}
        self.counters = {"accepted": 0, "refused": 0, "replaced": 0, "reflected": 0, "loops_dropped": 0,
                         "too_big_dropped": 0, "events_dropped": 0}
        self.events = EventDesk(on_security_event, self._name, self.counters)
        self.guard = LimitGuard(self.limits, self.events.note, self._close)
        self.fanout = Fanout(self.clients, self.counters, self.limits, self.events.note, self._close)
        self.rib = Rib(self.cluster_id, self.clients, self.counters, self.limits, self.fanout, self.guard,
                       self.events.note)
        self._tasks: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()  # session stops under way (kept referenced)
        self.view: ReflectorView | None = None
        if view is not None:
            self.set_view(view)
        self._server: asyncio.AbstractServer | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self, host: str, port: int = 179) -> int:
        """Listen on ``host`` (the hub's system IP: clients arrive only through their tunnels). The
        address may not be on the box yet (the hub gateway puts it on lo once its config applies), so
        the socket binds with IP_FREEBIND."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        self._server = await asyncio.start_server(self._accept, sock=sock)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._housekeeping()), loop.create_task(self.events.forward())]
        return self._server.sockets[0].getsockname()[1]

    async def stop(self, restart: bool = False) -> None:
        """``restart``: close the sessions without a NOTIFICATION, so that clients keep the routes we
        gave them for our restart time (graceful restart); else a Cease to each."""
        if self._server is not None:
            self._server.close()
        for t in self._tasks:
            t.cancel()
        for c in list(self.clients.values()):
            if c.catch_up is not None:
                c.catch_up.cancel()
            await (c.speaker.drop() if restart else c.speaker.stop())

    def set_view(self, view: ReflectorView) -> None:
        """Take a new view: clients no longer in it go (Cease, Peer De-configured), the others' routes
        are checked again (what is no longer theirs is withdrawn, what was refused and is theirs now
        is taken)."""
        if view.asn != self.asn:
            raise ViewError(f"the view is for AS {view.asn}; this reflector runs AS {self.asn}")
        self.view, self.rib.rules = view, Rules.of(view)
        for address, c in list(self.clients.items()):
            own = view.clients.get(IPv4Address(address))
            if own is None:
                self._close(c, CeaseSubcode.PEER_DECONFIGURED, "no longer a client in the view")
            elif c.router_id is not None and own.bgp_id != c.router_id:
                self._close(c, CeaseSubcode.OTHER_CONFIGURATION_CHANGE, f"its router id is {own.bgp_id} now")
            else:
                c.state.ownership = own
                c.state.max_routes = own.max_routes or self.limits.max_routes
                self.rib.recheck(c)

    # --- sessions --------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[0]
        own = None
        if self.view is not None:
            with contextlib.suppress(ValueError):
                own = self.view.clients.get(IPv4Address(peer))
        if (self.view is not None and own is None) or (self.view is None and self.allowed is not None
                                                       and peer not in self.allowed):
            self.counters["refused"] += 1
            self.events.note(peer, Reason.NOT_A_CLIENT, 1, "connection")
            writer.close()
            return
        left = self.guard.backoff_left(peer, asyncio.get_running_loop().time())
        if left is not None:
            self.counters["refused"] += 1
            self.events.note(peer, Reason.RECONNECT_IN_BACKOFF, 1, f"{left:.0f} s left")
            # RFC 4486 section 4: Connection Rejected, before any OPEN
            writer.write(Notification(ErrorCode.CEASE, CeaseSubcode.CONNECTION_REJECTED).encode())
            close_after_notification(writer)
            return
        old = self.clients.get(peer)
        if old is not None:
            # The client connects again while we still hold its old session: it restarted (its hold
            # timer would tell us only seconds later). The old session and its routes go now.
            self.counters["replaced"] += 1
            self._state(old, "down")
            await old.speaker.stop()
        self.counters["accepted"] += 1
        others = frozenset(c.router_id for c in self.clients.values() if c.router_id)
        cfg = fsm.Config(self.asn, self.router_id, self.asn, hold_time=self.hold_time, passive=True,
                         min_hold_time=self.limits.min_hold_time, allow_zero_hold=False,
                         peer_id=own.bgp_id if own is not None else None,
                         refused_ids=others if own is None else frozenset())
        # graceful restart for EVPN: clients keep what we reflected while we restart (we forward nothing,
        # so no forwarding-state bit); the End-of-RIB follows the catch-up of a newcomer
        max_routes = (own.max_routes if own is not None else None) or self.limits.max_routes
        state = ClientState(peer, own, max_routes, self.limits.bucket(max_routes))
        client = Client(peer, Speaker(cfg, peer, restart_time=RESTART_TIME, hold_end_of_rib=True), state)
        client.speaker.on_update = lambda res, c=client: self.rib.update(c, res)
        client.speaker.on_state = lambda st, c=client: self._state(c, st)
        self.clients[peer] = client
        client.speaker.attach(reader, writer)

    def _state(self, client: Client, state: str) -> None:
        if state == "up":
            client.router_id = client.speaker.session.peer_id
            client.router_ip = IPv4Address(client.router_id) if client.router_id else None
            twin = next((c for c in self.clients.values() if c is not client and c.router_id == client.router_id
                         and c.speaker.session.state is fsm.State.ESTABLISHED), None)
            if twin is not None:  # two OPENs with one identifier raced past the check at accept
                self.events.note(client.address, Reason.BAD_BGP_IDENTIFIER, 1,
                                 f"{client.router_id} is {twin.address}'s")
                self._close(client, CeaseSubcode.CONNECTION_REJECTED, f"router id {client.router_id} is taken")
                return
            client.catch_up = asyncio.get_running_loop().create_task(self.fanout.catch_up(client))
            return
        if state != "down":
            return
        sent = client.speaker.session.last_sent
        if sent is not None and sent.code == ErrorCode.OPEN_MESSAGE:
            reason = {OpenSubcode.UNACCEPTABLE_HOLD_TIME: Reason.HOLD_TIME_REFUSED,
                      OpenSubcode.BAD_BGP_IDENTIFIER: Reason.BAD_BGP_IDENTIFIER}.get(sent.subcode)
            if reason is not None:
                self.events.note(client.address, reason, 1, "OPEN refused")
        if self.clients.get(client.address) is not client:
            return  # already replaced by a newer session from the same address
        self.clients.pop(client.address, None)
        if client.catch_up is not None:
            client.catch_up.cancel()
        self._spawn(client.speaker.stop())  # no retry timers for a passive end
        self.rib.drop(client)

    def _close(self, client: Client, subcode: int, why: str, data: bytes = b"") -> None:
        if client.closing:
            return
        client.closing = True
        log.warning("BGP client %s: closing the session: %s", client.address, why)
        self._spawn(client.speaker.stop(subcode, data, reason=why))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- housekeeping, status --------------------------------------------------------------------

    def _name(self, address: str) -> str | None:
        if self.view is None:
            return None
        with contextlib.suppress(ValueError):
            own = self.view.clients.get(IPv4Address(address))
            return own.name if own is not None else None
        return None

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            now = asyncio.get_running_loop().time()
            self.events.flush(now)
            for c in list(self.clients.values()):
                self.guard.check_over(c, now)
            self.rib.mobility.prune(now)
            self.guard.prune(now)

    def status(self) -> dict:
        view = None
        if self.view is not None:
            view = {"clients": len(self.view.clients), "asn": self.view.asn}
        return {
            "checked": self.view is not None, "view": view,
            "clients": {a: {"state": c.speaker.session.state.value, "routes": len(c.routes),
                            "max_routes": c.state.max_routes, "name": self._name(a),
                            "counters": dict(c.counters), "catching_up": c.catch_up is not None}
                        for a, c in self.clients.items()},
            "refused_by_reason": dict(self.rib.refused_by_reason),
            "security_events": [e.as_dict() for e in list(self.events.recent)[-32:]],
            "backoff": self.guard.backoff,
            **self.counters,
        }
