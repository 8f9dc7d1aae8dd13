"""Sockets inside a lab namespace, opened by this process (bench/evpn_flood.py): ``socket_in`` makes
one there (a raw packet socket to send a host's frame, a netlink socket to listen), and ``FdbWatch``
notes when each MAC of interest first gets a kernel FDB entry toward a remote VTEP. Raw netlink parsed
here, no pyroute2: a flood installs thousands of entries and a heavier reader would take CPU from the
daemons being measured.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import threading
import time
from ipaddress import IPv4Address

from _evpn_lab import BenchError

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def socket_in(ns: str, *args: int) -> socket.socket:
    """A socket created in network namespace ``ns``: a short-lived thread enters it (setns changes only
    the calling thread's namespace) and makes the socket there; it stays bound to that namespace."""
    out: dict = {}

    def make() -> None:
        try:
            with open(f"/run/netns/{ns}", "rb") as f:
                if _libc.setns(f.fileno(), CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            out["sock"] = socket.socket(*args)
        except OSError as exc:
            out["error"] = exc

    t = threading.Thread(target=make)
    t.start()
    t.join()
    if "error" in out:
        raise BenchError(f"socket in {ns}: {out['error']}")
    return out["sock"]


class FdbWatch:
    """RTM_NEWNEIGH (bridge family) in a namespace: the first time each MAC starting with ``prefix`` gets an
    entry with a remote VTEP (NDA_DST), by MAC. A raw netlink socket, parsed here: a flood installs
    thousands of entries and a pyroute2 reader would take CPU from the daemons being measured."""

    RTMGRP_NEIGH, RTM_NEWNEIGH, AF_BRIDGE, NDA_DST, NDA_LLADDR = 0x4, 28, 7, 1, 2

    def __init__(self, ns: str, prefix: bytes):
        self.prefix = prefix
        self.sock = socket_in(ns, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE: a flood's events fit
        self.sock.bind((0, self.RTMGRP_NEIGH))
        self.sock.settimeout(0.2)
        self.seen: dict[str, tuple[int, str]] = {}  # mac -> (t, dst)
        self.overruns = 0
        self.events = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="fdb-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError as exc:
                if exc.errno == 105:  # ENOBUFS: events were lost; a missed sample will say so
                    self.overruns += 1
                    continue
                return
            t = time.monotonic_ns()
            off = 0
            while off + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, off)
                if length < 16:
                    break
                if kind == self.RTM_NEWNEIGH and data[off + 16] == self.AF_BRIDGE:
                    self.events += 1
                    self._neigh(data, off + 28, off + length, t)  # nlmsghdr 16 + ndmsg 12
                off += (length + 3) & ~3

    def _neigh(self, data: bytes, a: int, end: int, t: int) -> None:
        mac = dst = None
        while a + 4 <= end:
            alen, kind = struct.unpack_from("=HH", data, a)
            if alen < 4:
                break
            if kind == self.NDA_LLADDR:
                mac = data[a + 4:a + alen]
            elif kind == self.NDA_DST:
                dst = data[a + 4:a + alen]
            a += (alen + 3) & ~3
        if mac and dst and mac.startswith(self.prefix):
            text = ":".join(f"{b:02x}" for b in mac)
            if text not in self.seen:
                self.seen[text] = (t, str(IPv4Address(dst)) if len(dst) == 4 else dst.hex())

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()
