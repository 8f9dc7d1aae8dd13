"""The controller's side of the management channel: gateways connect with their LDevID over
mTLS; the serial in the certificate says who they are. Uses nsg.channel.wire: the messages and their
order (the same machine the gateway runs), both pure.

One gateway cannot cost the controller more than the limits below (docs/channel.md, "Limits"):

- Each session sends from its own bounded outbox, by its own task, with a timeout per frame. A gateway
  that does not take what we send (a slow or stopped reader) is closed and counted; a push to every
  gateway only fills outboxes, so no gateway waits for another.
- What a session keeps is bounded: the last ``results`` apply results, the last ``events`` events (each
  at most wire.MAX_DETAIL octets), one telemetry and one policy-counters frame (bounded by wire).
- A gateway's upgrade state (an event of kind "upgrade", nsg.model.upgrade.UpgradeState: bounded field by
  field) is validated and kept, the latest per gateway, across reconnects (``upgrades``).
- A frame is validated (wire.decode), then checked against what this session knows: an apply result
  only for a generation this session was sent (a rollback report: one the controller has issued), policy
  counters that do not run backwards within a generation. Anything else is answered with an error frame,
  counted, and changes nothing.
- Nothing a gateway sends can end the handler other than by closing its own session: every exception
  becomes an error frame or a close, and the session is removed in a ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from cryptography import x509
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from controller.est_server import peer_certificate
from controller.safe_text import safe
from controller.security_events import SecurityEvent, SecurityEvents
from nsg.channel import wire
from nsg.channel.wire import ChannelOrder, Side
from nsg.model.upgrade import UpgradeState

log = logging.getLogger("controller.channel")

HEARTBEAT_S = 10.0
HELLO_TIMEOUT_S = 10.0

# serial -> (generation, config document) or None for an unknown gateway
ConfigLookup = Callable[[str], tuple[int, dict[str, Any]] | None]
GenerationOf = Callable[[str], int | None]  # serial -> the generation the controller has for it (cheap)


@dataclass(frozen=True)
class ChannelLimits:
    """What one session may hold and how long it may keep us waiting (documented in docs/channel.md)."""

    send_timeout_s: float = 10.0  # a frame the gateway has not taken within this closes its session
    outbox_frames: int = 64  # frames waiting for one gateway ...
    outbox_bytes: int = wire.MAX_FRAME + (1 << 20)  # ... and their octets (a newer config replaces a waiting one)
    results: int = 16  # apply results kept (the last ones)
    events: int = 64  # events kept (the last ones; each at most wire.MAX_DETAIL octets of detail)
    sent_generations: int = 64  # generations remembered as sent in this session
    error_log_lines: int = 10  # "gateway says" log lines per minute and session (all are counted)

    def __post_init__(self) -> None:
        if not 0.1 <= self.send_timeout_s <= 3600:
            raise ValueError(f"send timeout {self.send_timeout_s:g} s: give 0.1 to 3600 seconds")


@dataclass(eq=False)
class GatewaySession:
    serial: str
    ws: web.WebSocketResponse
    limits: ChannelLimits = field(default_factory=ChannelLimits)
    transport: Any = None  # the connection's transport: aborted when the gateway does not read
    hello_generation: int = 0
    sent_generation: int = 0
    telemetry: wire.Telemetry | None = None
    policy_counters: wire.PolicyCounters | None = None
    order: ChannelOrder = field(default_factory=lambda: ChannelOrder(Side.CONTROLLER))
    closed: str | None = None  # why the controller ended it
    counters_restart: bool = False  # the last policy counters report ran backwards: the next one starts over
    on_slow: Callable[[GatewaySession, str], None] | None = None  # told when it is closed as a slow reader

    def __post_init__(self) -> None:
        self.results: deque[wire.ApplyResult] = deque(maxlen=self.limits.results)
        self.events: deque[wire.Event] = deque(maxlen=self.limits.events)
        self.sent: deque[int] = deque(maxlen=self.limits.sent_generations)
        self.counters = {"frames_in": 0, "frames_out": 0, "bad_frames": 0}
        self._outbox: deque[tuple[str, int, bool]] = deque()  # (text, octets, is a config)
        self._outbox_bytes = 0
        self._ready = asyncio.Event()
        self._progress = asyncio.Event()  # set by the sender after each frame
        self._logged: deque[float] = deque(maxlen=max(1, self.limits.error_log_lines))

    def send(self, msg: wire._Msg, text: str | None = None) -> bool:
        """Queue ``msg`` (``text``: its encoding, if made already) for the gateway; never waits. False if the
        session is closing; a full outbox closes it (the gateway does not read what we send)."""
        self.order.send(msg)  # OrderError (fault local) would be our bug
        if self.closed is not None:
            return False
        text = wire.encode(msg) if text is None else text
        size = wire.frame_size(text)
        is_config = isinstance(msg, wire.Config)
        for i, (_, octets, waiting_config) in enumerate(self._outbox if is_config else ()):
            if waiting_config:  # only the newest config matters: it takes the place of one still waiting
                self._outbox[i] = (text, size, True)
                self._outbox_bytes += size - octets
                break
        else:
            self._outbox.append((text, size, is_config))
            self._outbox_bytes += size
        if len(self._outbox) > self.limits.outbox_frames or self._outbox_bytes > self.limits.outbox_bytes:
            self.abort(f"{len(self._outbox)} frames ({self._outbox_bytes} octets) wait for it", slow=True)
            return False
        self._ready.set()
        return True

    async def run_sender(self) -> None:
        """Sends the outbox in order, each frame within the send timeout; a gateway that does not take one
        in time is a slow reader: its connection is dropped."""
        while self.closed is None:
            if not self._outbox:
                self._ready.clear()
                await self._ready.wait()
                continue
            text, size, _ = self._outbox.popleft()
            self._outbox_bytes -= size
            try:
                await asyncio.wait_for(self.ws.send_str(text), self.limits.send_timeout_s)
            except TimeoutError:
                self.abort(f"a frame of {size} octets not taken within {self.limits.send_timeout_s:g} s", slow=True)
            except (ConnectionError, RuntimeError):  # closed under us (aiohttp says so with these)
                return
            else:
                self.counters["frames_out"] += 1
                self._progress.set()

    async def catch_up(self) -> None:
        """Called by the reader after each frame: the sender gets its turn, and while more than half the
        outbox waits, the gateway is not read (it does not read its answers: it gets no more of them); if
        the outbox does not go below that within the send timeout, the gateway is a slow reader."""
        if not self._outbox:
            return
        await asyncio.sleep(0)
        deadline = asyncio.get_running_loop().time() + self.limits.send_timeout_s
        while self.closed is None and len(self._outbox) > self.limits.outbox_frames // 2:
            left = deadline - asyncio.get_running_loop().time()
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), max(left, 0.0))
            except TimeoutError:
                self.abort(f"{len(self._outbox)} frames wait for it after {self.limits.send_timeout_s:g} s", slow=True)

    def abort(self, why: str, *, slow: bool = False) -> None:
        """End the session now, without waiting for the gateway (it may not read a close frame either).
        ``slow``: because it does not take what we send."""
        if self.closed is not None:
            return
        self.closed = f"slow reader: {why}" if slow else why
        self._outbox.clear()
        self._outbox_bytes = 0
        self._ready.set()
        if slow and self.on_slow is not None:
            self.on_slow(self, self.closed)
        if self.transport is not None:
            self.transport.abort()

    def may_log(self, now: float) -> bool:
        if len(self._logged) == self._logged.maxlen and now - self._logged[0] < 60.0:
            return False
        self._logged.append(now)
        return True


def peer_serial(request: web.Request) -> str | None:
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    attrs = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    return str(attrs[0].value) if attrs else None


class ChannelHub:
    """``accept``: is this verified client certificate one a gateway may use here (its LDevID)?
    TLS alone also lets an IDevID through (the site takes those for enrollment). ``generation``: the
    generation the controller has for a gateway without rendering its config (default: ``lookup``'s)."""

    def __init__(self, lookup: ConfigLookup, accept: Callable[[x509.Certificate], bool] | None = None, *,
                 generation: GenerationOf | None = None, limits: ChannelLimits | None = None,
                 security: SecurityEvents | None = None):
        self.lookup = lookup
        self.accept = accept
        self.generation_of: GenerationOf = generation or (lambda s: (found := lookup(s)) and found[0])
        self.limits = limits or ChannelLimits()
        self.security = security if security is not None else SecurityEvents()
        self.sessions: dict[str, GatewaySession] = {}
        # across reconnects: the generation each gateway rolled back (not pushed again) and its interfaces
        self.failed: dict[str, wire.ApplyResult] = {}
        self.interfaces: dict[str, tuple[str, ...]] = {}
        self.upgrades: dict[str, tuple[float, UpgradeState]] = {}  # serial -> (received, its last upgrade state)
        self.confirm_s = 60.0  # commit-confirm window sent with every config
        self.confirm_next: dict[str, float] = {}  # serial -> the window of its next push only (set per change)
        self._too_large: dict[str, int] = {}  # serial -> the generation whose config was too large (logged once)
        self.counters = {"connects": 0, "refused": 0, "bad_frames": 0, "rollbacks": 0, "slow_readers": 0,
                         "results_refused": 0, "counters_backwards": 0, "frames_too_large": 0,
                         "configs_too_large": 0, "security_events": 0, "handler_errors": 0,
                         "upgrade_reports": 0}

    def add_routes(self, app: web.Application, path: str = "/channel") -> None:
        app.router.add_get(path, self.handle)
        app.on_shutdown.append(self._close_all)

    async def _close_all(self, _app: web.Application) -> None:
        """On shutdown say goodbye (1001), so gateways reconnect at once instead of timing out."""
        for session in list(self.sessions.values()):
            try:
                await asyncio.wait_for(session.ws.close(code=WSCloseCode.GOING_AWAY,
                                                        message=b"controller shutting down"), 2.0)
            except (TimeoutError, ConnectionError, RuntimeError):
                session.abort("controller shutting down")

    def _slow(self, session: GatewaySession, why: str) -> None:
        self.counters["slow_readers"] += 1
        log.warning("channel closed: the gateway does not read what we send", extra={"fields": {
            "serial": safe(session.serial, 80), "why": why}})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        serial = peer_serial(request)
        if self.accept is not None and serial is not None:
            cert = peer_certificate(request)
            if cert is None or not self.accept(cert):
                self.counters["refused"] += 1
                raise web.HTTPForbidden(text="the channel takes the gateway's LDevID, not its factory identity")
        if serial is None or self.lookup(serial) is None:
            self.counters["refused"] += 1
            raise web.HTTPForbidden(text="unknown gateway")
        # a gateway that stops answering pings is dropped within 1.5 heartbeats (15 s): "connected" is true
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=wire.TRANSPORT_MAX_MSG)
        await ws.prepare(request)
        session = GatewaySession(serial, ws, self.limits, transport=request.transport, on_slow=self._slow)
        sender: asyncio.Task | None = None
        code = WSCloseCode.OK
        try:
            if await self._greet(session):
                sender = asyncio.get_running_loop().create_task(session.run_sender())
                self.push_now(serial)
                await self._serve(session)
        except Exception:  # a bug of ours a frame found: logged with its traceback, this session closed, never stale
            self.counters["handler_errors"] += 1
            code = WSCloseCode.INTERNAL_ERROR
            log.exception("channel session failed", extra={"fields": {"serial": safe(serial, 80)}})
        finally:
            if self.sessions.get(serial) is session:
                del self.sessions[serial]
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
            if not ws.closed and session.closed is None:
                try:
                    await asyncio.wait_for(ws.close(code=code), self.limits.send_timeout_s)
                except (TimeoutError, ConnectionError, RuntimeError):
                    session.abort("the close was not taken")
        return ws

    async def _greet(self, session: GatewaySession) -> bool:
        """The gateway's hello, ours in answer; False (and an error frame) if it is not one we take."""
        ws, serial = session.ws, session.serial
        try:
            frame = await ws.receive(timeout=HELLO_TIMEOUT_S)
            if frame.type is not WSMsgType.TEXT:
                raise wire.ChannelProtocolError("hello", f"the first frame must be a hello, not {frame.type.name}")
            hello = wire.decode(frame.data)
            session.order.receive(hello)  # the first frame must be the gateway's hello
            assert isinstance(hello, wire.Hello)
            if hello.serial != serial:
                raise wire.ChannelProtocolError("hello", f"the hello names serial {safe(hello.serial, 80)!r}, the "
                                                         f"certificate {safe(serial, 80)!r}")
            version = wire.choose_version(hello.versions)
        except (wire.ChannelProtocolError, TimeoutError) as exc:
            self.counters["bad_frames"] += 1
            reply = wire.Error.of("hello", str(exc) or f"no hello within {HELLO_TIMEOUT_S:g} s")
            session.order.send(reply)
            with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
                await asyncio.wait_for(ws.send_str(wire.encode(reply)), self.limits.send_timeout_s)
            return False
        old = self.sessions.get(serial)
        if old is not None:
            old.abort("replaced by a new session of the same gateway")
        self.sessions[serial] = session
        session.hello_generation = hello.generation
        if hello.interfaces:
            self.interfaces[serial] = hello.interfaces
        self.counters["connects"] += 1
        session.send(wire.Hello(versions=(version,)))
        return True

    async def _serve(self, session: GatewaySession) -> None:
        async for frame in session.ws:
            if session.closed is not None:
                return
            session.counters["frames_in"] += 1
            if frame.type is WSMsgType.ERROR:  # the transport refused it (a frame beyond TRANSPORT_MAX_MSG)
                self.counters["frames_too_large"] += 1
                log.warning("channel closed: the gateway sent what the WebSocket layer refuses", extra={
                    "fields": {"serial": safe(session.serial, 80), "error": safe(frame.data, 200)}})
                return
            try:
                if frame.type is not WSMsgType.TEXT:
                    raise wire.ChannelProtocolError("not-json", f"a {frame.type.name} frame: the channel carries "
                                                                "JSON text frames")
                msg = wire.decode(frame.data)
                session.order.receive(msg)
                self._take(session, msg)
            except wire.ChannelProtocolError as exc:
                self.counters["bad_frames"] += 1
                session.counters["bad_frames"] += 1
                if exc.code == "too-large":
                    self.counters["frames_too_large"] += 1
                session.send(wire.Error.of(exc.code, str(exc)))
            await session.catch_up()

    def _take(self, session: GatewaySession, msg: wire._Msg) -> None:
        """A valid frame in its order: what it tells us is kept, or refused (ChannelProtocolError)."""
        serial = session.serial
        if isinstance(msg, wire.ApplyResult):
            self._check_result(session, msg)
            session.results.append(msg)
            log.info("gateway applied", extra={"fields": {"serial": safe(serial, 80), "generation": msg.generation,
                                                          "ok": msg.ok, "error": safe(msg.error, 300)}})
            if msg.rolled_back:
                # it applied that generation, lost us, and went back: never push it again
                self.failed[serial] = msg
                self.counters["rollbacks"] += 1
                log.warning("gateway rolled a generation back", extra={"fields": {
                    "serial": safe(serial, 80), "generation": msg.generation, "running": msg.running,
                    "reason": safe(msg.error, 300)}})
            elif msg.ok and msg.running == msg.generation:
                # we hear it over the channel with that generation running: commit-confirm
                session.send(wire.Confirm(generation=msg.generation))
                failed = self.failed.get(serial)
                if failed is not None and msg.generation > failed.generation:
                    del self.failed[serial]  # a newer generation holds
        elif isinstance(msg, wire.Telemetry):
            session.telemetry = msg
        elif isinstance(msg, wire.PolicyCounters):
            self._check_counters(session, msg)
            session.policy_counters = msg
        elif isinstance(msg, wire.Event):
            if msg.kind == "security":
                self._security(session, msg)
            elif msg.kind == "upgrade":
                self._upgrade(session, msg)
            else:
                session.events.append(msg)
        elif isinstance(msg, wire.Error) and session.may_log(time.monotonic()):
            log.warning("gateway says: %s", safe(msg.message, 500), extra={"fields": {
                "serial": safe(serial, 80), "code": safe(msg.code, 64)}})

    def _check_result(self, session: GatewaySession, msg: wire.ApplyResult) -> None:
        """An apply result speaks of a generation this session was sent; a rollback report (sent right after a
        hello, of a generation sent before) of one the controller has issued. ``running`` is one of those too."""
        issued = self.generation_of(session.serial) or 0
        known = {*session.sent, session.hello_generation, 0}
        why = None
        if msg.rolled_back:
            if not 1 <= msg.generation <= issued:
                why = (f"a rollback of generation {msg.generation}, which the controller never issued (it is at "
                       f"{issued})")
            elif msg.running > issued:
                why = f"running generation {msg.running}, which the controller never issued (it is at {issued})"
        elif msg.generation not in session.sent:
            why = f"a result for generation {msg.generation}, which this session was never sent"
        elif msg.running not in known:
            why = f"running generation {msg.running}, neither sent in this session nor running at its hello"
        if why is not None:
            self.counters["results_refused"] += 1
            raise wire.ChannelProtocolError("generation", f"apply_result refused: {why}")

    def _check_counters(self, session: GatewaySession, msg: wire.PolicyCounters) -> None:
        """Counters of one generation only grow within a session; a report that runs one backwards is refused
        and the last good one stays. The report after a refused one starts over (a ruleset the box had to
        rebuild counts from zero again): a lie gets one refusal per accepted report, never the last word."""
        last = session.policy_counters
        if last is None or last.generation != msg.generation or session.counters_restart:
            session.counters_restart = False
            return
        for name, (packets, octets) in msg.counters.items():
            before = last.counters.get(name)
            if before is not None and (packets < before[0] or octets < before[1]):
                session.counters_restart = True
                self.counters["counters_backwards"] += 1
                raise wire.ChannelProtocolError("invalid", f"policy_counters.counters.{name[:80]}: went backwards "
                                                           f"from {list(before)} to {[packets, octets]} in generation "
                                                           f"{msg.generation}")

    def _security(self, session: GatewaySession, msg: wire.Event) -> None:
        try:
            detail = wire.SecurityDetail.model_validate(msg.detail)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])[:80]
            raise wire.ChannelProtocolError("invalid", f"event.detail.{where}: {first['msg']}") from None
        self.counters["security_events"] += 1
        self.security.record(session.serial, SecurityEvent(ts=msg.ts, source="gateway", reason=detail.reason,
                                                           count=detail.count, message=detail.message))

    def _upgrade(self, session: GatewaySession, msg: wire.Event) -> None:
        try:
            state = UpgradeState.model_validate(msg.detail)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])[:80]
            raise wire.ChannelProtocolError("invalid", f"event.detail.{where}: {first['msg']}") from None
        self.counters["upgrade_reports"] += 1
        before = self.upgrades.get(session.serial)
        self.upgrades[session.serial] = (time.time(), state)
        outcome = state.outcome()
        if before is None or before[1].outcome() != outcome or before[1].agent.action != state.agent.action:
            log.info("gateway upgrade state", extra={"fields": {
                "serial": safe(session.serial, 80), "running": state.running_version, "action": state.agent.action,
                "target": safe(state.agent.target, 64), "last_attempt": safe(outcome, 300)}})

    async def push(self, serial: str) -> bool:
        """Send the gateway its current config if it does not have it yet (queued: never waits for it)."""
        return self.push_now(serial)

    def push_now(self, serial: str) -> bool:
        session = self.sessions.get(serial)
        if session is None or not session.order.open or session.closed is not None:
            return False  # the session's own push follows its hello
        generation = self.generation_of(serial)
        if generation is None or generation <= session.sent_generation:
            return False  # cheap: nothing rendered while nothing changed
        failed = self.failed.get(serial)
        if failed is not None and failed.generation == generation:
            return False  # it cut the gateway off once; the operator's next change makes a new generation
        found = self.lookup(serial)
        if found is None:
            return False
        generation, doc = found
        if generation <= session.sent_generation or (failed is not None and failed.generation == generation):
            return False
        window = self.confirm_next.get(serial, self.confirm_s)
        msg = wire.Config(generation=generation, config=doc, confirm_s=window)
        text = wire.encode(msg)
        size = wire.frame_size(text)
        if size > wire.MAX_FRAME:  # our fault: the store let the enterprise grow past what the channel carries
            if self._too_large.get(serial) != generation:
                self._too_large[serial] = generation
                self.counters["configs_too_large"] += 1
                log.error("config not sent: its frame is larger than the channel carries", extra={"fields": {
                    "serial": safe(serial, 80), "generation": generation, "octets": size, "limit": wire.MAX_FRAME}})
            return False
        self.confirm_next.pop(serial, None)
        if not session.send(msg, text):
            return False
        session.sent_generation = generation
        session.sent.append(generation)
        return True
