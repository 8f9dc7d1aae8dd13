"""A bare BGP peer for the reflector tests, on loopback: it sends the OPEN we tell it to (a hold time
of 0, another client's identifier), pre-encoded UPDATEs as fast as the socket takes them, keepalives
every second, and keeps every frame it receives with its arrival time (decoding only on demand, so
that a flood is cheap to receive)."""

from __future__ import annotations

import asyncio
import contextlib
import time

from bgp.codec import Keepalive, Notification, Open, Update, UpdateResult, decode, next_frame
from bgp.constants import MessageType
from bgp.evpn_nlri import RouteDistinguisher, encap_vxlan, mac_ip_route, route_target

ASN = 65000


class RawPeer:
    def __init__(self, port: int, local: str, router_id: str | None = None, *, hold: int = 9, asn: int = ASN,
                 host: str = "127.0.0.1"):
        self.port, self.local, self.host = port, local, host
        self.router_id = router_id or local
        self.hold, self.asn = hold, asn
        self.frames: list[tuple[float, bytes]] = []  # (monotonic arrival, whole message)
        self.closed = asyncio.Event()
        self.opened = asyncio.Event()  # the reflector's OPEN and KEEPALIVE arrived: Established
        self.watch: bytes | None = None  # a byte string to time in UPDATEs (see ``seen``)
        self.seen: list[float] = []
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task] = []

    async def connect(self) -> RawPeer:
        reader, writer = await asyncio.open_connection(self.host, self.port, local_addr=(self.local, 0))
        self._writer = writer
        writer.write(Open.build(self.asn, self.router_id, hold_time=self.hold).encode())
        self._tasks = [asyncio.get_running_loop().create_task(self._read(reader))]
        return self

    async def _read(self, reader: asyncio.StreamReader) -> None:
        buffer = b""
        got_open = False
        try:
            while True:
                chunk = await reader.read(1 << 16)
                if not chunk:
                    break
                buffer += chunk
                now = time.monotonic()
                while True:
                    frame, buffer = next_frame(buffer)
                    if frame is None:
                        break
                    self.frames.append((now, frame))
                    kind = frame[18]
                    if kind == MessageType.OPEN:
                        got_open = True
                        self.send(Keepalive().encode())
                    elif kind == MessageType.KEEPALIVE and got_open and not self.opened.is_set():
                        self.opened.set()
                        if self.hold:
                            self._tasks.append(asyncio.get_running_loop().create_task(self._keepalives()))
                    elif kind == MessageType.UPDATE and self.watch is not None and self.watch in frame:
                        self.seen.append(now)
        except (ConnectionError, OSError):
            pass
        self.closed.set()

    async def _keepalives(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.send(Keepalive().encode())

    def send(self, data: bytes) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

    async def drain(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self._writer is not None:
            self._writer.close()

    def messages(self, kind: int) -> list:
        return [decode(f) for _, f in self.frames if f[18] == kind]

    @property
    def notifications(self) -> list[tuple[int, int, bytes]]:
        return [(n.code, n.subcode, n.data) for n in self.messages(MessageType.NOTIFICATION)
                if isinstance(n, Notification)]

    def updates(self) -> list[Update]:
        return [r.update for r in self.messages(MessageType.UPDATE) if isinstance(r, UpdateResult) and r.update]

    def keepalive_times(self) -> list[float]:
        return [t for t, f in self.frames if f[18] == MessageType.KEEPALIVE]


def mac_flood(system_ip: str, count: int, vni: int = 100, first: int = 0, prefix: bytes = b"\x02\xaa") -> list[bytes]:
    """``count`` encoded UPDATEs, one type-2 route each (MAC ``prefix`` + i, RD system IP:vni),
    made by patching the MAC into one encoded template (encoding 50,000 would take seconds)."""
    template_mac = "02:aa:ff:ee:dd:cc"
    route = mac_ip_route(RouteDistinguisher.ipv4(system_ip, vni), template_mac, None, vni)
    template = Update.for_evpn((route,), system_ip, (route_target(ASN, vni), encap_vxlan())).encode()
    at = template.index(bytes.fromhex("02aaffeeddcc"))
    out = []
    for i in range(first, first + count):
        out.append(template[:at] + prefix + i.to_bytes(4, "big") + template[at + 6:])
    return out


def packed_flood(system_ip: str, count: int, per_update: int = 100, vni: int = 100) -> list[bytes]:
    """The same routes as ``mac_flood``, ``per_update`` to an UPDATE (fewer messages to decode)."""
    comms = (route_target(ASN, vni), encap_vxlan())
    rd = RouteDistinguisher.ipv4(system_ip, vni)
    out = []
    for start in range(0, count, per_update):
        routes = tuple(mac_ip_route(rd, "02:aa:" + ":".join(f"{b:02x}" for b in i.to_bytes(4, "big")), None, vni)
                       for i in range(start, min(start + per_update, count)))
        out.append(Update.for_evpn(routes, system_ip, comms).encode())
    return out


def count_flood_routes(frame: bytes) -> int:
    """Type-2 routes of a flood in one UPDATE: MAC length 48 then 02:aa."""
    return frame.count(b"\x30\x02\xaa")


async def until(pred, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.01)
