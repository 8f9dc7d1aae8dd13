"""What the route reflector sends: accepted routes to every other client (packed into as few UPDATEs as
fit, each encoded once), withdrawals copied octet for octet from what was announced, and the catch-up
of a (re)connecting client in chunks that yield to the event loop, so that the other sessions'
keepalives and updates go on meanwhile; its End-of-RIB follows the last chunk.

A route never goes back to its originator (RFC 4456 section 8), and a client that does not read what
we send is closed before its queue eats the reflector's memory.
"""

from __future__ import annotations

import asyncio
import logging
from ipaddress import IPv4Address

from bgp import fsm
from bgp.attributes import MpReachNlri, RawNlri
from bgp.codec import Update
from bgp.constants import MAX_MESSAGE_LEN, Afi, CeaseSubcode, Safi
from controller.rr_check import Limits, Reason
from controller.rr_client import Client, Held
from controller.rr_limits import Close, Note

log = logging.getLogger("controller.rr")

NLRI_ROOM = MAX_MESSAGE_LEN - 64  # octets per reflected UPDATE, below the 4096 limit with headroom


class Fanout:
    def __init__(self, clients: dict[str, Client], counters: dict[str, int], limits: Limits, note: Note,
                 close: Close) -> None:
        self.clients = clients
        self.counters = counters
        self.limits = limits
        self.note = note
        self.close = close

    def reflect(self, source: Client, out: Update, nlri: list, originator: IPv4Address) -> None:
        """Several routes with one set of attributes: as few UPDATEs as fit, each encoded once."""
        reach = out.mp_reach
        assert reach is not None
        rest = tuple(a for a in out.attributes if not isinstance(a, MpReachNlri))
        base = len(Update(attributes=(MpReachNlri(reach.afi, reach.safi, reach.next_hop, ()), *rest)).encode())
        groups, too_big = chunks(nlri, MAX_MESSAGE_LEN - base)
        self.counters["too_big_dropped"] += too_big
        for chunk in groups:
            upd = Update(attributes=(MpReachNlri(reach.afi, reach.safi, reach.next_hop, tuple(chunk)), *rest))
            self.fan_out(source, upd.encode(), originator)

    def reflect_withdraw(self, source: Client, held: list[Held]) -> None:
        nlri = [RawNlri(Afi.L2VPN, Safi.EVPN, h.wire) for h in held]  # as announced, octet for octet
        for chunk in chunks(nlri, NLRI_ROOM)[0]:
            self.fan_out(source, Update.withdraw_evpn(tuple(chunk)).encode(), None)

    def fan_out(self, source: Client, data: bytes, originator: IPv4Address | None) -> None:
        for other in list(self.clients.values()):
            if other is not source:
                self.send(other, data, originator)

    def send(self, to: Client, data: bytes, originator: IPv4Address | None) -> None:
        if to.closing or to.speaker.session.state is not fsm.State.ESTABLISHED:
            return
        if originator is not None and originator == to.router_ip:
            self.counters["loops_dropped"] += 1  # RFC 4456 section 8: never back to its originator
            return
        to.speaker.send(data)
        self.counters["reflected"] += 1
        if to.speaker.buffered() > self.limits.max_send_buffer:
            self.note(to.address, Reason.SEND_BUFFER_OVERFLOW, 1, f"{to.speaker.buffered()} octets queued")
            self.close(to, CeaseSubcode.OUT_OF_RESOURCES, "it does not read what we send", b"")

    async def catch_up(self, client: Client) -> None:
        """Send the newcomer every other client's routes, a chunk at a time, then the End-of-RIB. Each
        route is looked up when it is sent: one withdrawn or replaced meanwhile went out live already."""
        sp, sent = client.speaker, 0
        for other in list(self.clients.values()):
            if other is client:
                continue
            for key in list(other.routes):
                if sp.session.state is not fsm.State.ESTABLISHED or client.closing:
                    return
                if self.clients.get(other.address) is not other:
                    break  # that client left; its withdrawals went out live
                held = other.routes.get(key)
                if held is None:
                    continue
                self.send(client, held.data, held.originator)
                sent += 1
                if sent % self.limits.catch_up_chunk == 0:
                    await asyncio.sleep(0)
                    if sp.buffered() > self.limits.max_send_buffer // 4:
                        await sp.drain()
        client.catch_up = None
        sp.send_end_of_rib()
        log.info("BGP client %s caught up: %d routes", client.address, sent)


def chunks(nlri: list, room: int) -> tuple[list[list], int]:
    """NLRI packed into groups whose encoding fits ``room`` octets, and how many fit nowhere."""
    groups: list[list] = []
    cur: list = []
    used = too_big = 0
    for n in nlri:
        size = len(n.encode())
        if size > room:
            too_big += 1
            continue
        if cur and used + size > room:
            groups.append(cur)
            cur, used = [], 0
        cur.append(n)
        used += size
    if cur:
        groups.append(cur)
    return groups, too_big
