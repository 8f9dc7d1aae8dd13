"""The IKE SA state machine (RFC 7296), sans-IO: datagrams and timer expiries in, commands out.

One IkeSa is one peering: the IKE SA (rekeyed in place, 2.18) and its child SAs. This file owns
both state tables, the dispatch of requests, message IDs, retransmission, INFORMATIONAL (liveness,
deletes) and the timers. exchanges.py builds and checks the exchanges (IKE_SA_INIT, IKE_AUTH,
CREATE_CHILD_SA); it sees an IkeSa only through its ``Host`` protocol and does not import this file.

The IKE SA (an event the table does not hold raises LocalProtocolError):

    state            event            next state
    IDLE             initiate         INIT_SENT      (initiator)
    INIT_SENT        init_retry       INIT_SENT      asked for a COOKIE (2.6) or another DH group (1.2)
    INIT_SENT        init_done        AUTH_SENT
    AUTH_SENT        auth_done        ESTABLISHED
    IDLE             init_answered    INIT_DONE      (responder)
    INIT_DONE        auth_answered    ESTABLISHED
    ESTABLISHED      rekey            REKEYING       our CREATE_CHILD_SA for a new IKE SA is out (2.18)
    REKEYING         rekey_refused    ESTABLISHED    (TEMPORARY_FAILURE, 2.25: again a little later)
    REKEYING         rekeyed          RETIRING       on the new IKE SA; we delete the old one
    ESTABLISHED      rekey_answered   RETIRING       the peer rekeyed; it deletes the old one
    RETIRING         retired          ESTABLISHED    the old IKE SA is gone (deleted, or never answered)
    UP (all three)   delete           DELETING       ESTABLISHED, REKEYING, RETIRING: the SA is up
    DELETING         rekey_refused,   DELETING       a rekey under way ends while we delete
                     rekeyed, retired
    any              closed           CLOSED

A child SA (make-before-break, 1.3.3, 2.8); whether outbound traffic uses it is ``active``:

    state            event            next state
    LIVE             rekey            REKEYING       our CREATE_CHILD_SA replacing it is out
    REKEYING         rekey_failed     LIVE           refused for now (TEMPORARY_FAILURE, CHILD_SA_NOT_FOUND)
    LIVE, REKEYING   replaced         REPLACED       its successor is installed (the peer's rekey, or ours)
    REPLACED         delete           DELETING       we ask the peer to delete it (1.4.1)
    any              retire           DELETING       deleted (by the peer, or ours answered): lingers
    DELETING         rekey_failed,    DELETING       our rekey ends after the peer deleted it
                     replaced, delete
"""

from __future__ import annotations

import datetime
import hashlib
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum

from ipsec.ike import events as ev
from ipsec.ike import exchanges
from ipsec.ike.constants import ExchangeType, HeaderFlag, NotifyType, ProtocolId
from ipsec.ike.context import ZERO_SPI, Ctx, Pending, Queued, ResponseHandler
from ipsec.ike.errors import IkeError, IntegrityError, LocalProtocolError, RemoteProtocolError
from ipsec.ike.exchanges import Handshake, InitOffer
from ipsec.ike.message import Header, Message
from ipsec.ike.payloads import Delete, IdPayload, Notify, Payload
from ipsec.ike.policy import IkeProposal, PeerPolicy


class State(Enum):
    IDLE = "idle"
    INIT_SENT = "init-sent"
    AUTH_SENT = "auth-sent"
    INIT_DONE = "init-done"
    ESTABLISHED = "established"
    REKEYING = "rekeying"
    RETIRING = "retiring"
    DELETING = "deleting"
    CLOSED = "closed"


