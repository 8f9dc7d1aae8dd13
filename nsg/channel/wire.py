"""Management channel messages, version 1 (documented for operators in docs/channel.md).

One JSON object per WebSocket text frame, discriminated by "type". Both ends validate every
frame before use; an invalid frame is answered with an "error" message, counted, and otherwise
ignored — it never changes what runs.

    gateway -> controller   hello         first frame: serial, versions, capabilities, generation running
    controller -> gateway   hello         the version chosen
    controller -> gateway   config        a full desired config with its generation number
    gateway -> controller   apply_result  per generation: ok, or the error (and the generation still running);
                                          rolled_back: it was applied, never confirmed, and undone
    controller -> gateway   confirm       the controller heard the gateway over the channel *with* that
                                          generation running: it becomes the gateway's last good config
    gateway -> controller   telemetry     periodic counters
    gateway -> controller   event         something happened (tunnel up/down, reload refused, ...)
    gateway -> controller   policy_counters  the firewall's per-entry hit counters (with telemetry)
    either                  error         the peer's last frame was not acceptable
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

VERSIONS = (1,)
MAX_FRAME = 8 << 20  # a config of 500 sites and a 10,000-entry policy stays below this
MAX_POLICY_COUNTERS = 20_100  # 64 tenants x (ACL + default + wall), the ACL at most 10,000 in all


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Hello(_Msg):
    type: Literal["hello"] = "hello"
    versions: tuple[int, ...] = Field(min_length=1, max_length=16)
    serial: str | None = Field(default=None, max_length=64)  # gateway -> controller
    capabilities: tuple[str, ...] = Field(default=(), max_length=64)
    generation: int = Field(default=0, ge=0)  # the generation the gateway is running
    # gateway -> controller: its network interfaces (so the controller refuses LAN ports it lacks)
    interfaces: tuple[Annotated[str, Field(max_length=15)], ...] = Field(default=(), max_length=256)


class Config(_Msg):
    type: Literal["config"] = "config"
    generation: int = Field(ge=1)
    config: dict[str, Any]  # validated by nsg.model on the gateway, never trusted as is
    # commit-confirm: the gateway undoes this config unless a confirm for it comes within this many
    # seconds (None: the gateway's default)
    confirm_s: float | None = Field(default=None, ge=5, le=3600)


class Confirm(_Msg):
    type: Literal["confirm"] = "confirm"
    generation: int = Field(ge=1)


class ApplyResult(_Msg):
    type: Literal["apply_result"] = "apply_result"
    generation: int = Field(ge=0)
    ok: bool
    error: str | None = Field(default=None, max_length=4096)
    running: int = Field(ge=0)  # the generation running after this
    rolled_back: bool = False  # applied, but no confirm came in time: the previous generation runs again
    # what the config names that the box does not have (yet): applied, but degraded
    waiting: tuple[Annotated[str, Field(max_length=200)], ...] = Field(default=(), max_length=64)


class Telemetry(_Msg):
    type: Literal["telemetry"] = "telemetry"
    ts: float
    counters: dict[str, int | float | str | None] = Field(default_factory=dict, max_length=1024)


class Event(_Msg):
    type: Literal["event"] = "event"
    ts: float
    kind: str = Field(max_length=64)
    detail: dict[str, Any] = Field(default_factory=dict)


class PolicyCounters(_Msg):
    type: Literal["policy_counters"] = "policy_counters"
    ts: float
    generation: int = Field(ge=0)  # the config generation whose policy these count
    # acl.<tenant>.<entry>, default.<tenant>, wall.<tenant> -> (packets, bytes)
    counters: dict[str, tuple[int, int]] = Field(default_factory=dict, max_length=MAX_POLICY_COUNTERS)


class Error(_Msg):
    type: Literal["error"] = "error"
    code: str = Field(max_length=64)
    message: str = Field(max_length=4096)


Message = Annotated[Hello | Config | Confirm | ApplyResult | Telemetry | Event | PolicyCounters | Error,
                    Field(discriminator="type")]
_adapter: TypeAdapter = TypeAdapter(Message)


class ChannelProtocolError(ValueError):
    """The peer sent a frame we cannot accept (remote fault)."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


