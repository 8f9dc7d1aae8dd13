"""The BGP session state machine (RFC 4271 section 8), sans-IO.

Events in (connection up/down, a decoded OPEN/KEEPALIVE/UPDATE/NOTIFICATION, timer expiries),
commands out (connect, send this, set that timer, deliver that UPDATE, the session is up/down).
The driver (speaker.py) owns the TCP connection and the codec; this file owns the rules:

    state         event                      next
    IDLE          start                      CONNECT      (connect; ConnectRetry timer)
    CONNECT       tcp_up                     OPEN_SENT    (send OPEN; hold timer 240 s, 8.2.2)
    CONNECT       tcp_failed / retry timer   ACTIVE       (wait, then try again)
    ACTIVE        retry timer                CONNECT
    ACTIVE        tcp_up (accepted)          OPEN_SENT
    OPEN_SENT     open (acceptable)          OPEN_CONFIRM (send KEEPALIVE; negotiated hold time)
    OPEN_CONFIRM  keepalive                  ESTABLISHED
    ESTABLISHED   update / keepalive         ESTABLISHED  (hold timer restarted)
    any           notification / error /     IDLE         (send NOTIFICATION where RFC 4271 6 says;
                  hold timer / tcp_down                    the driver reconnects with backoff)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from bgp.constants import BGP_VERSION, MIN_HOLD_TIME, CeaseSubcode, ErrorCode, OpenSubcode

LARGE_HOLD_TIME = 240.0  # RFC 4271 8.2.2: the hold timer while waiting for the peer's OPEN
# tuning: seconds between connection attempts, doubling from the first to the last and back to the
# first once a session is up (RFC 4271 suggests a fixed 120; a gateway whose tunnel to its reflector
# just came up wants its session at once, a reflector that is down should not be hammered)
CONNECT_RETRY = 1.0
CONNECT_RETRY_MAX = 30.0


class State(Enum):
    IDLE = "Idle"
    CONNECT = "Connect"
    ACTIVE = "Active"
    OPEN_SENT = "OpenSent"
    OPEN_CONFIRM = "OpenConfirm"
    ESTABLISHED = "Established"


@dataclass(frozen=True)
class PeerOpen:
    """What the session needs from a decoded OPEN (the codec builds it)."""

    version: int
    asn: int  # the 4-octet AS if the capability carried it, else "My AS"
    hold_time: int
    bgp_id: str
    afi_safis: frozenset[tuple[int, int]] = frozenset()
    four_octet_as: bool = False


@dataclass(frozen=True)
class Config:
    local_asn: int
    local_id: str
    peer_asn: int
    hold_time: int = 9  # what we offer; PEERS.md labs use 3 9
    required: frozenset[tuple[int, int]] = frozenset({(25, 70)})  # L2VPN EVPN (RFC 7432)
    passive: bool = False  # wait for the peer to connect (a route reflector's clients call it)
    # What a peer's OPEN must offer beyond RFC 4271's own rules (6.2: a hold time of 1 or 2 and our own
    # identifier are always refused). A hold time of 0 means no keepalives and no hold timer (4.2):
    # a silent, dead peer then keeps its routes forever, so a route reflector refuses it.
    min_hold_time: int = 0  # refuse a non-zero hold time below this (Unacceptable Hold Time)
    allow_zero_hold: bool = True
    peer_id: str | None = None  # the only BGP identifier the peer may present (e.g. its system IP)
    refused_ids: frozenset[str] = frozenset()  # identifiers other sessions hold (Bad BGP Identifier)


# --- commands ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Connect:
    pass


@dataclass(frozen=True)
class Disconnect:
    pass


@dataclass(frozen=True)
class SendOpen:
    hold_time: int


@dataclass(frozen=True)
class SendKeepalive:
    pass


@dataclass(frozen=True)
class SendNotification:
    code: int
    subcode: int = 0
    data: bytes = b""


@dataclass(frozen=True)
class SetTimer:
    name: str  # "connect_retry", "hold", "keepalive"
    seconds: float


@dataclass(frozen=True)
class CancelTimer:
    name: str


@dataclass(frozen=True)
class Up:
    hold_time: int
    afi_safis: frozenset[tuple[int, int]]


@dataclass(frozen=True)
class Down:
    reason: str
    fault: str  # "local", "remote" or "none"


@dataclass(frozen=True)
class Deliver:
    update: object  # the decoded UPDATE, for the RIB


Command = Connect | Disconnect | SendOpen | SendKeepalive | SendNotification | SetTimer | CancelTimer | Up | \
    Down | Deliver

S = State
TRANSITIONS: dict[tuple[State, str], State] = {
    (S.IDLE, "start"): S.CONNECT,
    (S.IDLE, "start_passive"): S.ACTIVE,
    (S.CONNECT, "tcp_up"): S.OPEN_SENT,
    (S.CONNECT, "tcp_failed"): S.ACTIVE,
    (S.CONNECT, "connect_retry"): S.CONNECT,
    (S.ACTIVE, "connect_retry"): S.CONNECT,
    (S.ACTIVE, "tcp_up"): S.OPEN_SENT,
    (S.OPEN_SENT, "open"): S.OPEN_CONFIRM,
    (S.OPEN_CONFIRM, "keepalive"): S.ESTABLISHED,
    (S.ESTABLISHED, "keepalive"): S.ESTABLISHED,
    (S.ESTABLISHED, "update"): S.ESTABLISHED,
    **{(s, "down"): S.IDLE for s in State},
}


@dataclass
class Session:
    config: Config
    state: State = State.IDLE
    hold_time: int = 0
    afi_safis: frozenset[tuple[int, int]] = frozenset()
    peer_id: str | None = None  # the peer's BGP identifier, once its OPEN was accepted
    last_sent: SendNotification | None = None  # the NOTIFICATION that ended the last session, if we sent one
    counters: dict[str, int] = field(default_factory=lambda: {"opens": 0, "updates": 0, "keepalives": 0,
                                                               "notifications_in": 0, "notifications_out": 0,
                                                               "flaps": 0})
    _out: list[Command] = field(default_factory=list)
    _retry: float = CONNECT_RETRY

    def _backoff(self) -> float:
        delay = self._retry
        self._retry = min(self._retry * 2, CONNECT_RETRY_MAX)
        return delay

    def _go(self, event: str) -> None:
        nxt = TRANSITIONS.get((self.state, event))
        if nxt is None:
            raise KeyError(f"BGP FSM: '{event}' in state {self.state.value}")
        self.state = nxt

    def _flush(self) -> list[Command]:
        out, self._out = self._out, []
        return out

    def _emit(self, *cmds: Command) -> None:
        self._out.extend(cmds)

    # --- events ---------------------------------------------------------------------------------

    def start(self) -> list[Command]:
        if self.config.passive:
            self._go("start_passive")
        else:
            self._go("start")
            self._emit(Connect())
        self._emit(SetTimer("connect_retry", self._backoff()))
        return self._flush()

    def tcp_up(self) -> list[Command]:
        if self.state not in (State.CONNECT, State.ACTIVE):
            return self._error(ErrorCode.FSM, 0, f"connection in state {self.state.value}")
        self._go("tcp_up")
        self._emit(CancelTimer("connect_retry"), SendOpen(self.config.hold_time),
                   SetTimer("hold", LARGE_HOLD_TIME))
        return self._flush()

    def tcp_failed(self) -> list[Command]:
        if self.state is State.CONNECT:
            self._go("tcp_failed")
            self._emit(SetTimer("connect_retry", self._backoff()))
        return self._flush()

    def tcp_down(self) -> list[Command]:
        return self._down("connection closed", "remote", notify=None)

    def timer(self, name: str) -> list[Command]:
        if name == "connect_retry" and self.state is State.IDLE:
            return self.start()  # the session went down a while ago: try again (automatic restart)
        if name == "connect_retry" and self.state in (State.CONNECT, State.ACTIVE):
            self._go("connect_retry")
            self._emit(Connect(), SetTimer("connect_retry", self._backoff()))
            return self._flush()
        if name == "hold" and self.state in (State.OPEN_SENT, State.OPEN_CONFIRM, State.ESTABLISHED):
            return self._error(ErrorCode.HOLD_TIMER_EXPIRED, 0, "hold timer expired")
        if name == "keepalive" and self.state in (State.OPEN_CONFIRM, State.ESTABLISHED):
            self._emit(SendKeepalive(), SetTimer("keepalive", self.hold_time / 3))
        return self._flush()

    def open(self, peer: PeerOpen) -> list[Command]:
        """A decoded OPEN arrived (RFC 4271 6.2 checks, capability negotiation RFC 5492/4760)."""
        self.counters["opens"] += 1
        if self.state is not State.OPEN_SENT:
            return self._error(ErrorCode.FSM, 0, f"OPEN in state {self.state.value}")
        c = self.config
        if peer.version != BGP_VERSION:
            return self._error(ErrorCode.OPEN_MESSAGE, OpenSubcode.UNSUPPORTED_VERSION_NUMBER,
                               f"BGP version {peer.version}", data=BGP_VERSION.to_bytes(2, "big"))
        if peer.asn != c.peer_asn:
            return self._error(ErrorCode.OPEN_MESSAGE, OpenSubcode.BAD_PEER_AS,
                               f"peer AS {peer.asn}, expected {c.peer_asn}")
        if peer.hold_time in (1, 2) or (peer.hold_time == 0 and not c.allow_zero_hold) or (
                0 < peer.hold_time < c.min_hold_time):
            floor = max(c.min_hold_time, MIN_HOLD_TIME)
            return self._error(ErrorCode.OPEN_MESSAGE, OpenSubcode.UNACCEPTABLE_HOLD_TIME,
                               f"hold time {peer.hold_time} (we accept {'0 or ' if c.allow_zero_hold else ''}"
                               f"{floor} and more)")
        taken = ("ours" if peer.bgp_id == c.local_id else "another session's" if peer.bgp_id in c.refused_ids
                 else "not a BGP identifier" if peer.bgp_id == "0.0.0.0"
                 else f"not the expected {c.peer_id}" if c.peer_id is not None and peer.bgp_id != c.peer_id else None)
        if taken is not None:
            return self._error(ErrorCode.OPEN_MESSAGE, OpenSubcode.BAD_BGP_IDENTIFIER,
                               f"BGP identifier {peer.bgp_id} is {taken}")
        missing = c.required - peer.afi_safis
        if missing:
            return self._error(ErrorCode.OPEN_MESSAGE, OpenSubcode.UNSUPPORTED_CAPABILITY,
                               f"peer lacks multiprotocol capability for {sorted(missing)}")
        self.peer_id = peer.bgp_id
        self.hold_time = min(c.hold_time, peer.hold_time)  # 0: no keepalives, no hold timer (4.2)
        self.afi_safis = c.required & peer.afi_safis
        self._go("open")
        self._emit(SendKeepalive())
        self._restart_timers()
        return self._flush()

    def keepalive(self) -> list[Command]:
        self.counters["keepalives"] += 1
        if self.state is State.OPEN_CONFIRM:
            self._go("keepalive")
            self._retry = CONNECT_RETRY  # up: the next outage starts the backoff afresh
            self._emit(Up(self.hold_time, self.afi_safis))
        elif self.state is not State.ESTABLISHED:
            return self._error(ErrorCode.FSM, 0, f"KEEPALIVE in state {self.state.value}")
        self._restart_hold()
        return self._flush()

    def update(self, update: object) -> list[Command]:
        self.counters["updates"] += 1
        if self.state is not State.ESTABLISHED:
            return self._error(ErrorCode.FSM, 0, f"UPDATE in state {self.state.value}")
        self._restart_hold()
        self._emit(Deliver(update))
        return self._flush()

    def notification(self, code: int, subcode: int) -> list[Command]:
        self.counters["notifications_in"] += 1
        return self._down(f"peer sent NOTIFICATION {code}/{subcode}", "remote", notify=None)

    def protocol_error(self, code: int, subcode: int, why: str, data: bytes = b"") -> list[Command]:
        """The codec found a message we must answer with a NOTIFICATION (RFC 4271 6, RFC 7606)."""
        return self._error(code, subcode, why, data)

    def stop(self, subcode: int = CeaseSubcode.ADMINISTRATIVE_SHUTDOWN, data: bytes = b"",
             reason: str = "stopped") -> list[Command]:
        """End the session with a Cease (RFC 4486 section 4: e.g. Maximum Number of Prefixes Reached,
        Peer De-configured); our decision, so the fault is "none"."""
        if self.state is State.IDLE:
            return []
        return self._down(reason, "none", notify=(ErrorCode.CEASE, subcode), data=data)

    # --- internals ---------------------------------------------------------------------------------

    def _restart_timers(self) -> None:
        if self.hold_time:
            self._emit(SetTimer("hold", float(self.hold_time)), SetTimer("keepalive", self.hold_time / 3))
        else:
            self._emit(CancelTimer("hold"), CancelTimer("keepalive"))

    def _restart_hold(self) -> None:
        if self.hold_time:
            self._emit(SetTimer("hold", float(self.hold_time)))

    def _error(self, code: int, subcode: int, why: str, data: bytes = b"") -> list[Command]:
        return self._down(why, "remote" if code != ErrorCode.FSM else "local", notify=(code, subcode), data=data)

    def _down(self, reason: str, fault: str, notify: tuple[int, int] | None, data: bytes = b"") -> list[Command]:
        was_up = self.state is State.ESTABLISHED
        self.last_sent = None
        if notify is not None and self.state in (State.OPEN_SENT, State.OPEN_CONFIRM, State.ESTABLISHED):
            self.counters["notifications_out"] += 1
            self.last_sent = SendNotification(notify[0], notify[1], data)
            self._emit(self.last_sent)
        self._emit(Disconnect(), CancelTimer("hold"), CancelTimer("keepalive"))
        if was_up:
            self.counters["flaps"] += 1
        self._go("down")
        self._emit(Down(reason, fault), SetTimer("connect_retry", self._backoff()))
        return self._flush()
