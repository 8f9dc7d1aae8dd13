"""The controller's BGP EVPN route reflector (RFC 4456), built on the BGP library the gateway uses too
(``bgp``: codec and session machine).

Clients (gateways) connect to it; what one client announces is reflected to every other, with
ORIGINATOR_ID set to the client's router id (if absent) and our cluster id prepended to
CLUSTER_LIST. Routes that would loop (our cluster id already listed, or going back to their
originator) are not sent. A client that goes away takes its routes with it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address

from bgp import fsm
from bgp.attributes import ClusterList, MpReachNlri, MpUnreachNlri, OriginatorId
from bgp.codec import Update, UpdateResult
from bgp.constants import AttrType
from bgp.evpn_nlri import encode_evpn_nlri
from bgp.speaker import Speaker

log = logging.getLogger("controller.rr")

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # linux/in.h: bind to an address not (yet) on the box
RESTART_TIME = 120  # seconds clients keep our routes after our sessions break without a NOTIFICATION


@dataclass
class Client:
    address: str
    speaker: Speaker
    router_id: str | None = None
    routes: dict[bytes, Update] = field(default_factory=dict)  # encoded NLRI -> the update that carried it


class RouteReflector:
    def __init__(self, asn: int, router_id: str, *, hold_time: int = 9, allowed: set[str] | None = None):
        self.asn = asn
        self.router_id = router_id
        self.cluster_id = IPv4Address(router_id)
        self.hold_time = hold_time
        self.allowed = allowed  # client addresses we accept; None: anyone in AS ``asn``
        self.clients: dict[str, Client] = {}
        self.counters = {"accepted": 0, "refused": 0, "replaced": 0, "reflected": 0, "loops_dropped": 0}
        self._server: asyncio.AbstractServer | None = None

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
        return self._server.sockets[0].getsockname()[1]

    async def stop(self, restart: bool = False) -> None:
        """``restart``: close the sessions without a NOTIFICATION, so that clients keep the routes we
        gave them for our restart time (graceful restart); else a Cease to each."""
        if self._server is not None:
            self._server.close()
        for c in list(self.clients.values()):
            await (c.speaker.drop() if restart else c.speaker.stop())

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[0]
        if self.allowed is not None and peer not in self.allowed:
            self.counters["refused"] += 1
            if self.counters["refused"] <= 10 or self.counters["refused"] % 1000 == 0:  # remote input: bounded
                log.warning("BGP connection from %s refused: not a client (%d refused so far)", peer,
                            self.counters["refused"])
            writer.close()
            return
        old = self.clients.get(peer)
        if old is not None:
            # The client connects again while we still hold its old session: it restarted (its hold
            # timer would tell us only seconds later). The old session and its routes go now.
            self.counters["replaced"] += 1
            self._state(old, "down")
            await old.speaker.stop()
        self.counters["accepted"] += 1
        cfg = fsm.Config(self.asn, self.router_id, self.asn, hold_time=self.hold_time, passive=True)
        # graceful restart for EVPN: clients keep what we reflected while we restart (we forward nothing,
        # so no forwarding-state bit); the End-of-RIB follows the catch-up of a newcomer
        client = Client(peer, Speaker(cfg, peer, restart_time=RESTART_TIME))
        client.speaker.on_update = lambda res, c=client: self._update(c, res)
        client.speaker.on_state = lambda st, c=client: self._state(c, st)
        self.clients[peer] = client
        client.speaker.attach(reader, writer)

    # --- reflection -------------------------------------------------------------------------------

    def _state(self, client: Client, state: str) -> None:
        if state == "up":
            client.router_id = client.speaker.session.peer_id
            for other in self.clients.values():  # catch the newcomer up
                if other is not client:
                    for upd in other.routes.values():
                        self._send(client, upd, other)
        elif state == "down":
            if self.clients.get(client.address) is not client:
                return  # already replaced by a newer session from the same address
            self.clients.pop(client.address, None)
            asyncio.get_running_loop().create_task(client.speaker.stop())  # no retry timers for a passive end
            gone = list(client.routes.values())
            client.routes.clear()
            for upd in gone:
                withdraw = Update(attributes=(MpUnreachNlri(upd.mp_reach.afi, upd.mp_reach.safi,
                                                            upd.mp_reach.nlri),))
                for other in self.clients.values():
                    other.speaker.send(withdraw)

    def _update(self, client: Client, result: UpdateResult) -> None:
        upd = result.update
        if upd is None:
            # treat-as-withdraw: take back whatever this client had announced with these routes
            for nlri in result.withdraw_nlri:
                client.routes.pop(self._key(nlri), None)
            if result.withdraw_nlri:
                self._reflect(client, Update(attributes=(MpUnreachNlri(25, 70, tuple(result.withdraw_nlri)),)))
            return
        if upd.mp_reach is None and upd.mp_unreach is not None and not upd.mp_unreach.nlri:
            return  # the client's End-of-RIB: a marker of its session, not news for the others
        if upd.mp_reach is not None:
            for nlri in upd.mp_reach.nlri:
                client.routes[self._key(nlri)] = replace(upd, attributes=tuple(
                    a if not isinstance(a, MpReachNlri) else replace(a, nlri=(nlri,)) for a in upd.attributes))
        if upd.mp_unreach is not None:
            for nlri in upd.mp_unreach.nlri:
                client.routes.pop(self._key(nlri), None)
        self._reflect(client, upd)

    @staticmethod
    def _key(nlri: object) -> bytes:
        return encode_evpn_nlri((nlri,)) if hasattr(nlri, "rd") else repr(nlri).encode()

    def _reflect(self, source: Client, upd: Update) -> None:
        for other in self.clients.values():
            if other is not source:
                self._send(other, upd, source)

    def _send(self, to: Client, upd: Update, source: Client) -> None:
        cl = upd.get(AttrType.CLUSTER_LIST)
        if cl is not None and self.cluster_id in cl.cluster_ids:
            self.counters["loops_dropped"] += 1
            return
        orig = upd.get(AttrType.ORIGINATOR_ID)
        originator = orig.router_id if orig is not None else IPv4Address(source.speaker.session.peer_id or
                                                                         source.address)
        if to.speaker.session.peer_id and originator == IPv4Address(to.speaker.session.peer_id):
            self.counters["loops_dropped"] += 1
            return
        attrs = [a for a in upd.propagated().attributes
                 if a.type_code not in (AttrType.ORIGINATOR_ID, AttrType.CLUSTER_LIST)]
        if upd.mp_reach is not None:
            attrs.append(OriginatorId(originator))
            attrs.append(ClusterList((self.cluster_id, *(cl.cluster_ids if cl else ()))))
        to.speaker.send(replace(upd, attributes=tuple(attrs)))
        self.counters["reflected"] += 1

    def status(self) -> dict:
        return {"clients": {a: {"state": c.speaker.session.state.value, "routes": len(c.routes)}
                            for a, c in self.clients.items()}, **self.counters}