S = State
UP = frozenset({S.ESTABLISHED, S.REKEYING, S.RETIRING})
TRANSITIONS: dict[tuple[State, str], State] = {
    (S.IDLE, "initiate"): S.INIT_SENT,
    (S.INIT_SENT, "init_retry"): S.INIT_SENT,
    (S.INIT_SENT, "init_done"): S.AUTH_SENT,
    (S.AUTH_SENT, "auth_done"): S.ESTABLISHED,
    (S.IDLE, "init_answered"): S.INIT_DONE,
    (S.INIT_DONE, "auth_answered"): S.ESTABLISHED,
    (S.ESTABLISHED, "rekey"): S.REKEYING,
    (S.REKEYING, "rekey_refused"): S.ESTABLISHED,
    (S.REKEYING, "rekeyed"): S.RETIRING,
    (S.ESTABLISHED, "rekey_answered"): S.RETIRING,
    (S.RETIRING, "retired"): S.ESTABLISHED,
    **{(s, "delete"): S.DELETING for s in UP},
    **{(S.DELETING, e): S.DELETING for e in ("rekey_refused", "rekeyed", "retired")},
    **{(s, "closed"): S.CLOSED for s in State},
}


class ChildState(Enum):
    LIVE = "live"
    REKEYING = "rekeying"
    REPLACED = "replaced"
    DELETING = "deleting"


C = ChildState
CHILD_TRANSITIONS: dict[tuple[ChildState, str], ChildState] = {
    (C.LIVE, "rekey"): C.REKEYING,
    (C.REKEYING, "rekey_failed"): C.LIVE,
    (C.LIVE, "replaced"): C.REPLACED,
    (C.REKEYING, "replaced"): C.REPLACED,
    (C.REPLACED, "delete"): C.DELETING,
    **{(s, "retire"): C.DELETING for s in ChildState},
    **{(C.DELETING, e): C.DELETING for e in ("rekey_failed", "replaced", "delete")},
}


