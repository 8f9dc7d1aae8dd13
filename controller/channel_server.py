"""The controller's side of the management channel: gateways connect with their LDevID over
mTLS; the serial in the certificate says who they are. Uses nsg.channel.wire: the messages and their
order (the same machine the gateway runs), both pure."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from cryptography import x509
from cryptography.x509.oid import NameOID

from controller.est_server import peer_certificate
from nsg.channel import wire
from nsg.channel.wire import ChannelOrder, Side

log = logging.getLogger("controller.channel")

HEARTBEAT_S = 10.0

# serial -> (generation, config document) or None for an unknown gateway
ConfigLookup = Callable[[str], tuple[int, dict[str, Any]] | None]


@dataclass
class GatewaySession:
    serial: str
    ws: web.WebSocketResponse
    sent_generation: int = 0
    results: list[wire.ApplyResult] = field(default_factory=list)
    telemetry: wire.Telemetry | None = None
    events: list[wire.Event] = field(default_factory=list)
    policy_counters: wire.PolicyCounters | None = None
    order: ChannelOrder = field(default_factory=lambda: ChannelOrder(Side.CONTROLLER))

    async def send(self, msg: wire._Msg) -> None:
        self.order.send(msg)  # OrderError (fault local) would be our bug
        await self.ws.send_str(wire.encode(msg))


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
    TLS alone also lets an IDevID through (the site takes those for enrollment)."""

    def __init__(self, lookup: ConfigLookup, accept: Callable[[x509.Certificate], bool] | None = None):
        self.lookup = lookup
        self.accept = accept
        self.sessions: dict[str, GatewaySession] = {}
        # across reconnects: the generation each gateway rolled back (not pushed again) and its interfaces
        self.failed: dict[str, wire.ApplyResult] = {}
        self.interfaces: dict[str, tuple[str, ...]] = {}
        self.confirm_s = 60.0  # commit-confirm window sent with every config
        self.confirm_next: dict[str, float] = {}  # serial -> the window of its next push only (set per change)
        self.counters = {"connects": 0, "refused": 0, "bad_frames": 0, "rollbacks": 0}

    def add_routes(self, app: web.Application, path: str = "/channel") -> None:
        app.router.add_get(path, self.handle)
        app.on_shutdown.append(self._close_all)

    async def _close_all(self, _app: web.Application) -> None:
        """On shutdown say goodbye (1001), so gateways reconnect at once instead of timing out."""
        for session in list(self.sessions.values()):
            await session.ws.close(code=1001, message=b"controller shutting down")

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
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=wire.MAX_FRAME)
        await ws.prepare(request)
        session = GatewaySession(serial, ws)
        try:
            hello = wire.decode((await ws.receive(timeout=10)).data)
            session.order.receive(hello)  # the first frame must be the gateway's hello
            assert isinstance(hello, wire.Hello)
            if hello.serial != serial:
                raise wire.ChannelProtocolError("hello", f"the hello names serial {hello.serial!r}, the "
                                                         f"certificate {serial!r}")
            version = wire.choose_version(hello.versions)
        except (wire.ChannelProtocolError, TimeoutError, TypeError) as exc:  # TypeError: a close frame
            self.counters["bad_frames"] += 1
            await session.send(wire.Error(code="hello", message=str(exc) or type(exc).__name__))
            return ws
        old = self.sessions.get(serial)
        if old is not None:
            await old.ws.close()
        self.sessions[serial] = session
        if hello.interfaces:
            self.interfaces[serial] = hello.interfaces
        self.counters["connects"] += 1
        await session.send(wire.Hello(versions=(version,)))
        await self.push(serial)
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            try:
                msg = wire.decode(frame.data)
                session.order.receive(msg)
            except wire.ChannelProtocolError as exc:
                self.counters["bad_frames"] += 1
                await session.send(wire.Error(code=exc.code, message=str(exc)))
                continue
            if isinstance(msg, wire.ApplyResult):
                session.results.append(msg)
                log.info("gateway applied", extra={"fields": {"serial": serial, "generation": msg.generation,
                                                              "ok": msg.ok, "error": msg.error}})
                if msg.rolled_back:
                    # it applied that generation, lost us, and went back: never push it again
                    self.failed[serial] = msg
                    self.counters["rollbacks"] += 1
                    log.warning("gateway rolled a generation back", extra={"fields": {
                        "serial": serial, "generation": msg.generation, "running": msg.running,
                        "reason": msg.error}})
                elif msg.ok and msg.running == msg.generation:
                    # we hear it over the channel with that generation running: commit-confirm
                    await session.send(wire.Confirm(generation=msg.generation))
                    failed = self.failed.get(serial)
                    if failed is not None and msg.generation > failed.generation:
                        del self.failed[serial]  # a newer generation holds
            elif isinstance(msg, wire.Telemetry):
                session.telemetry = msg
            elif isinstance(msg, wire.PolicyCounters):
                session.policy_counters = msg
            elif isinstance(msg, wire.Event):
                session.events = [*session.events[-99:], msg]
            elif isinstance(msg, wire.Error):
                log.warning("gateway says: %s", msg.message, extra={"fields": {"serial": serial, "code": msg.code}})
        if self.sessions.get(serial) is session:
            del self.sessions[serial]
        return ws

    async def push(self, serial: str) -> bool:
        """Send the gateway its current config if it does not have it yet."""
        session = self.sessions.get(serial)
        found = self.lookup(serial)
        if session is None or found is None or not session.order.open:
            return False  # the session's own push follows its hello
        generation, doc = found
        if generation <= session.sent_generation:
            return False
        failed = self.failed.get(serial)
        if failed is not None and failed.generation == generation:
            return False  # it cut the gateway off once; the operator's next change makes a new generation
        window = self.confirm_next.pop(serial, self.confirm_s)
        await session.send(wire.Config(generation=generation, config=doc, confirm_s=window))
        session.sent_generation = generation
        return True
