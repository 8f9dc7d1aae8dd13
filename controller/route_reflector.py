"""The controller's BGP EVPN route reflector (RFC 4456), built on the BGP library the gateway uses too
(``bgp``: codec and session machine).

Clients (gateways) connect to it; what one client announces is reflected to every other, with
ORIGINATOR_ID set to the client's router id and our cluster id prepended to CLUSTER_LIST. Routes that
would loop (our cluster id already listed, or going back to their originator) are not sent. A client
that goes away takes its routes with it.

With a view (``rr_policy.ReflectorView``) each session is bound to one gateway by its source address,
its system IP, and the reflector passes on only what that gateway owns (``rr_check``): foreign routes,
withdrawals of routes it never announced, floods beyond its limits are refused route by route,
counted per client and reason, logged at a bounded rate, and queued as security events for the
controller (``on_security_event``). Without a view (``--client`` only) routes are not checked; the
limits still apply.

A (re)connecting client is caught up in chunks that yield to the event loop, so the other sessions'
keepalives and updates go on meanwhile; its End-of-RIB follows the last chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address

from bgp import fsm
from bgp.attributes import ClusterList, MpReachNlri, OriginatorId, RawNlri
from bgp.codec import Notification, Update, UpdateResult, decode
from bgp.constants import MAX_MESSAGE_LEN, Afi, AttrType, CeaseSubcode, ErrorAction, ErrorCode, OpenSubcode, Safi
from bgp.errors import LocalBgpError
from bgp.evpn_nlri import EvpnRoute, MacIpRoute
from bgp.speaker import Speaker
from controller.rr_check import (
    OWNERSHIP_REASONS,
    ClientState,
    Limits,
    Reason,
    Rules,
    SecurityEvent,
    SecurityLog,
    check_update,
    describe,
    nlri_of,
    ownership_reason,
    route_key,
    sequence_of,
    single,
)
from controller.rr_mobility import Mobility
from controller.rr_policy import ReflectorView, ViewError

log = logging.getLogger("controller.rr")

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # linux/in.h: bind to an address not (yet) on the box
RESTART_TIME = 120  # seconds clients keep our routes after our sessions break without a NOTIFICATION
TICK = 1.0  # seconds between the housekeeping rounds (event summaries, limit deadlines)
OUTBOX = 1024  # security events waiting for the controller's hook; the oldest go first when full
NLRI_ROOM = MAX_MESSAGE_LEN - 64  # octets per reflected UPDATE, below the 4096 limit with headroom


@dataclass(frozen=True, slots=True)
class Held:
    """One accepted route as we reflect it: the encoded UPDATE (one NLRI, our ORIGINATOR_ID and
    CLUSTER_LIST), the route and its encoding (a withdrawal copies octets, encodes nothing), and its
    originator (never sent back to it)."""

    data: bytes
    nlri: EvpnRoute
    wire: bytes
    originator: IPv4Address


@dataclass
class Client:
    address: str
    speaker: Speaker
    state: ClientState
    router_id: str | None = None
    router_ip: IPv4Address | None = None
    counters: Counter = field(default_factory=Counter)
    over_since: float | None = None  # first over-limit refusal (cleared once below the limit again)
    excess: int = 0  # routes refused beyond the limit since then
    warned: bool = False
    closing: bool = False
    catch_up: asyncio.Task | None = None

    @property
    def routes(self) -> dict[bytes, Held]:
        return self.state.routes  # type: ignore[return-value]


SecurityHook = Callable[[SecurityEvent], Awaitable[None]]


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
        self.on_security_event = on_security_event
        self.clients: dict[str, Client] = {}
        self.mobility = Mobility(self.limits.flap_moves, self.limits.flap_window)
        self._ip_waiting: dict[tuple[int, str], set[str]] = {}  # (VNI, IP) -> clients refused it (IP in use)
        self.security = SecurityLog()
        self.refused_by_reason: Counter = Counter()
        self.counters = {"accepted": 0, "refused": 0, "replaced": 0, "reflected": 0, "loops_dropped": 0,
                         "too_big_dropped": 0, "events_dropped": 0}
        self._penalty: dict[str, float] = {}  # address -> loop time until which its reconnects are refused
        self._outbox: deque[SecurityEvent] = deque(maxlen=OUTBOX)
        self.recent_events: deque[SecurityEvent] = deque(maxlen=256)  # what status() shows
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()  # session stops under way (kept referenced)
        self.view: ReflectorView | None = None
        self._rules: Rules | None = None
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
        self._tasks = [loop.create_task(self._housekeeping()), loop.create_task(self._forward_events())]
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
        self.view, self._rules = view, Rules.of(view)
        for address, c in list(self.clients.items()):
            own = view.clients.get(IPv4Address(address))
            if own is None:
                self._close(c, CeaseSubcode.PEER_DECONFIGURED, "no longer a client in the view")
            elif c.router_id is not None and own.bgp_id != c.router_id:
                self._close(c, CeaseSubcode.OTHER_CONFIGURATION_CHANGE, f"its router id is {own.bgp_id} now")
            else:
                c.state.ownership = own
                c.state.max_routes = own.max_routes or self.limits.max_routes
                self._recheck(c)

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
            self._event(peer, Reason.NOT_A_CLIENT, 1, "connection")
            writer.close()
            return
        loop = asyncio.get_running_loop()
        until = self._penalty.get(peer)
        if until is not None and loop.time() < until:
            self.counters["refused"] += 1
            self._event(peer, Reason.RECONNECT_IN_BACKOFF, 1, f"{until - loop.time():.0f} s left")
            # RFC 4486 section 4: Connection Rejected, before any OPEN
            writer.write(Notification(ErrorCode.CEASE, CeaseSubcode.CONNECTION_REJECTED).encode())
            writer.close()
            return
        self._penalty.pop(peer, None)
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
        client.speaker.on_update = lambda res, c=client: self._update(c, res)
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
                self._event(client.address, Reason.BAD_BGP_IDENTIFIER, 1, f"{client.router_id} is {twin.address}'s")
                self._close(client, CeaseSubcode.CONNECTION_REJECTED, f"router id {client.router_id} is taken")
                return
            client.catch_up = asyncio.get_running_loop().create_task(self._catch_up(client))
            return
        if state != "down":
            return
        sent = client.speaker.session.last_sent
        if sent is not None and sent.code == ErrorCode.OPEN_MESSAGE:
            reason = {OpenSubcode.UNACCEPTABLE_HOLD_TIME: Reason.HOLD_TIME_REFUSED,
                      OpenSubcode.BAD_BGP_IDENTIFIER: Reason.BAD_BGP_IDENTIFIER}.get(sent.subcode)
            if reason is not None:
                self._event(client.address, reason, 1, "OPEN refused")
        if self.clients.get(client.address) is not client:
            return  # already replaced by a newer session from the same address
        self.clients.pop(client.address, None)
        if client.catch_up is not None:
            client.catch_up.cancel()
        self._spawn(client.speaker.stop())  # no retry timers for a passive end
        gone = list(client.routes.items())
        client.routes.clear()
        for key, held in gone:
            self._unindex(client, key, held.nlri)
        self._reflect_withdraw(client, [held for _, held in gone])

    def _close(self, client: Client, subcode: int, why: str, data: bytes = b"") -> None:
        if client.closing:
            return
        client.closing = True
        log.warning("BGP client %s: closing the session: %s", client.address, why)
        self._spawn(client.speaker.stop(subcode, data, reason=why))

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _catch_up(self, client: Client) -> None:
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
                self._send(client, held.data, held.originator)
                sent += 1
                if sent % self.limits.catch_up_chunk == 0:
                    await asyncio.sleep(0)
                    if sp.buffered() > self.limits.max_send_buffer // 4:
                        await sp.drain()
        client.catch_up = None
        sp.send_end_of_rib()
        log.info("BGP client %s caught up: %d routes", client.address, sent)

    # --- updates ---------------------------------------------------------------------------------

    def _update(self, client: Client, result: UpdateResult) -> None:
        upd = result.update
        if client.closing:
            return
        if upd is not None and upd.mp_reach is None and upd.mp_unreach is not None and not upd.mp_unreach.nlri \
                and not upd.nlri and not upd.withdrawn:
            return  # the client's End-of-RIB: a marker of its session, not news for the others
        now = asyncio.get_running_loop().time()
        out = check_update(result, client.state, self._rules, self.mobility, now)
        for key in out.forgotten:
            client.state.refused.pop(key, None)
        gone = []
        for key in out.withdrawn:
            old = client.routes.pop(key, None)
            if old is not None:
                self._unindex(client, key, old.nlri)
                gone.append(old)
        if gone:
            self._reflect_withdraw(client, gone)
            client.counters["withdrawn"] += len(gone)
        if out.accepted and out.update is not None:
            self._take(client, out.update, out.accepted)
        if out.refused:
            self._refused(client, out, now)
        for vni, mac in out.frozen:
            self._freeze(vni, mac, now)
        self._watch_size(client)

    def _take(self, client: Client, upd: Update, accepted: list) -> None:
        """Store accepted routes (in the form we reflect them) and reflect them."""
        cl = upd.get(AttrType.CLUSTER_LIST)
        if cl is not None and self.cluster_id in cl.cluster_ids:  # only without a view: ours came back
            self.counters["loops_dropped"] += len(accepted)
            gone = [client.routes.pop(key) for key, _ in accepted if key in client.routes]
            for h in gone:
                self._unindex(client, route_key(h.nlri), h.nlri)
            if gone:
                self._reflect_withdraw(client, gone)
            return
        orig = upd.get(AttrType.ORIGINATOR_ID)
        originator = orig.router_id if orig is not None else IPv4Address(client.router_id or client.address)
        attrs = [a for a in upd.propagated().attributes if a.type_code not in (AttrType.ORIGINATOR_ID,
                                                                               AttrType.CLUSTER_LIST)]
        attrs += [OriginatorId(originator), ClusterList((self.cluster_id, *(cl.cluster_ids if cl else ())))]
        out = Update(attributes=tuple(attrs))
        seq = sequence_of(upd)
        held = []
        for key, nlri in accepted:
            try:
                h = Held(single(out, nlri).encode(), nlri, nlri.encode(), originator)
            except LocalBgpError:  # our two attributes made it too big for one message
                self.counters["too_big_dropped"] += 1
                continue
            old = client.routes.get(key)
            if old is not None:
                self._unindex(client, key, old.nlri)
            client.routes[key] = h
            held.append(h)
            if isinstance(nlri, MacIpRoute):
                self.mobility.add(client.address, key, nlri, seq)
        client.counters["accepted"] += len(held)
        if len(held) == 1:
            self._fan_out(client, held[0].data, originator)
        elif held:
            self._reflect(client, out, [h.nlri for h in held], originator)

    def _refused(self, client: Client, out, now: float) -> None:
        over = 0
        for reason, key, nlri in out.refused:
            if (reason in OWNERSHIP_REASONS or reason is Reason.IP_IN_USE) and out.update is not None \
                    and isinstance(out.update.mp_reach, MpReachNlri):
                client.state.remember_refused(key, reason, single(out.update, nlri))
                if reason is Reason.IP_IN_USE:
                    self._ip_waiting.setdefault((nlri.vni, str(nlri.ip)), set()).add(client.address)
            elif reason not in (Reason.WITHDRAW_NOT_ANNOUNCED, Reason.MALFORMED):
                client.state.remember_refused(key, reason, None)
            over += reason is Reason.OVER_MAX_ROUTES
        for reason, n in out.counts().items():
            client.counters[reason.value] += n
            self.refused_by_reason[reason.value] += n
            example = next(describe(nlri) for r, _, nlri in out.refused if r is reason)
            self._event(client.address, reason, n, example)
        if over:
            client.excess += over
            if client.over_since is None:
                client.over_since = now
            self._check_over(client, now)

    def _watch_size(self, client: Client) -> None:
        size, limit = len(client.routes), client.state.max_routes
        if size >= limit * self.limits.warn_fraction and not client.warned:
            client.warned = True
            log.warning("BGP client %s holds %d routes, %d%% of its limit of %d", client.address, size,
                        100 * size // limit, limit)
        elif size < limit * self.limits.warn_fraction * 0.9:
            client.warned = False
        if size < limit:
            client.over_since, client.excess = None, 0

    def _check_over(self, client: Client, now: float) -> None:
        """Over the limit for too long, or by too much: the session goes (RFC 4486 Cease, Maximum
        Number of Prefixes Reached, with AFI/SAFI and the limit as data) and its reconnects are
        refused for a while."""
        if client.over_since is None or client.closing:
            return
        if client.excess < self.limits.over_excess and now - client.over_since < self.limits.over_grace:
            return
        limit = client.state.max_routes
        data = Afi.L2VPN.to_bytes(2, "big") + bytes((Safi.EVPN,)) + min(limit, (1 << 32) - 1).to_bytes(4, "big")
        self._penalty[client.address] = now + self.limits.backoff
        self._event(client.address, Reason.MAX_ROUTES_TEARDOWN, 1,
                    f"{client.excess} routes beyond {limit} over {now - client.over_since:.1f} s")
        self._close(client, CeaseSubcode.MAX_PREFIXES, f"over its limit of {limit} routes", data)

    def _recheck(self, client: Client) -> None:
        """The view changed: check the client's routes and its recent refusals against it again."""
        own, rules = client.state.ownership, self._rules
        if own is None or rules is None:
            return
        gone = []
        for key, held in list(client.routes.items()):
            upd = decode(held.data).update  # type: ignore[union-attr]
            assert upd is not None
            reason = ownership_reason(held.nlri, upd, own, rules)
            if reason is not None:
                del client.routes[key]
                self._unindex(client, key, held.nlri)
                client.state.remember_refused(key, reason, upd)
                client.counters[reason.value] += 1
                gone.append(held)
        if gone:
            log.warning("BGP client %s: %d routes withdrawn, no longer its own", client.address, len(gone))
            self._reflect_withdraw(client, gone)
        for key, (reason, upd) in list(client.state.refused.items()):
            if reason not in OWNERSHIP_REASONS or upd is None or len(client.routes) >= client.state.max_routes:
                continue
            if ownership_reason(nlri_of(upd), upd, own, rules) is None:
                del client.state.refused[key]
                stripped = Update(attributes=tuple(a for a in upd.attributes if a.type_code not in (
                    AttrType.ORIGINATOR_ID, AttrType.CLUSTER_LIST)))
                self._take(client, stripped, [(key, nlri_of(upd))])
        self._watch_size(client)

    def _unindex(self, client: Client, key: bytes, nlri: EvpnRoute) -> None:
        if isinstance(nlri, MacIpRoute):
            self.mobility.remove(client.address, key, nlri)
            if nlri.ip is not None and (nlri.vni, str(nlri.ip)) in self._ip_waiting:
                asyncio.get_running_loop().call_soon(self._release_ip, nlri.vni, str(nlri.ip))

    def _release_ip(self, vni: int, ip: str) -> None:
        """An IP refused to some clients (another one held it) is free now: their bindings of it, as
        they announced them, are taken (checked again) — a host that got the address of one gone."""
        waiting = self._ip_waiting.get((vni, ip), set())
        for address in sorted(waiting):
            client = self.clients.get(address)
            if client is None or self.mobility.ip_elsewhere(address, vni, ip):
                continue
            waiting.discard(address)
            for key, (reason, upd) in list(client.state.refused.items()):
                if reason is Reason.IP_IN_USE and upd is not None and str(getattr(nlri_of(upd), "ip", "")) == ip:
                    del client.state.refused[key]
                    self._update(client, UpdateResult(ErrorAction.NONE, upd))
        if not waiting:
            self._ip_waiting.pop((vni, ip), None)

    def _freeze(self, vni: int, mac: str, now: float) -> None:
        """RFC 7432 15.1: the MAC moved too often; it stays where it was before the moves began, and
        the operator hears of it. Every other client's route for it goes."""
        keep = self.mobility.frozen_at(vni, mac, now)
        movers = sorted({c for _, c in self.mobility.routes_of(vni, mac) if c != keep})
        log.warning("MAC %s in VNI %d flaps between %s: frozen at %s for %.0f s (RFC 7432 15.1)", mac, vni,
                    ", ".join([keep or "?", *movers]), keep, self.limits.flap_window)
        for key, address in self.mobility.routes_of(vni, mac):
            client = self.clients.get(address)
            if address == keep or client is None or key not in client.routes:
                continue
            held = client.routes.pop(key)
            self._unindex(client, key, held.nlri)
            client.state.remember_refused(key, Reason.MAC_FLAPPING, None)
            client.counters[Reason.MAC_FLAPPING.value] += 1
            self._event(address, Reason.MAC_FLAPPING, 1, describe(held.nlri))
            self._reflect_withdraw(client, [held])

    # --- reflection ------------------------------------------------------------------------------

    def _reflect(self, source: Client, out: Update, nlri: list, originator: IPv4Address) -> None:
        """Several routes with one set of attributes: as few UPDATEs as fit, each encoded once."""
        reach = out.mp_reach
        assert reach is not None
        rest = tuple(a for a in out.attributes if not isinstance(a, MpReachNlri))
        base = len(Update(attributes=(MpReachNlri(reach.afi, reach.safi, reach.next_hop, ()), *rest)).encode())
        groups, too_big = _chunks(nlri, MAX_MESSAGE_LEN - base)
        self.counters["too_big_dropped"] += too_big
        for chunk in groups:
            upd = Update(attributes=(MpReachNlri(reach.afi, reach.safi, reach.next_hop, tuple(chunk)), *rest))
            self._fan_out(source, upd.encode(), originator)

    def _reflect_withdraw(self, source: Client, held: list[Held]) -> None:
        nlri = [RawNlri(Afi.L2VPN, Safi.EVPN, h.wire) for h in held]  # as announced, octet for octet
        for chunk in _chunks(nlri, NLRI_ROOM)[0]:
            self._fan_out(source, Update.withdraw_evpn(tuple(chunk)).encode(), None)

    def _fan_out(self, source: Client, data: bytes, originator: IPv4Address | None) -> None:
        for other in list(self.clients.values()):
            if other is not source:
                self._send(other, data, originator)

    def _send(self, to: Client, data: bytes, originator: IPv4Address | None) -> None:
        if to.closing or to.speaker.session.state is not fsm.State.ESTABLISHED:
            return
        if originator is not None and originator == to.router_ip:
            self.counters["loops_dropped"] += 1  # RFC 4456 section 8: never back to its originator
            return
        to.speaker.send(data)
        self.counters["reflected"] += 1
        if to.speaker.buffered() > self.limits.max_send_buffer:
            self._event(to.address, Reason.SEND_BUFFER_OVERFLOW, 1, f"{to.speaker.buffered()} octets queued")
            self._close(to, CeaseSubcode.OUT_OF_RESOURCES, "it does not read what we send")

    # --- security events, housekeeping -----------------------------------------------------------

    def _event(self, client: str, reason: Reason, count: int, example: str) -> None:
        now = asyncio.get_running_loop().time()
        self._publish(self.security.note(client, reason, count, example, now))

    def _publish(self, events: list[SecurityEvent]) -> None:
        for ev in events:
            name = self._name(ev.client)
            ev = replace(ev, ts=time.time(), name=name)  # noqa: PLW2901 -- the stamped one goes on
            self.recent_events.append(ev)
            log.warning("BGP client %s%s: %s x%d (e.g. %s)", ev.client, f" ({name})" if name else "",
                        ev.reason.value, ev.count, ev.example)
            if self.on_security_event is not None:
                if len(self._outbox) == self._outbox.maxlen:
                    self.counters["events_dropped"] += 1
                self._outbox.append(ev)
                self._wake.set()

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
            self._publish(self.security.flush(now))
            for c in list(self.clients.values()):
                self._check_over(c, now)
            self.mobility.prune(now)
            for address, until in list(self._penalty.items()):
                if until <= now:
                    del self._penalty[address]

    async def _forward_events(self) -> None:
        """Hand the security events to the controller's hook, one at a time, in order."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox and self.on_security_event is not None:
                ev = self._outbox.popleft()
                try:
                    await self.on_security_event(ev)
                except Exception as exc:  # noqa: BLE001 -- whatever the transport raises, reflection goes on
                    log.warning("security event not delivered: %s", exc)

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
            "refused_by_reason": dict(self.refused_by_reason),
            "security_events": [e.as_dict() for e in list(self.recent_events)[-32:]],
            "backoff": sorted(self._penalty),
            **self.counters,
        }


def _chunks(nlri: list, room: int) -> tuple[list[list], int]:
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