@dataclass
class Child:
    sa: ev.ChildSa
    active: bool = True  # outbound traffic uses it
    state: ChildState = ChildState.LIVE
    successor: int | None = None  # the child that replaces it


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class IkeSa:
    def __init__(
        self,
        policy: PeerPolicy,
        local: ev.Address,
        peer: ev.Address,
        *,
        initiator: bool,
        peer_spi: bytes = ZERO_SPI,  # responder: the initiator's SPI from its IKE_SA_INIT
        rng: Callable[[int], bytes] = os.urandom,
        clock: Callable[[], datetime.datetime] = now_utc,
        jitter: Callable[[], float] = random.random,
    ):
        self.policy = policy
        self.local = local  # our IKE address and port as the peer should see them
        self.peer = peer
        self.local_port = local[1]
        self.rng = rng
        self.clock = clock
        self.jitter = jitter
        self.state = State.IDLE
        self.ctx = Ctx(self._spi(8) if initiator else peer_spi, ZERO_SPI, initiator)
        self.retiring: Ctx | None = None  # the old IKE SA while RETIRING (and DELETING after)
        self.children: dict[int, Child] = {}
        self._next_child = 1
        self.nat_local = self.nat_remote = False
        self.remote_id = ""
        self.peer_cert_serial: int | None = None  # the certificate it authenticated with (revocation)
        # responder: IKE_SA_INIT cannot say which of several peers without a fixed address is calling;
        # IDi in IKE_AUTH can. ``rebind`` names the peering that identity belongs to (manager.py).
        self.rebind: Callable[[IdPayload], PeerPolicy | None] | None = None
        self.heard = False
        self.closed_reason: str | None = None
        # the notify (its name) with which we refused the peer's IKE_SA_INIT or IKE_AUTH, if we did:
        # the manager counts refusals of unauthenticated requests by it
        self.refused_with: str | None = None
        self.counters = {"malformed": 0, "integrity_failures": 0, "retransmits": 0, "stale": 0,
                         "child_rekeys": 0, "ike_rekeys": 0, "dpd_sent": 0}
        self._out: list[ev.Command] = []
        # IKE_SA_INIT's state (exchanges.py): our request while INIT_SENT, then what IKE_AUTH needs
        self.offer: InitOffer | None = None
        self.handshake: Handshake | None = None

    @property
    def agreed_proposal(self) -> IkeProposal | None:
        """The IKE proposal IKE_SA_INIT agreed on, until IKE_AUTH is over."""
        return self.handshake.proposal if self.handshake is not None else None

    # --- events ------------------------------------------------------------------

    def initiate(self) -> list[ev.Command]:
        self.go("initiate")
        exchanges.start_init(self)
        return self._flush()

    def receive(self, data: bytes, src: ev.Address, local_port: int | None = None) -> list[ev.Command]:
        """One datagram (without the non-ESP marker) from ``src``, received on our ``local_port``."""
        if self.state is State.CLOSED:
            return []
        if local_port is not None and not self.ctx.initiator and self.state is State.INIT_DONE:
            self.local_port = local_port  # the initiator chose the port for IKE_AUTH (2.23)
        try:
            header = Header.decode(data)
        except RemoteProtocolError:
            self.counters["malformed"] += 1
            return []
        ctx = self._ctx_for(header)
        if ctx is None:
            self.counters["stale"] += 1
            return []
        try:
            if header.flags & 0x20:
                self._on_response(ctx, header, data, src)
            else:
                self._on_request(ctx, header, data, src)
        except IntegrityError:
            self.counters["integrity_failures"] += 1  # forged or corrupt: drop silently (2.21.2)
        except IkeError as exc:
            self.fail(str(exc), exc.fault)
        return self._flush()

    def timer(self, name: str) -> list[ev.Command]:
        if self.state is State.CLOSED:
            return []
        kind, _, arg = name.partition(":")
        handler = getattr(self, f"_timer_{kind}", None)
        if handler is None:
            raise LocalProtocolError(f"unknown timer {name}")
        try:
            handler(arg)
        except IkeError as exc:
            self.fail(str(exc), exc.fault)
        return self._flush()

    def rekey_child(self, child_id: int | None = None) -> list[ev.Command]:
        if self.state in UP:
            target = child_id if child_id is not None else self._newest_child()
            if target is not None:
                self._rekey_child(target)
        return self._flush()

    def rekey_ike(self) -> list[ev.Command]:
        self._timer_rekey_ike("")  # now, as if its timer fired
        return self._flush()

    def close(self, reason: str = "closed locally") -> list[ev.Command]:
        if self.state in UP:
            self.go("delete")
            self.request(self.ctx, ExchangeType.INFORMATIONAL, (Delete(ProtocolId.IKE),),
                         lambda _c, _m, _r: self.fail(reason, "none"), "delete IKE SA")
        elif self.state is not State.CLOSED:
            self.fail(reason, "none")
        return self._flush()

    def drop(self, reason: str) -> list[ev.Command]:
        """Forget this IKE SA and its children at once, telling the peer nothing."""
        self.fail(reason, "none")
        return self._flush()

    # --- the state tables, and the plumbing exchanges.py uses (its Host protocol) ----------

    def go(self, event: str) -> None:
        nxt = TRANSITIONS.get((self.state, event))
        if nxt is None:
            raise LocalProtocolError(f"IKE SA {self.policy.name}: '{event}' is illegal in state {self.state.value}")
        self.state = nxt

    def child_go(self, cid: int, event: str) -> None:
        child = self.children.get(cid)
        if child is None:
            return  # its linger time is over: it is gone, nothing is left to move
        nxt = CHILD_TRANSITIONS.get((child.state, event))
        if nxt is None:
            raise LocalProtocolError(f"IKE SA {self.policy.name}: '{event}' is illegal for child {cid} in state "
                                     f"{child.state.value}")
        child.state = nxt

    def child_is_live(self, cid: int) -> bool:
        """Neither being rekeyed nor replaced nor deleted: the peer may rekey it (2.25)."""
        child = self.children.get(cid)
        return child is not None and child.state is ChildState.LIVE

    def add_child(self, child: ev.ChildSa, outbound: bool, replaces: int | None) -> None:
        self.children[child.child_id] = Child(child, active=outbound)
        if replaces is not None and replaces in self.children:
            self.child_go(replaces, "replaced")
            self.children[replaces].successor = child.child_id
        self.emit(ev.InstallChild(child, outbound))
        self.emit(ev.SetTimer(f"rekey_child:{child.child_id}", self.rekey_delay(self.policy.timers.child_rekey_s)))

    def emit(self, cmd: ev.Command) -> None:
        self._out.append(cmd)

    def _flush(self) -> list[ev.Command]:
        out, self._out = self._out, []
        return out

    def _spi(self, n: int) -> bytes:
        while True:
            spi = self.rng(n)
            # IKE SPIs must not be zero (3.1); ESP SPIs 1-255 are reserved (RFC 4303 2.1)
            if int.from_bytes(spi, "big") > 255:
                return spi

    def new_ike_spi(self) -> bytes:
        return self._spi(8)

    def new_child_spi(self) -> bytes:
        return self._spi(4)

    def nonce(self) -> bytes:
        return self.rng(32)

    def child_id(self) -> int:
        cid, self._next_child = self._next_child, self._next_child + 1
        return cid

    def send(self, data: bytes) -> None:
        self.emit(ev.Send(data, self.peer, self.local_port))

    def request(self, ctx: Ctx, exchange: int, payloads: tuple[Payload, ...], on_response: ResponseHandler,
                what: str) -> None:
        """Send a request now, or after the one in flight (window size 1)."""
        if ctx.pending is not None:
            ctx.queue.append(Queued(exchange, payloads, on_response, what))
            return
        msg = ctx.message(exchange, ctx.next_id, payloads, response=False)
        data = msg.encode() if exchange == ExchangeType.IKE_SA_INIT else ctx.protect(msg)
        ctx.pending = Pending(ctx.next_id, exchange, data, on_response, what)
        ctx.next_id += 1
        self.send(data)
        self.emit(ev.SetTimer(ctx.timer, self.policy.timers.retransmit[0]))

    def send_init(self, ctx: Ctx, payloads: tuple[Payload, ...], on_response: ResponseHandler) -> bytes:
        """IKE_SA_INIT with message ID 0 (again after COOKIE or INVALID_KE_PAYLOAD, 2.6, 1.2); returns
        the octets sent, which IKE_AUTH signs (2.15)."""
        ctx.pending = None
        ctx.next_id = 0
        self.request(ctx, ExchangeType.IKE_SA_INIT, payloads, on_response, "IKE_SA_INIT")
        assert ctx.pending is not None
        return ctx.pending.data

    def fail(self, reason: str, fault: str) -> None:
        if self.state is State.CLOSED:
            return
        for cid, child in list(self.children.items()):
            self.emit(ev.RemoveChild(cid, child.sa.in_spi, child.sa.out_spi))
        self.children.clear()
        self.closed_reason = reason
        self.go("closed")
        self.emit(ev.Closed(reason, fault))

    # --- receiving --------------------------------------------------------------------

    def _ctx_for(self, header: Header) -> Ctx | None:
        for ctx in (self.ctx, self.retiring):
            if ctx is None or header.spi_i != ctx.spi_i:
                continue
            if header.spi_r == ctx.spi_r or (ctx.spi_r == ZERO_SPI and header.exchange == ExchangeType.IKE_SA_INIT):
                return ctx
            if (not ctx.initiator and header.spi_r == ZERO_SPI and header.exchange == ExchangeType.IKE_SA_INIT
                    and not header.flags & HeaderFlag.RESPONSE):
                return ctx  # the initiator lost our IKE_SA_INIT answer and sends its request again (2.1)
        return None

    def _on_response(self, ctx: Ctx, header: Header, data: bytes, src: ev.Address) -> None:
        p = ctx.pending
        if p is None or header.message_id != p.message_id or header.exchange != p.exchange:
            self.counters["stale"] += 1
            return
        if header.exchange == ExchangeType.IKE_SA_INIT:
            try:
                msg = Message.decode(data)
            except RemoteProtocolError:
                # unauthenticated garbage must not end the exchange (2.21): keep waiting
                self.counters["malformed"] += 1
                return
        else:
            msg = ctx.open(data)
        ctx.pending = None
        self.emit(ev.CancelTimer(ctx.timer))
        self._heard(src)
        p.on_response(ctx, msg, data)
        if ctx.pending is None and ctx.queue and self.state is not State.CLOSED:
            q = ctx.queue.popleft()
            self.request(ctx, q.exchange, q.payloads, q.on_response, q.what)

    def _on_request(self, ctx: Ctx, header: Header, data: bytes, src: ev.Address) -> None:
        if ctx.last_response is not None and header.message_id == ctx.last_response[0]:
            # The peer lost our answer (2.1): answer again, but only to the very same request,
            # so a forgery with the live SPIs cannot make us reflect traffic anywhere.
            if hashlib.sha256(data).digest() == ctx.last_request:
                self.counters["retransmits"] += 1
                self.emit(ev.Send(ctx.last_response[1], src, self.local_port))
            else:
                self.counters["stale"] += 1
            return
        if header.message_id != ctx.peer_id:
            self.counters["stale"] += 1
            return
        plain = header.exchange == ExchangeType.IKE_SA_INIT
        if plain and self.state is not State.IDLE:
            self.counters["stale"] += 1  # an unauthenticated IKE_SA_INIT cannot touch a keyed SA (2.21)
            return
        try:
            msg = Message.decode(data) if plain else ctx.open(data)
        except RemoteProtocolError as exc:
            if plain or isinstance(exc, IntegrityError):
                self.counters["malformed"] += 1
                return
            raise
        after: list[Callable[[], None]] = []
        try:
            payloads = self._answer(ctx, msg, src, data, after)
        except IkeError as exc:
            if exc.notify is None:
                raise
            payloads = (Notify(exc.notify, exc.notify_data),)
            if plain or (header.exchange == ExchangeType.IKE_AUTH and self.state is State.INIT_DONE):
                # a refused IKE_SA_INIT or failed authentication ends this responder (2.21.2)
                self.refused_with = exchanges.notify_name(payloads[0])
                after.append(lambda e=exc: self.fail(str(e), e.fault))
        reply = ctx.message(header.exchange, header.message_id, payloads, response=True)
        out = reply.encode() if plain else ctx.protect(reply)
        if plain and self.handshake is not None:
            self.handshake = replace(self.handshake, response=out)  # IKE_AUTH signs it (2.15)
        ctx.last_response = (header.message_id, out)
        ctx.last_request = hashlib.sha256(data).digest()
        ctx.peer_id += 1
        if not plain:
            self._heard(src)
        self.emit(ev.Send(out, src, self.local_port))
        for action in after:
            action()

    def _answer(self, ctx: Ctx, msg: Message, src: ev.Address, data: bytes,
                after: list[Callable[[], None]]) -> tuple[Payload, ...]:
        """One request, by exchange and state; returns the response payloads. IkeErrors with a
        notify become error responses (_on_request)."""
        ex, state = msg.exchange, self.state
        if ex == ExchangeType.IKE_SA_INIT and state is State.IDLE:
            return exchanges.answer_init(self, ctx, msg, src, data)
        if ex == ExchangeType.IKE_AUTH and state is State.INIT_DONE:
            return exchanges.answer_auth(self, ctx, msg, src)
        if ex == ExchangeType.INFORMATIONAL and (state in UP or state is State.DELETING):
            return self.answer_informational(ctx, msg, after)
        if ex == ExchangeType.CREATE_CHILD_SA and state in UP and ctx is self.ctx:
            if not exchanges.rekeys_ike(msg):
                return exchanges.answer_child_rekey(self, ctx, msg)
            if state is not State.ESTABLISHED:
                # 2.25: our own IKE SA rekey is under way, or the last one's old IKE SA is not gone yet
                raise RemoteProtocolError("IKE SA rekey collision", notify=NotifyType.TEMPORARY_FAILURE)
            return exchanges.answer_ike_rekey(self, ctx, msg, after)
        if ex == ExchangeType.CREATE_CHILD_SA:
            raise RemoteProtocolError("CREATE_CHILD_SA now", notify=NotifyType.TEMPORARY_FAILURE)
        raise RemoteProtocolError(f"{ExchangeType(ex).name if ex in ExchangeType._value2member_map_ else ex} "
                                  f"request in state {state.value}", notify=NotifyType.INVALID_SYNTAX)

    def _heard(self, src: ev.Address) -> None:
        self.heard = True
        if (self.nat_local or self.nat_remote) and src != self.peer and self.state in UP:
            # 2.23: behind a NAT, answer where authenticated traffic comes from
            self.peer = src

    # --- INFORMATIONAL ---------------------------------------------------------------

    def answer_informational(self, ctx: Ctx, msg: Message, after: list[Callable[[], None]]) -> tuple[Payload, ...]:
        reply: list[Payload] = []
        for d in msg.all(Delete):
            if d.protocol_id == ProtocolId.IKE:
                if ctx is self.retiring:
                    after.append(self.drop_retiring)  # the peer finished its IKE SA rekey (2.18)
                else:
                    after.append(lambda: self.fail("peer deleted the IKE SA", "none"))
                return ()
            if d.protocol_id == ProtocolId.ESP:
                ours = []
                for spi in d.spis:
                    cid = self.child_by_out_spi(int.from_bytes(spi, "big"))
                    if cid is None:
                        continue
                    if self.children[cid].state is not ChildState.DELETING:
                        ours.append(self.children[cid].sa.in_spi.to_bytes(4, "big"))  # 1.4.1: the other direction
                    after.append(lambda c=cid: self.retire_child(c))
                if ours:
                    reply.append(Delete(ProtocolId.ESP, tuple(ours)))
        return tuple(reply)

    def retire_child(self, cid: int) -> None:
        """Stop using a child SA: its successor takes outbound traffic now, the old
        inbound SA stays a moment for packets already on their way (make-before-break)."""
        child = self.children.get(cid)
        if child is None:
            return
        succ = self.children.get(child.successor) if child.successor else None
        if succ is not None and not succ.active:
            succ.active = True
            self.emit(ev.ActivateChild(succ.sa.child_id))
            self.emit(ev.CancelTimer(f"activate:{succ.sa.child_id}"))
        self.child_go(cid, "retire")
        self.emit(ev.SetTimer(f"linger:{cid}", self.policy.timers.old_child_linger_s))

    def delete_child(self, cid: int) -> None:
        """Ask the peer to delete a child SA we replaced (1.4.1)."""
        child = self.children.get(cid)
        if child is None:
            return
        self.child_go(cid, "delete")
        self.request(self.ctx, ExchangeType.INFORMATIONAL,
                     (Delete(ProtocolId.ESP, (child.sa.in_spi.to_bytes(4, "big"),)),),
                     lambda _c, _m, _r, c=cid: self.retire_child(c), f"delete child {cid}")

    def child_by_out_spi(self, spi: int) -> int | None:
        return next((cid for cid, c in self.children.items() if c.sa.out_spi == spi), None)

    def _newest_child(self) -> int | None:
        live = [cid for cid, c in self.children.items() if c.state in (ChildState.LIVE, ChildState.REKEYING)]
        return max(live) if live else None

    def _rekey_child(self, cid: int) -> None:
        child = self.children.get(cid)
        if child is not None and child.state is ChildState.LIVE:
            self.child_go(cid, "rekey")
            exchanges.start_child_rekey(self, cid, child.sa)

    def drop_retiring(self) -> None:
        if self.retiring is not None:
            self.emit(ev.CancelTimer(self.retiring.timer))
            self.retiring = None
            self.go("retired")

    # --- timers ------------------------------------------------------------------------

    def _timer_rtx(self, spi_hex: str) -> None:
        ctx = next((c for c in (self.ctx, self.retiring) if c is not None and c.local_spi.hex() == spi_hex), None)
        if ctx is None or ctx.pending is None:
            return
        p = ctx.pending
        p.tries += 1
        schedule = self.policy.timers.retransmit
        if p.tries >= len(schedule):
            if ctx is self.retiring:
                self.drop_retiring()
                return
            self.fail(f"no answer to {p.what} after {p.tries} tries", "remote")
            return
        self.counters["retransmits"] += 1
        self.send(p.data)
        self.emit(ev.SetTimer(ctx.timer, schedule[p.tries]))

    def _timer_dpd(self, _arg: str) -> None:
        if self.state not in UP:
            return
        if not self.heard and self.ctx.pending is None:
            # 2.4: nothing heard for a while: an empty INFORMATIONAL proves liveness
            self.counters["dpd_sent"] += 1
            self.request(self.ctx, ExchangeType.INFORMATIONAL, (), lambda _c, _m, _r: None, "liveness check")
        self.heard = False
        self.emit(ev.SetTimer("dpd", self.policy.timers.dpd_s))

    def _timer_keepalive(self, _arg: str) -> None:
        if self.state in UP and self.nat_local:
            self.emit(ev.SendKeepalive(self.peer))
            self.emit(ev.SetTimer("keepalive", self.policy.timers.keepalive_s))

    def _timer_rekey_ike(self, _arg: str) -> None:
        if self.state is State.ESTABLISHED:  # neither rekeying nor waiting for the old SA's delete
            self.go("rekey")
            exchanges.start_ike_rekey(self)

    def _timer_rekey_child(self, arg: str) -> None:
        if self.state in UP:
            self._rekey_child(int(arg))

    def _timer_linger(self, arg: str) -> None:
        cid = int(arg)
        child = self.children.pop(cid, None)
        if child is not None:
            self.emit(ev.RemoveChild(cid, child.sa.in_spi, child.sa.out_spi))

    def _timer_activate(self, arg: str) -> None:
        child = self.children.get(int(arg))
        if child is not None and not child.active:
            child.active = True
            self.emit(ev.ActivateChild(child.sa.child_id))

    def rekey_delay(self, base: float) -> float:
        """Rekey a little before the configured time, by a random margin (2.8.1)."""
        return base * (1 - self.policy.timers.rekey_jitter * self.jitter())

    def established_timers(self) -> None:
        t = self.policy.timers
        self.emit(ev.SetTimer("rekey_ike", self.rekey_delay(t.ike_rekey_s)))
        self.emit(ev.SetTimer("dpd", t.dpd_s))
        if self.nat_local:
            self.emit(ev.SetTimer("keepalive", t.keepalive_s))

    def error_notify(self, msg: Message) -> Notify | None:
        return next((n for n in msg.all(Notify) if n.is_error), None)

    def describe(self) -> dict:
        return {
            # rekeying or retiring, the IKE SA is up: the status (and who reads it) says established
            "state": State.ESTABLISHED.value if self.state in UP else self.state.value,
            "local_spi": self.ctx.local_spi.hex(),
            "remote_spi": (self.ctx.spi_r if self.ctx.initiator else self.ctx.spi_i).hex(),
            "initiator": self.ctx.initiator,
            "peer": f"{self.peer[0]}:{self.peer[1]}",
            "remote_id": self.remote_id,
            "nat_local": self.nat_local,
            "nat_remote": self.nat_remote,
            "children": [
                {"id": cid, "in_spi": f"{c.sa.in_spi:#010x}", "out_spi": f"{c.sa.out_spi:#010x}",
                 "active": c.active, "deleting": c.state is ChildState.DELETING}
                for cid, c in sorted(self.children.items())
            ],
            "counters": dict(self.counters),
            "closed_reason": self.closed_reason,
        }
