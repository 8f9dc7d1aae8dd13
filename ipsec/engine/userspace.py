"""The userspace ESP engine: TUN <-> ESP-in-UDP (RFC 3948), for kernels without ESP.

One dedicated thread runs an epoll loop over the TUN fd, the UDP sockets (one per
uplink, port 4500) and a wake-up pipe. Each ready fd is drained until EAGAIN, into
preallocated buffers; outbound packets leave with one sendmsg of two buffers, so
the hot path allocates only what the AEAD returns. No asyncio on the packet path.

The control plane changes SAs through the shared Sad (copy-on-write dicts) and
receives IKE messages that arrive on port 4500 through ``on_ike``, which is called
in the engine thread (hand it to the event loop with call_soon_threadsafe).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import struct
import threading
from collections.abc import Callable
from socket import IP_TOS, IPPROTO_IP

from ipsec.constants import IPPROTO_IPIP, NATT_PORT
from ipsec.engine.tun import open_tun
from ipsec.esp import EspError, SaExhausted
from ipsec.natt import KEEPALIVE, NON_ESP_MARKER
from ipsec.sad import Sad

log = logging.getLogger("ipsec.engine")

BUF_SIZE = 65536
HEADROOM = 8  # room after the inner packet for ESP padding + trailer

IkeHandler = Callable[[bytes, tuple[str, int], int], None]  # (IKE message, peer address, socket index)

TOS_INT = [struct.pack("i", tos) for tos in range(256)]  # IP_TOS ancillary data, prebuilt per value

COUNTERS = (
    "tun_in", "tun_out", "udp_in", "udp_out", "no_sa", "unknown_spi", "truncated", "ike_in", "keepalives_in",
    "esp_drops", "bad_inner", "send_errors", "tun_write_errors", "sa_exhausted", "recv_errors",
)


class UserspaceEngine:
    backend = "userspace"

    def __init__(self, tun_name: str, sad: Sad, on_ike: IkeHandler | None = None):
        self.tun_name = tun_name
        self.sad = sad
        self.on_ike = on_ike
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.sockets: list[socket.socket] = []
        self._tun = -1
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._running = False

    # --- setup -------------------------------------------------------------

    def open(self) -> None:
        self._tun = open_tun(self.tun_name)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def add_socket(self, local_addr: str = "0.0.0.0", port: int = NATT_PORT) -> int:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((local_addr, port))
        s.setblocking(False)
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.sockets.append(s)
        if self._running:
            self._poke()
        return len(self.sockets) - 1

    def start(self) -> None:
        if self._tun < 0:
            self.open()
        self._running = True
        self._thread = threading.Thread(target=self._loop, name=f"esp-{self.tun_name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._running = False
        if self._thread:
            self._poke()
            self._thread.join(5)
        for s in self.sockets:
            s.close()
        self.sockets = []
        for fd in (self._tun, self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._tun = self._wake_r = self._wake_w = -1

    def _poke(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    # --- control-plane helpers (any thread) ----------------------------------

    # These two raise OSError as sendto does (ENETUNREACH while the WAN is down, EPERM when
    # nftables drops our output): the IKE driver counts it per errno and its timers retry.

    def send_ike(self, message: bytes, peer: tuple[str, int], sock: int = 0) -> None:
        """IKE on port 4500 carries the non-ESP marker (RFC 3948 2.2)."""
        self.sockets[sock].sendto(NON_ESP_MARKER + message, peer)

    def send_keepalive(self, peer: tuple[str, int], sock: int = 0) -> None:
        self.sockets[sock].sendto(KEEPALIVE, peer)

    # --- the packet loop (engine thread) --------------------------------------

    def _loop(self) -> None:
        ep = select.epoll()
        ep.register(self._tun, select.EPOLLIN)
        ep.register(self._wake_r, select.EPOLLIN)
        registered: dict[int, int] = {}
        tun_buf = bytearray(BUF_SIZE + HEADROOM)
        udp_buf = bytearray(BUF_SIZE)
        try:
            while self._running:
                for i, s in enumerate(self.sockets):
                    if s.fileno() not in registered:
                        ep.register(s.fileno(), select.EPOLLIN)
                        registered[s.fileno()] = i
                for fd, _ev in ep.poll(1.0):
                    if fd == self._tun:
                        self._drain_tun(tun_buf)
                    elif fd == self._wake_r:
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wake_r, 4096)
                    elif fd in registered:
                        self._drain_udp(registered[fd], udp_buf)
        finally:
            ep.close()

    def _drain_tun(self, buf: bytearray) -> None:
        c = self.counters
        tun = self._tun
        view = memoryview(buf)
        inbuf = [view[:BUF_SIZE]]
        while True:
            try:
                n = os.readv(tun, inbuf)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            c["tun_in"] += 1
            if n < 20 or buf[0] >> 4 != 4:
                c["bad_inner"] += 1
                continue
            out = self.sad.outbound.get(bytes(buf[16:20]))
            if out is None:
                c["no_sa"] += 1
                continue
            try:
                head, body = out.sa.seal_into(buf, n, IPPROTO_IPIP)
            except SaExhausted:
                c["sa_exhausted"] += 1
                continue
            ep = out.endpoint
            # The inner packet's DSCP goes to the outer header (RFC 4303 tunnel mode, RFC 2983 uniform
            # model) so the uplink's shaper can classify encrypted traffic; ECN is not copied.
            dscp = buf[1] & 0xFC
            anc = [(IPPROTO_IP, IP_TOS, TOS_INT[dscp])] if dscp else []
            try:
                self.sockets[ep.socket].sendmsg((head, body), anc, 0, (ep.host, ep.port))
                c["udp_out"] += 1
            except (BlockingIOError, OSError):
                c["send_errors"] += 1

    def _drain_udp(self, index: int, buf: bytearray) -> None:
        c = self.counters
        sock = self.sockets[index]
        view = memoryview(buf)
        tun = self._tun
        inbound = self.sad.inbound
        while True:
            try:
                n, addr = sock.recvfrom_into(buf)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EINTR, errno.ECONNREFUSED):
                    continue
                # a socket error must not end the engine thread: count it, epoll calls again
                c["recv_errors"] += 1
                return
            c["udp_in"] += 1
            if n < 8:
                if n == 1 and buf[0] == 0xFF:
                    c["keepalives_in"] += 1
                else:
                    c["truncated"] += 1
                continue
            if buf[0] == 0 and buf[1] == 0 and buf[2] == 0 and buf[3] == 0:
                c["ike_in"] += 1
                if self.on_ike is not None:
                    self.on_ike(bytes(buf[4:n]), addr, index)
                continue
            entry = inbound.get(int.from_bytes(buf[:4], "big"))
            if entry is None:
                entry = self.sad.inbound.get(int.from_bytes(buf[:4], "big"))  # installed since we last looked
                inbound = self.sad.inbound
                if entry is None:
                    c["unknown_spi"] += 1
                    continue
            try:
                nh, inner = entry.sa.open(view[:n])
            except EspError:
                c["esp_drops"] += 1
                continue
            # RFC 4301 5.2: the inner packet must match the SA's selectors.
            if nh != IPPROTO_IPIP or len(inner) < 20 or inner[0] >> 4 != 4 or inner[12:16] != entry.peer:
                c["bad_inner"] += 1
                continue
            try:
                os.write(tun, inner)
                c["tun_out"] += 1
            except OSError:
                c["tun_write_errors"] += 1
