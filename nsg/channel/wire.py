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
    gateway -> controller   event         something happened (tunnel up/down, reload refused, ...); kind
                                          "security": an alert (SecurityDetail); kind "upgrade": the box's
                                          upgrade state (nsg.model.upgrade.UpgradeState)
    gateway -> controller   policy_counters  the firewall's per-entry hit counters (with telemetry)
    either                  error         the peer's last frame was not acceptable
"""

from __future__ import annotations

import json
import math
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

VERSIONS = (1,)

# --- limits (docs/channel.md, "Limits"): what one gateway may make the controller hold ------------------
MAX_FRAME = 8 << 20  # octets of one frame (its UTF-8 JSON text): exactly this passes, one more is refused
# The WebSocket layer (aiohttp) refuses a message of max_msg_size octets *or more*, closing the connection
# (1009) with nothing said to us. It gets this much more, so that a frame just over MAX_FRAME reaches
# decode() and is answered with an error naming its size; beyond that the transport closes (and we log it).
TRANSPORT_MAX_MSG = MAX_FRAME + (1 << 20)
MAX_POLICY_COUNTERS = 20_100  # 64 tenants x (ACL + default + wall), the ACL at most 10,000 in all
MAX_INT = 2**63 - 1  # counters, generations: what a signed 64-bit counter holds
MAX_NAME = 256  # characters of a counter or rule name
MAX_TEXT = 1024  # characters of a string a gateway reports as a counter value (an app's error, a state)
MAX_TELEMETRY_CHARS = 256 << 10  # one telemetry frame's counters, names and values together
MAX_DETAIL = 4096  # octets of an event's detail as JSON ...
MAX_DETAIL_DEPTH = 4  # ... and how deep its objects and lists nest
MAX_MESSAGE = 4096  # characters of an error frame's message (longer ones we send are cut)
RECEIVED = "received"  # validation context of decode(): a frame from the peer (bounds refuse, never cut)

Count = Annotated[int, Field(ge=0, le=MAX_INT)]
Generation = Annotated[int, Field(ge=0, le=MAX_INT)]
Timestamp = Annotated[float, Field(ge=0, le=MAX_INT, allow_inf_nan=False)]  # Unix time
Token = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
CounterName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME)]


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _printable_names(names: Any, what: str) -> Any:
    for name in names:
        if not name.isprintable():
            raise ValueError(f"{what} {name[:40]!a} holds control characters")
    return names


class Hello(_Msg):
    type: Literal["hello"] = "hello"
    versions: tuple[Annotated[int, Field(ge=0, le=MAX_INT)], ...] = Field(min_length=1, max_length=16)
    serial: str | None = Field(default=None, max_length=64)  # gateway -> controller
    capabilities: tuple[Annotated[str, Field(max_length=64)], ...] = Field(default=(), max_length=64)
    generation: Generation = 0  # the generation the gateway is running
    # gateway -> controller: its network interfaces (so the controller refuses LAN ports it lacks)
    interfaces: tuple[Annotated[str, Field(max_length=15)], ...] = Field(default=(), max_length=256)


class Config(_Msg):
    type: Literal["config"] = "config"
    generation: int = Field(ge=1, le=MAX_INT)
    config: dict[str, Any]  # validated by nsg.model on the gateway, never trusted as is
    # commit-confirm: the gateway undoes this config unless a confirm for it comes within this many
    # seconds (None: the gateway's default)
    confirm_s: float | None = Field(default=None, ge=5, le=3600)


class Confirm(_Msg):
    type: Literal["confirm"] = "confirm"
    generation: int = Field(ge=1, le=MAX_INT)


class ApplyResult(_Msg):
    type: Literal["apply_result"] = "apply_result"
    generation: Generation
    ok: bool
    error: str | None = Field(default=None, max_length=4096)
    running: Generation  # the generation running after this
    rolled_back: bool = False  # applied, but no confirm came in time: the previous generation runs again
    # what the config names that the box does not have (yet): applied, but degraded
    waiting: tuple[Annotated[str, Field(max_length=200)], ...] = Field(default=(), max_length=64)


class Telemetry(_Msg):
    """Counters: non-negative finite numbers below 2^63, strings of at most MAX_TEXT characters, or null;
    names printable, at most MAX_NAME characters; all of it at most MAX_TELEMETRY_CHARS. The gateway cuts a
    longer string it reports (an app's error) when it makes the message; a frame received with one is refused."""

    type: Literal["telemetry"] = "telemetry"
    ts: Timestamp
    counters: dict[CounterName, int | float | str | None] = Field(default_factory=dict, max_length=1024)

    @field_validator("counters")
    @classmethod
    def _bounded(cls, counters: dict[str, int | float | str | None],
                 info: ValidationInfo) -> dict[str, int | float | str | None]:
        _printable_names(counters, "counter name")
        received = bool(info.context and info.context.get(RECEIVED))
        total = 0
        for name, value in list(counters.items()):
            if isinstance(value, str):
                if len(value) > MAX_TEXT:
                    if received:
                        raise ValueError(f"counter {name[:64]!r}: a string of {len(value)} characters (at most "
                                         f"{MAX_TEXT})")
                    counters[name] = value[:MAX_TEXT - 3] + "..."
                total += len(name) + min(len(value), MAX_TEXT)
                continue
            total += len(name) + 8
            if value is None or isinstance(value, bool):
                continue
            if not math.isfinite(value) or not 0 <= value <= MAX_INT:
                raise ValueError(f"counter {name[:64]!r}: {value!r} is not a count (0 to 2^63-1, finite)")
        if total > MAX_TELEMETRY_CHARS:
            raise ValueError(f"counters of {total} characters in all (at most {MAX_TELEMETRY_CHARS})")
        return counters


def _depth(doc: Any) -> int:
    """How deep objects and lists nest in ``doc`` (a scalar: 0), without recursion."""
    deepest, todo = 0, [(doc, 0)]
    while todo:
        node, level = todo.pop()
        if isinstance(node, dict | list):
            level += 1
            deepest = max(deepest, level)
            if level > MAX_DETAIL_DEPTH:
                return level
            todo.extend((v, level) for v in (node.values() if isinstance(node, dict) else node))
    return deepest


class Event(_Msg):
    """Something happened on the gateway. ``detail``: a JSON object of at most MAX_DETAIL octets, nesting at
    most MAX_DETAIL_DEPTH deep (the object itself is level 1). Kind "security" is an alert (SecurityDetail)."""

    type: Literal["event"] = "event"
    ts: Timestamp
    kind: Token
    detail: dict[str, Any] = Field(default_factory=dict)

    @field_validator("detail")
    @classmethod
    def _bounded(cls, detail: dict[str, Any]) -> dict[str, Any]:
        depth = _depth(detail)
        if depth > MAX_DETAIL_DEPTH:
            raise ValueError(f"nested more than {MAX_DETAIL_DEPTH} deep")
        try:
            size = len(json.dumps(detail, allow_nan=False, separators=(",", ":")).encode())
        except ValueError:
            raise ValueError("holds a number that is not finite") from None
        if size > MAX_DETAIL:
            raise ValueError(f"{size} octets as JSON (at most {MAX_DETAIL})")
        return detail


class SecurityDetail(BaseModel):
    """The detail of an event of kind "security" (a gateway's alert: duplicate MAC, port security, ...):
    ``reason`` names it (lower-case words joined by "-"), ``count`` how many times it happened since the
    last alert of that reason, ``message`` says it for people. More fields may come along (a MAC, a port)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    reason: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")
    count: int = Field(default=1, ge=1, le=2**31 - 1)
    message: str = Field(default="", max_length=512)


class PolicyCounters(_Msg):
    type: Literal["policy_counters"] = "policy_counters"
    ts: Timestamp
    generation: Generation  # the config generation whose policy these count
    # acl.<tenant>.<entry>, default.<tenant>, wall.<tenant> -> (packets, bytes)
    counters: dict[CounterName, tuple[Count, Count]] = Field(default_factory=dict, max_length=MAX_POLICY_COUNTERS)

    @field_validator("counters")
    @classmethod
    def _names(cls, counters: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        return _printable_names(counters, "rule name")


class Error(_Msg):
    type: Literal["error"] = "error"
    code: str = Field(max_length=64)
    message: str = Field(max_length=MAX_MESSAGE)

    @classmethod
    def of(cls, code: str, message: str) -> Error:
        """An error frame of ours: a message too long for the frame (it may quote what the peer sent) is cut."""
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE - 3] + "..."
        return cls(code=code[:64], message=message)


Message = Annotated[Hello | Config | Confirm | ApplyResult | Telemetry | Event | PolicyCounters | Error,
                    Field(discriminator="type")]
_adapter: TypeAdapter = TypeAdapter(Message)


class ChannelProtocolError(ValueError):
    """The peer sent a frame we cannot accept (remote fault)."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


def frame_size(frame: str | bytes) -> int:
    """Octets of a frame's payload: what the WebSocket carries (UTF-8), not Python characters."""
    if isinstance(frame, bytes | bytearray):
        return len(frame)
    return len(frame) if frame.isascii() else len(frame.encode("utf-8", "surrogatepass"))


def _where(loc: tuple[int | str, ...]) -> str:
    where = ".".join(str(p) for p in loc) or "(frame)"
    return where if len(where) <= 120 else where[:117] + "..."  # a name may be long; the reply is bounded


def decode(frame: str | bytes) -> Hello | Config | Confirm | ApplyResult | Telemetry | Event | PolicyCounters | Error:
    """One frame, validated; ChannelProtocolError (the peer's fault) for anything else. pydantic's own JSON
    parser reads it: it bounds nesting and number sizes, so no input raises anything else."""
    size = frame_size(frame)
    if size > MAX_FRAME:
        raise ChannelProtocolError("too-large", f"frame of {size} octets (limit {MAX_FRAME})")
    try:
        return _adapter.validate_json(frame, context={RECEIVED: True})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            reason = str(first.get("ctx", {}).get("error") or first["msg"])
            raise ChannelProtocolError("not-json", f"frame is not JSON: {reason}") from None
        msg = first["msg"].removeprefix("Value error, ")
        raise ChannelProtocolError("invalid", f"{_where(first['loc'])}: {msg}") from None
    except (ValueError, RecursionError) as exc:  # nothing else should come out of a parser; if it does, still theirs
        raise ChannelProtocolError("invalid", f"frame cannot be read: {type(exc).__name__}") from None


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
