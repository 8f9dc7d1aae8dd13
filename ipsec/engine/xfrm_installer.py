"""Child SAs from IKE into the kernel (XFRM backend), and the NAT-T socket the kernel decapsulates on.

Make-before-break like the userspace installer: a rekeyed child's inbound state goes in
first; its outbound state only on activation (the kernel sends with the newest state of
a reqid, so adding it is the switch).
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable

from ipsec.engine import xfrm_codec as x
from ipsec.engine.xfrm import XfrmBackend
from ipsec.ike.events import ChildSa
from ipsec.natt import KEEPALIVE, NON_ESP_MARKER

SOL_UDP = 17
UDP_ENCAP = 100


class XfrmInstaller:
    def __init__(self, backend: XfrmBackend, local_ip: Callable[[], str]):
        self.backend = backend
        self.local_ip = local_ip
        self.children: dict[tuple[str, int], ChildSa] = {}
        self.active: set[tuple[str, int]] = set()
        self.reqids: dict[str, int] = {}
        self.policies: dict[str, tuple[x.Selector, x.Selector]] = {}

    def _reqid(self, peer: str) -> int:
        return self.reqids.setdefault(peer, len(self.reqids) + 1)

    def install(self, peer: str, child: ChildSa, outbound: bool) -> None:
        local, remote = self.local_ip(), child.peer[0]
        sel_in = x.Selector(str(child.remote_ts), str(child.local_ts))
        self.backend.add_sa(x.XfrmSa(remote, local, child.in_spi, child.in_key, self._reqid(peer), sel_in,
                                     (child.peer[1], 4500), child.esn))
        self.children[(peer, child.child_id)] = child
        if peer not in self.policies:
            sel_out = x.Selector(str(child.local_ts), str(child.remote_ts))
            reqid = self._reqid(peer)
            self.backend.add_policy(x.XfrmPolicy(sel_out, x.XFRM_POLICY_OUT, local, remote, reqid))
            self.backend.add_policy(x.XfrmPolicy(sel_in, x.XFRM_POLICY_IN, remote, local, reqid))
            self.backend.add_policy(x.XfrmPolicy(sel_in, x.XFRM_POLICY_FWD, remote, local, reqid))
            self.policies[peer] = (sel_out, sel_in)
        if outbound:
            self.activate(peer, child.child_id)

    def activate(self, peer: str, child_id: int) -> None:
        child = self.children[(peer, child_id)]
        sel_out = x.Selector(str(child.local_ts), str(child.remote_ts))
        self.backend.add_sa(x.XfrmSa(self.local_ip(), child.peer[0], child.out_spi, child.out_key,
                                     self._reqid(peer), sel_out, (4500, child.peer[1]), child.esn))
        self.active.add((peer, child_id))

    def remove(self, peer: str, child_id: int, in_spi: int, out_spi: int) -> None:
        child = self.children.pop((peer, child_id), None)
        if child is None:
            return
        self.backend.del_sa(self.local_ip(), in_spi)
        if (peer, child_id) in self.active:
            self.active.discard((peer, child_id))
            self.backend.del_sa(child.peer[0], out_spi)
        if not any(p == peer for p, _ in self.children) and peer in self.policies:
            sel_out, sel_in = self.policies.pop(peer)
            self.backend.del_policy(sel_out, x.XFRM_POLICY_OUT)
            self.backend.del_policy(sel_in, x.XFRM_POLICY_IN)
            self.backend.del_policy(sel_in, x.XFRM_POLICY_FWD)


class EncapSocket:
    """UDP 4500 with UDP_ENCAP_ESPINUDP: the kernel takes the ESP, we get IKE (RFC 3948 2.2).

    Sends raise OSError like sendto (the IKE driver counts them and lets its timers retry);
    receive errors are counted here, by errno, and never reach the event loop."""

    def __init__(self, on_ike: Callable[[bytes, tuple[str, int], int], None], port: int = 4500):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", port))
        self.sock.setsockopt(SOL_UDP, UDP_ENCAP, x.UDP_ENCAP_ESPINUDP)
        self.sock.setblocking(False)
        self.on_ike = on_ike
        self.counters: dict[str, int] = {}  # "recv_errors.<errno name>"
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(65536)
            except BlockingIOError:
                return
            except OSError as exc:  # a pending socket error (an ICMP report) is given once; the reader stays
                key = f"recv_errors.{errno.errorcode.get(exc.errno or 0, exc.errno)}"
                self.counters[key] = self.counters.get(key, 0) + 1
                return
            if data[:4] == NON_ESP_MARKER:
                self.on_ike(data[4:], addr, 0)

    def send_ike(self, message: bytes, peer: tuple[str, int], sock: int = 0) -> None:
        self.sock.sendto(NON_ESP_MARKER + message, peer)

    def send_keepalive(self, peer: tuple[str, int], sock: int = 0) -> None:
        self.sock.sendto(KEEPALIVE, peer)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()
