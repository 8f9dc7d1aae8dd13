"""The gateway's side of the management channel: mTLS WebSocket, reconnect with jittered backoff.

The channel only carries desired state in and results out; applying a config is the daemon's
business (``on_config``), which validates it and keeps what runs if it is bad. Which message may
come or go when is nsg/channel/wire.py (its order machine)'s (the controller uses the same machine).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable

import aiohttp

from nsg.backoff import Backoff
from nsg.channel import wire
from nsg.channel.wire import ChannelOrder, Side
from nsg.model.status import ChannelStatus

log = logging.getLogger("nsg.channel")

ApplyFn = Callable[[wire.Config], Awaitable[wire.ApplyResult]]
ConfirmFn = Callable[[int], Awaitable[None]]
HEARTBEAT_S = 10.0  # WebSocket ping; no pong within half of it closes the channel (either side)


class ChannelClient:
    def __init__(self, url: str, ssl_context: Callable[[], ssl.SSLContext], serial: str, on_config: ApplyFn,
                 running: Callable[[], int], *, capabilities: tuple[str, ...] = ("config", "telemetry"),
                 backoff: tuple[float, float] = (1.0, 60.0), heartbeat: float = HEARTBEAT_S,
                 on_confirm: ConfirmFn | None = None, greeting: Callable[[], list[wire._Msg]] | None = None,
                 interfaces: Callable[[], tuple[str, ...]] | None = None):
        """``on_confirm(generation)``: the controller confirmed a config (commit-confirm). ``greeting()``:
        messages to send right after each hello (a rollback to report). ``interfaces()`` (blocking): the
        box's interfaces, announced in the hello."""
        self.url = url
        self.ssl_context = ssl_context
        self.serial = serial
        self.on_config = on_config
        self.running = running
        self.capabilities = capabilities
        self.backoff = backoff
        self.heartbeat = heartbeat
        self.on_confirm = on_confirm
        self.greeting = greeting
        self.interfaces = interfaces
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._order: ChannelOrder | None = None  # this session's message order
        self.stats = {"connects": 0, "failures": 0, "frames_in": 0, "frames_out": 0, "bad_frames": 0,
                      "configs": 0}
        self.last_error: str | None = None
        self.connected_since: float | None = None

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    async def run(self) -> None:
        backoff = Backoff(*self.backoff)
        while True:
            try:
                await self._session()
            except (aiohttp.ClientError, OSError, TimeoutError, wire.ChannelProtocolError, ssl.SSLError) as exc:
                self.stats["failures"] += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("channel down: %s", self.last_error, extra={"fields": {"url": self.url}})
            if self.connected_since is not None:
                backoff.reset()  # it worked for a while: start over with short waits
            self._ws = None
            self._order = None
            self.connected_since = None
            # jitter spreads 500 gateways reconnecting after a controller restart
            await asyncio.sleep(backoff.next())

    async def _session(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.ws_connect(
                self.url, ssl=self.ssl_context(), heartbeat=self.heartbeat,
                max_msg_size=wire.TRANSPORT_MAX_MSG) as ws:  # a frame of MAX_FRAME passes; one over is answered
            self._ws, self._order = ws, ChannelOrder(Side.GATEWAY)
            ifaces = await asyncio.to_thread(self.interfaces) if self.interfaces is not None else ()
            await self._send(wire.Hello(versions=wire.VERSIONS, serial=self.serial, capabilities=self.capabilities,
                                        generation=self.running(), interfaces=ifaces))
            first = await self._receive(ws)  # the order allows only the controller's hello or its refusal
            if isinstance(first, wire.Error):
                raise wire.ChannelProtocolError("refused", f"controller refused our hello: {first.code}: "
                                                f"{first.message}")
            assert isinstance(first, wire.Hello)
            wire.choose_version(first.versions)
            self.stats["connects"] += 1
            self.connected_since = time.time()
            self.last_error = None
            log.info("channel up", extra={"fields": {"url": self.url}})
            for msg in self.greeting() if self.greeting is not None else ():
                await self._send(msg)
            while True:
                try:
                    msg = await self._receive(ws)
                except wire.ChannelProtocolError as exc:
                    if exc.code == "closed":
                        raise
                    self.stats["bad_frames"] += 1
                    await self._send(wire.Error.of(exc.code, str(exc)))
                    continue
                if isinstance(msg, wire.Config):
                    self.stats["configs"] += 1
                    await self._send(await self.on_config(msg))
                elif isinstance(msg, wire.Confirm):
                    if self.on_confirm is not None:
                        await self.on_confirm(msg.generation)
                elif isinstance(msg, wire.Error):
                    log.warning("controller says: %s", msg.message, extra={"fields": {"code": msg.code}})

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse
                       ) -> wire.Hello | wire.Config | wire.Confirm | wire.Error:
        frame = await ws.receive()
        if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING,
                          aiohttp.WSMsgType.ERROR):
            why = f": {frame.data}" if frame.type is aiohttp.WSMsgType.ERROR else ""  # e.g. a frame far too large
            raise wire.ChannelProtocolError("closed", f"controller closed the channel ({frame.type.name}{why})")
        if frame.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            raise wire.ChannelProtocolError("frame", f"unexpected frame type {frame.type.name}")
        self.stats["frames_in"] += 1
        msg = wire.decode(frame.data)
        assert self._order is not None
        self._order.receive(msg)  # OrderError (a ChannelProtocolError) if the controller may not send it now
        assert isinstance(msg, wire.Hello | wire.Config | wire.Confirm | wire.Error)
        return msg

    async def _send(self, msg: wire._Msg) -> None:
        assert self._ws is not None and self._order is not None
        self._order.send(msg)  # OrderError (fault local) would be our bug
        await self._ws.send_str(wire.encode(msg))
        self.stats["frames_out"] += 1

    async def send(self, msg: wire.Telemetry | wire.Event | wire.PolicyCounters) -> bool:
        """Best effort: False when the channel is down or its hellos are not through yet (the caller
        keeps or drops it)."""
        if not self.connected or self._order is None or not self._order.open:
            return False
        try:
            await self._send(msg)
        except (aiohttp.ClientError, ConnectionError):
            return False
        return True

    def reconnect(self) -> None:
        """Drop the session now (the run loop connects again): after a rollback the controller must
        hear the hello of the generation that runs again, and the report."""
        if self._ws is not None and not self._ws.closed:
            asyncio.get_running_loop().create_task(self._ws.close(code=1000, message=b"rolled back"))

    def status(self) -> ChannelStatus:
        return ChannelStatus(url=self.url, connected=self.connected, since=self.connected_since,
                             last_error=self.last_error, **self.stats)
