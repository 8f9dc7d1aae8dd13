"""Neighbour tables on raw rtnetlink sockets, parsed here without pyroute2 (nsg/dataplane/netlink.py,
nsg's netlink adapter, uses these for its dumps and for the EVPN watch's notifications).

FDB and neighbour tables hold tens of thousands of entries in a route flood (two and one per remote
MAC+IP): they are read one datagram at a time into compact records (NeighRecord), asking the kernel
for the devices that matter only; pyroute2 would build a message object of KBs for every entry. The
EVPN neighbour watch's notifications come the same way, through a socket filter (_raw_socket's
``bpf``) that drops in the kernel what the watch would ignore.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import socket
import struct
from collections.abc import Callable, Iterator

from nsg.dataplane.types import NeighRecord

log = logging.getLogger("nsg.dataplane.netlink")

AF_BRIDGE = 7
RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1

NDA_DST, NDA_LLADDR, NDA_IFINDEX, NDA_MASTER = 1, 2, 8, 9
NLA_TYPE_MASK = 0x3FFF
RTM_NEWLINK, RTM_DELLINK, RTM_GETNEIGH = 16, 17, 30
NLMSG_DONE, NLM_F_DUMP = 3, 0x300
DUMP_BUF = 64 * 1024  # the kernel fills a dump datagram up to 32 KiB
# An RTM_*NEIGH message, host byte order (rtnetlink(7), linux/neighbour.h), attributes 4-aligned:
#   0      4      6      8      12     16     17  18    20         24     26     27     28
#   | len  | type | flags| seq  | port | fam  | pad     | ifindex  | state| flags| type | NDA_* ...
NLMSGHDR = struct.Struct("=IHHII")
NDMSG = struct.Struct("=BxxxiHBB")
SO_ATTACH_FILTER = 26


@functools.lru_cache(maxsize=256)
def _ip_text(raw: bytes) -> str:
    """Text of an IPv4/IPv6 address; one string object per address (an FDB dump names the same few
    remote VTEPs thousands of times)."""
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def _messages(data: memoryview) -> Iterator[tuple[int, int, int, int]]:
    """(type, seq, body offset, end) of each netlink message in one datagram; a truncated one ends it."""
    off = 0
    while off + NLMSGHDR.size <= len(data):
        length, mtype, _flags, seq, _port = NLMSGHDR.unpack_from(data, off)
        if length < NLMSGHDR.size or off + length > len(data):
            return
        yield mtype, seq, off + NLMSGHDR.size, off + length
        off += (length + 3) & ~3


def _neigh_record(data: memoryview, off: int, end: int, present: bool) -> NeighRecord | None:
    """The entry of an RTM_NEWNEIGH/RTM_DELNEIGH body data[off:end]; None if too short for an ndmsg."""
    if end - off < NDMSG.size:
        return None
    family, ifindex, state, flags, _type = NDMSG.unpack_from(data, off)
    mac = dst = master = None
    a = off + NDMSG.size
    while a + 4 <= end:
        alen, atype = struct.unpack_from("=HH", data, a)
        if alen < 4 or a + alen > end:
            break
        atype &= NLA_TYPE_MASK
        if atype == NDA_LLADDR and alen > 4:
            mac = data[a + 4:a + alen].hex(":")
        elif atype == NDA_DST and alen - 4 in (4, 16):
            dst = _ip_text(bytes(data[a + 4:a + alen]))
        elif atype == NDA_MASTER and alen == 8:
            (master,) = struct.unpack_from("=I", data, a + 4)
        a += (alen + 3) & ~3
    return NeighRecord(present, family, ifindex, state, flags, mac, dst, master)


def _dump_neighbours(make: Callable[[], socket.socket], family: int, ifindex: int,
                     by_port: bool) -> Iterator[NeighRecord]:
    """A neighbour table dump, one datagram at a time, on its own socket (``make``). The kernel
    filters it: an FDB dump (AF_BRIDGE) to the entries on bridge port ``ifindex`` and its own (the
    request is an ifinfomsg, which the kernel reads as the bridge port to dump unless the socket asked
    for strict checks), an ARP dump to the entries on device ``ifindex`` (NDA_IFINDEX). An older kernel
    may ignore a filter: callers check the ifindex of what they get."""
    if by_port:
        body = struct.pack("=BxHiII", family, 0, ifindex, 0, 0)
    else:
        body = NDMSG.pack(family, 0, 0, 0, 0) + _nla(NDA_IFINDEX, struct.pack("=I", ifindex))
    buf = bytearray(DUMP_BUF)
    with make() as sock:
        sock.send(NLMSGHDR.pack(NLMSGHDR.size + len(body), RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body)
        while True:
            view = memoryview(buf)[:sock.recv_into(buf)]
            for mtype, seq, off, end in _messages(view):
                if seq != 1:
                    continue
                if mtype == NLMSG_DONE:
                    return
                if mtype == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", view, off)
                    if err:
                        raise OSError(-err, f"neighbour dump: {os.strerror(-err)}")
                    return
                if mtype == RTM_NEWNEIGH and (rec := _neigh_record(view, off, end, True)) is not None:
                    yield rec


def _raw_socket(rcvbuf: int = 1 << 20, groups: int = 0, bpf: bytes | None = None) -> socket.socket:
    """A raw rtnetlink socket (for requests with ``groups`` 0); its filter is attached before it joins
    the multicast groups, so nothing unfiltered is ever queued."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if bpf is not None:
            _attach_filter(sock, bpf)
        sock.settimeout(10)
        sock.bind((0, groups))
    except BaseException:
        sock.close()
        raise
    return sock


def _nla(kind: int, value: bytes) -> bytes:
    """One netlink attribute: length, type, value, padded to 4 octets."""
    return struct.pack("=HH", 4 + len(value), kind) + value + bytes(-len(value) % 4)


def _attach_filter(sock: socket.socket, program: bytes) -> None:
    code = ctypes.create_string_buffer(program, len(program))  # the kernel copies it during the call
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("@HP", len(program) // 8, ctypes.addressof(code)))