def decode(frame: str | bytes) -> Hello | Config | Confirm | ApplyResult | Telemetry | Event | PolicyCounters | Error:
    if len(frame) > MAX_FRAME:
        raise ChannelProtocolError("too-large", f"frame of {len(frame)} octets (limit {MAX_FRAME})")
    try:
        doc = json.loads(frame)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ChannelProtocolError("not-json", f"frame is not JSON: {exc}") from None
    try:
        return _adapter.validate_python(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(frame)"
        raise ChannelProtocolError("invalid", f"{where}: {first['msg']}") from None


def encode(msg: _Msg) -> str:
    return msg.model_dump_json()


def choose_version(offered: tuple[int, ...]) -> int:
    common = set(offered) & set(VERSIONS)
    if not common:
        raise ChannelProtocolError("version", f"no common version: peer offers {list(offered)}, we speak {VERSIONS}")
    return max(common)

# --- the order of messages on one channel (both ends run this machine) --------------------------
# One machine per end of a channel session.
#
# Sans-IO: message types in, the new state out; no sockets, no clock. Both ends use it, the
# gateway (nsg/channel/client.py) and the controller (controller/channel_server.py), each with its
# own table:
#
#     gateway        START           --send hello-->               HELLO_SENT
#                    HELLO_SENT      --recv hello-->               OPEN
#                    HELLO_SENT      --recv error-->               CLOSED  (the controller refused our hello)
#                    OPEN            --recv config|confirm|error-->  OPEN
#                    OPEN            --send apply_result|telemetry|event|policy_counters|error-->  OPEN
#
#     controller     START           --recv hello-->               HELLO_RECEIVED
#                    START           --send error-->               CLOSED  (the first frame was not a hello)
#                    HELLO_RECEIVED  --send hello-->               OPEN
#                    HELLO_RECEIVED  --send error-->               CLOSED  (hello refused: serial, version)
#                    OPEN            --recv apply_result|telemetry|event|policy_counters|error-->  OPEN
#                    OPEN            --send config|confirm|error-->  OPEN
#
# Anything else raises ``OrderError`` (a ``ChannelProtocolError``) and leaves the state as it
# was, so a bad frame is answered, counted and otherwise ignored. Its code is ``direction`` for a
# type this end never receives (or never sends) and ``order`` for one that is legal, but not now;
# ``fault`` says whose: ``remote`` for what the peer sent, ``local`` for what we tried to send.


class State(StrEnum):
    START = "start"  # connected, no hello yet
    HELLO_SENT = "hello-sent"  # gateway: our hello is out, the controller's is awaited
    HELLO_RECEIVED = "hello-received"  # controller: the gateway's hello is in, ours not yet sent
    OPEN = "open"
    CLOSED = "closed"  # the hello exchange failed; the channel goes down


class Side(StrEnum):
    GATEWAY = "gateway"
    CONTROLLER = "controller"


SEND = "send"
RECV = "recv"

FROM_CONTROLLER = ("config", "confirm", "error")
FROM_GATEWAY = ("apply_result", "telemetry", "event", "policy_counters", "error")

Table = dict[tuple[State, str, str], State]  # (state, send|recv, message type) -> next state

GATEWAY: Table = {
    (State.START, SEND, "hello"): State.HELLO_SENT,
    (State.HELLO_SENT, RECV, "hello"): State.OPEN,
    (State.HELLO_SENT, RECV, "error"): State.CLOSED,
    **{(State.OPEN, RECV, t): State.OPEN for t in FROM_CONTROLLER},
    **{(State.OPEN, SEND, t): State.OPEN for t in FROM_GATEWAY},
}

CONTROLLER: Table = {
    (State.START, RECV, "hello"): State.HELLO_RECEIVED,
    (State.START, SEND, "error"): State.CLOSED,
    (State.HELLO_RECEIVED, SEND, "hello"): State.OPEN,
    (State.HELLO_RECEIVED, SEND, "error"): State.CLOSED,
    **{(State.OPEN, RECV, t): State.OPEN for t in FROM_GATEWAY},
    **{(State.OPEN, SEND, t): State.OPEN for t in FROM_CONTROLLER},
}

TABLES: dict[Side, Table] = {Side.GATEWAY: GATEWAY, Side.CONTROLLER: CONTROLLER}


class OrderError(ChannelProtocolError):
    """A message out of order (code ``order``) or in the wrong direction (code ``direction``).
    ``fault``: ``remote`` if the peer sent it, ``local`` if we were about to."""

    def __init__(self, code: str, message: str, fault: str):
        super().__init__(code, message)
        self.fault = fault


class ChannelOrder:
    """The order of one channel session as seen from ``side``."""

    def __init__(self, side: Side | str):
        self.side = Side(side)
        self.table = TABLES[self.side]
        self.state = State.START
        # the types each direction may ever carry for this side (from its table)
        self._legal = {d: {t for (_, dd, t) in self.table if dd == d} for d in (SEND, RECV)}

    @property
    def open(self) -> bool:
        return self.state is State.OPEN

    def send(self, msg: _Msg | str) -> State:
        """We are about to send ``msg``: the new state, or OrderError (our bug, fault local)."""
        return self._step(SEND, msg)

    def receive(self, msg: _Msg | str) -> State:
        """The peer sent ``msg``: the new state, or OrderError (fault remote)."""
        return self._step(RECV, msg)

    def may_send(self, msg: _Msg | str) -> bool:
        return (self.state, SEND, _type(msg)) in self.table

    def _step(self, direction: str, msg: _Msg | str) -> State:
        kind = _type(msg)
        nxt = self.table.get((self.state, direction, kind))
        if nxt is None:
            fault = "local" if direction == SEND else "remote"
            peer = "controller" if self.side is Side.GATEWAY else "gateway"
            who = f"the {self.side}" if direction == SEND else f"the {peer}"
            if kind not in self._legal[direction]:
                raise OrderError("direction", f"'{kind}' is not sent by {who}", fault)
            expected = [t for (st, d, t) in self.table if st is self.state and d == direction]
            verb = "sent" if direction == SEND else "received"
            wanted = f"expected {' or '.join(expected)}" if expected else f"nothing may be {verb} now"
            raise OrderError("order", f"'{kind}' from {who} out of order: {wanted} (channel {self.state})", fault)
        self.state = nxt
        return nxt


def _type(msg: _Msg | str) -> str:
    return msg if isinstance(msg, str) else str(msg.type)
