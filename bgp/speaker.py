"""The one asyncio driver of a BGP session: TCP 179, the codec (codec.py) and the state machine
(fsm.py) put together. Routes we originate are (re)announced whenever the session comes up, then an
End-of-RIB marker (RFC 4724 section 2); received UPDATEs go to ``on_update`` after the RFC 7606
classification. With ``restart_time`` the OPEN carries the graceful restart capability for EVPN, and
``peer_restart_time`` says whether the peer's did (the control plane then keeps the peer's routes,
as stale, across a session loss: RFC 4724 section 4.2)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from ipaddress import IPv4Address

from bgp import fsm
from bgp.capabilities import GracefulRestartCap, GrFamily
from bgp.codec import Keepalive, Notification, Open, RouteRefresh, Update, UpdateResult, decode, next_frame
from bgp.constants import GR_FORWARDING_STATE, Afi, CapabilityCode, CeaseSubcode, ErrorCode, Safi
from bgp.errors import BgpError

log = logging.getLogger("bgp.speaker")

BGP_PORT = 179
# tuning: seconds of handling received messages before the read loop lets other tasks run (a peer
# sending a flood must not hold up every other session's keepalives and updates)
READ_SLICE = 0.005
# tuning: how long a connection we end with a NOTIFICATION stays half-open (our FIN sent, our side
# not yet closed) so that the peer reads the NOTIFICATION; closing at once with its data unread in
# our receive queue makes the kernel answer with a RST, and a peer still sending (a flood) then
# loses the NOTIFICATION with its connection
NOTIFY_LINGER = 2.0


def close_after_notification(writer: asyncio.StreamWriter, linger: float | None = None) -> None:
    """Close a connection whose last message is a NOTIFICATION (RFC 4271 section 6: it is sent, then
    the connection closed): send our FIN behind the queued data now and stop sending; the socket
    itself goes after ``linger`` seconds (aborted then if the peer has not even taken the data)."""
    transport = writer.transport
    if transport.is_closing():
        return
    if not writer.can_write_eof():
        writer.close()
        return
    with contextlib.suppress(OSError, RuntimeError):
        writer.write_eof()  # asyncio shuts down our half once its buffer is flushed
    # the timer holds the writer: a StreamWriter nobody references closes its transport when it is
    # collected (Python 3.11.5 on), which would end the linger at once
    asyncio.get_running_loop().call_later(NOTIFY_LINGER if linger is None else linger, _end, writer)


def _end(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if transport.is_closing():
        return
    if transport.get_write_buffer_size():
        transport.abort()  # the peer took nothing in all that time: do not wait for it
    else:
        transport.close()


class Speaker:
    def __init__(self, config: fsm.Config, peer: str, *, local: str | None = None, port: int = BGP_PORT,
                 on_update: Callable[[UpdateResult], None] | None = None,
                 on_state: Callable[[str], None] | None = None, restart_time: int | None = None,
                 forwarding_state: bool = False, hold_end_of_rib: bool = False):
        self.config = config
        self.peer = peer
        self.local = local
        self.port = port
        self.on_update = on_update
        self.on_state = on_state
        self.session = fsm.Session(config)
        self.announce: list[Update] = []
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        self._connecting: asyncio.Task | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.counters = {"bad_messages": 0, "withdrawn_by_7606": 0}
        self.restart_time = restart_time
        self.forwarding_state = forwarding_state  # our forwarding survives our own restart (F bit)
        self.peer_restart_time: int | None = None  # from the peer's OPEN, if it does GR for EVPN
        self.notified = False  # the last session ended with a NOTIFICATION (no graceful restart then)
        # the owner sends the End-of-RIB itself (send_end_of_rib), once a catch-up it paces is complete
        self.hold_end_of_rib = hold_end_of_rib

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._apply(self.session.start())

    async def stop(self, subcode: int = CeaseSubcode.ADMINISTRATIVE_SHUTDOWN, data: bytes = b"",
                   reason: str = "stopped") -> None:
        """End the session with a Cease of that subcode (RFC 4486) and stop retrying."""
        self._apply(self.session.stop(subcode, data, reason))
        for h in self._timers.values():
            h.cancel()
        self._timers.clear()
        if self._connecting is not None:
            self._connecting.cancel()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task

    async def drop(self) -> None:
        """End the session without a NOTIFICATION, as a restart would (the peer, if it does graceful
        restart, keeps our routes for our restart time)."""
        for h in self._timers.values():
            h.cancel()
        self._timers.clear()
        if self._connecting is not None:
            self._connecting.cancel()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task

    def attach(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Take over a connection the peer opened to us (passive side, e.g. a route reflector)."""
        self._loop = asyncio.get_running_loop()
        if self.session.state is fsm.State.IDLE:
            self._apply(self.session.start())
        self._writer = writer
        self._apply(self.session.tcp_up())
        self._reader_task = self._loop.create_task(self._read(reader, writer))

    def kick(self) -> None:
        """Try to connect now (e.g. the tunnel toward the peer just came up) instead of at the next
        retry; a session that is up or on its way up is left alone."""
        if self.session.state in (fsm.State.CONNECT, fsm.State.ACTIVE) and not self.config.passive:
            self._cancel("connect_retry")
            self._apply(self.session.timer("connect_retry"))

    def send(self, update: Update | bytes) -> None:
        """Send one UPDATE now (if the session is up); not remembered for later sessions. ``bytes``:
        one already encoded (a reflector encodes once for all its clients)."""
        if self.session.state is fsm.State.ESTABLISHED:
            self._send(update if isinstance(update, bytes) else update.encode())

    def send_end_of_rib(self) -> None:
        """The End-of-RIB marker for L2VPN/EVPN (RFC 4724 section 2), with ``hold_end_of_rib``."""
        if self.session.state is fsm.State.ESTABLISHED:
            self._send(Update.withdraw_evpn(()).encode())

    def buffered(self) -> int:
        """Octets written but not yet taken by the kernel (the transport's send buffer)."""
        if self._writer is None or self._writer.is_closing():
            return 0
        return self._writer.transport.get_write_buffer_size()

    async def drain(self) -> None:
        """Wait until the send buffer is below the transport's high-water mark (a slow peer paces
        whoever calls this); returns at once if the connection is gone."""
        if self._writer is not None and not self._writer.is_closing():
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()

    def advertise(self, update: Update) -> None:
        """Announce now if the session is up, and again every time it comes up."""
        self.announce.append(update)
        if self.session.state is fsm.State.ESTABLISHED:
            self._send(update.encode())

    # --- commands ------------------------------------------------------------------------------

    def _apply(self, cmds: list[fsm.Command]) -> None:
        notified = False  # this batch sent a NOTIFICATION: the Disconnect after it lingers
        for c in cmds:
            match c:
                case fsm.Connect():
                    assert self._loop is not None
                    if self._connecting is not None and not self._connecting.done():
                        self._connecting.cancel()  # one attempt at a time: a late second one would collide
                    self._connecting = self._loop.create_task(self._connect())
                case fsm.Disconnect():
                    if self._writer is not None:
                        if notified:
                            close_after_notification(self._writer)
                        else:
                            self._writer.close()
                        self._writer = None
                case fsm.SendOpen(hold):
                    gr = None
                    if self.restart_time is not None:
                        flags = GR_FORWARDING_STATE if self.forwarding_state else 0
                        gr = GracefulRestartCap(self.restart_time, 0, (GrFamily(Afi.L2VPN, Safi.EVPN, flags),))
                    self._send(Open.build(self.config.local_asn, self.config.local_id, hold_time=hold,
                                          graceful_restart=gr).encode())
                case fsm.SendKeepalive():
                    self._send(Keepalive().encode())
                case fsm.SendNotification(code, subcode, data):
                    self.notified = notified = True
                    self._send(Notification(code, subcode, data).encode())
                case fsm.SetTimer(name, seconds):
                    self._cancel(name)
                    assert self._loop is not None
                    self._timers[name] = self._loop.call_later(seconds, self._fire, name)
                case fsm.CancelTimer(name):
                    self._cancel(name)
                case fsm.Up():
                    log.info("BGP session up", extra={"fields": {"peer": self.peer, "hold": c.hold_time}})
                    self.notified = False
                    for upd in self.announce:
                        self._send(upd.encode())
                    self._state("up")  # a reflector catches the newcomer up here, before the marker
                    if not self.hold_end_of_rib:
                        self._send(Update.withdraw_evpn(()).encode())  # End-of-RIB for L2VPN/EVPN
                case fsm.Down(reason, fault):
                    log.info("BGP session down: %s", reason, extra={"fields": {"peer": self.peer, "fault": fault}})
                    self._state("down")
                case fsm.Deliver(update):
                    if self.on_update is not None:
                        self.on_update(update)  # type: ignore[arg-type]

    def _state(self, what: str) -> None:
        if self.on_state is not None:
            self.on_state(what)

    def _cancel(self, name: str) -> None:
        h = self._timers.pop(name, None)
        if h is not None:
            h.cancel()

    def _fire(self, name: str) -> None:
        self._timers.pop(name, None)
        self._apply(self.session.timer(name))

    def _send(self, data: bytes) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

    # --- I/O ----------------------------------------------------------------------------------------

    async def _connect(self) -> None:
        try:
            local = (self.local, 0) if self.local else None
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.peer, self.port, local_addr=local), timeout=3)
        except (OSError, TimeoutError) as exc:
            log.debug("BGP connect to %s failed: %s", self.peer, exc)
            self._apply(self.session.tcp_failed())
            return
        self._writer = writer
        self._apply(self.session.tcp_up())
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader, writer))

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read one connection's messages into the session, as long as it is the session's connection:
        once the session let it go (a NOTIFICATION's connection lingers a moment, and a new one may be
        up by then) what still arrives on it is not the session's any more, nor is its end."""
        buffer = b""
        loop = asyncio.get_running_loop()
        try:
            while self._writer is writer:
                chunk = await reader.read(65536)
                if not chunk or self._writer is not writer:
                    break
                since = loop.time()  # the read let others run
                buffer += chunk
                while True:
                    try:
                        frame, buffer = next_frame(buffer)
                    except BgpError as exc:  # a broken header: the stream cannot be trusted any more
                        self.counters["bad_messages"] += 1
                        self._apply(self.session.protocol_error(exc.code, exc.subcode, str(exc), exc.data))
                        return
                    if frame is None or self._writer is not writer:
                        break
                    self._message(frame)
                    if loop.time() - since >= READ_SLICE:
                        await asyncio.sleep(0)
                        since = loop.time()
        except (ConnectionError, OSError):
            pass
        if self._writer is writer and self.session.state is not fsm.State.IDLE:
            self._apply(self.session.tcp_down())

    def _message(self, frame: bytes) -> None:
        try:
            msg = decode(frame)
        except BgpError as exc:
            self.counters["bad_messages"] += 1
            self._apply(self.session.protocol_error(exc.code, exc.subcode, str(exc), exc.data))
            return
        match msg:
            case Open():
                cap = msg.capability(CapabilityCode.GRACEFUL_RESTART)
                self.peer_restart_time = (cap.restart_time if isinstance(cap, GracefulRestartCap) and any(
                    (f.afi, f.safi) == (Afi.L2VPN, Safi.EVPN) for f in cap.families) else None)
                self._apply(self.session.open(fsm.PeerOpen(msg.version, msg.asn, msg.hold_time, str(msg.bgp_id),
                                                           frozenset(msg.families), True)))
            case Keepalive():
                self._apply(self.session.keepalive())
            case Notification():
                self.notified = True
                self._apply(self.session.notification(msg.code, msg.subcode))
            case RouteRefresh():
                for upd in self.announce:  # RFC 2918: send our routes again
                    self._send(upd.encode())
            case UpdateResult():
                if msg.session_reset:
                    self.counters["bad_messages"] += 1
                    err = msg.error
                    self._apply(self.session.protocol_error(ErrorCode.UPDATE_MESSAGE,
                                                            err.subcode if err else 0, str(err),
                                                            err.data if err else b""))
                    return
                if msg.withdraw_nlri:
                    self.counters["withdrawn_by_7606"] += 1
                self._apply(self.session.update(msg))


def bgp_id(address: str) -> str:
    return str(IPv4Address(address))
