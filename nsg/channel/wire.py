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
