"""The neighbour watch's kernel-side socket filter (nsg/evpn/watch.py ignored_filter), run here by a
small classic-BPF interpreter over notifications built byte by byte: it drops what nsg installs
itself (the flood of remote entries that overflowed the socket and lost local MACs) and never drops
anything the watch would report, including a learned entry going away. Also the netlink adapter's
parser of those notifications (nsg/dataplane/netlink.py), which the watch reads."""

from __future__ import annotations

import itertools
import socket
import struct

import pytest

from nsg.dataplane.neigh_netlink import _messages, _neigh_record
from nsg.dataplane.types import LinkRecord
from nsg.evpn.watch import (
    AF_BRIDGE,
    NTF_EXT_LEARNED,
    NTF_SELF,
    NUD_DELAY,
    NUD_FAILED,
    NUD_INCOMPLETE,
    NUD_NOARP,
    NUD_PERMANENT,
    NUD_REACHABLE,
    NUD_STALE,
    NeighWatch,
    ignored_filter,
)

RTM_NEWLINK, RTM_NEWNEIGH, RTM_DELNEIGH = 16, 28, 29
NTF_MASTER, NTF_STICKY, NTF_ROUTER = 0x04, 0x40, 0x80
BRIDGE, LAN_PORT, VXLAN_PORT = 5, 6, 7
MAC = "02:aa:00:00:00:01"


def run_bpf(program: bytes, packet: bytes) -> int:
    """Classic BPF as the kernel runs a socket filter (the opcodes ignored_filter uses): loads are
    big-endian, a load past the end rejects the packet (0)."""
    a, pc = 0, 0
    while True:
        code, jt, jf, k = struct.unpack_from("=HBBI", program, pc * 8)
        pc += 1
        if code == 0x06:  # ret #k
            return k
        if code in (0x28, 0x30):  # ldh [k], ldb [k]
            size = 2 if code == 0x28 else 1
            if k + size > len(packet):
                return 0
            a = int.from_bytes(packet[k:k + size], "big")
        elif code == 0x80:  # ld #len
            a = len(packet)
        elif code in (0x15, 0x35, 0x45):  # jeq, jge, jset #k
            hit = a == k if code == 0x15 else a >= k if code == 0x35 else bool(a & k)
            pc += jt if hit else jf
        else:
            raise AssertionError(f"opcode {code:#x} not modelled")


def neigh_msg(mtype: int, family: int, ifindex: int, state: int, flags: int, mac: str | None = MAC,
              dst: str | None = None, master: int | None = None) -> bytes:
    attrs = b""
    if dst:
        raw = socket.inet_pton(socket.AF_INET if "." in dst else socket.AF_INET6, dst)
        attrs += struct.pack("=HH", 4 + len(raw), 1) + raw
    if mac:
        attrs += struct.pack("=HH", 10, 2) + bytes.fromhex(mac.replace(":", "")) + b"\0\0"
    if master is not None:
        attrs += struct.pack("=HHI", 8, 9, master)
    body = struct.pack("=BxxxiHBB", family, ifindex, state, flags, 0) + attrs
    return struct.pack("=IHHII", 16 + len(body), mtype, 0, 0, 0) + body


def reported(msg: bytes) -> list:
    """What the watch makes of a notification: br-100 (VNI 100) with a LAN port and a VXLAN port."""
    w = NeighWatch(lambda _v, _e: None)
    w._bridges = {"br-100": 100}
    w._links = {BRIDGE: ("br-100", None, "bridge"), LAN_PORT: ("lan0", BRIDGE, "veth"),
                VXLAN_PORT: ("vx-100", BRIDGE, "vxlan")}
    view = memoryview(msg)
    events: list = []
    for mtype, _seq, off, end in _messages(view):
        rec = _neigh_record(view, off, end, mtype == RTM_NEWNEIGH)
        assert rec is not None
        w._message(rec, events)
    return events


FLAGS = [0, NTF_SELF, NTF_MASTER, NTF_EXT_LEARNED, NTF_STICKY, NTF_ROUTER, NTF_SELF | NTF_EXT_LEARNED,
         NTF_MASTER | NTF_EXT_LEARNED]
STATES = [NUD_INCOMPLETE, NUD_REACHABLE, NUD_STALE, NUD_DELAY, NUD_FAILED, NUD_NOARP, NUD_PERMANENT, 0]


@pytest.mark.parametrize("family", [AF_BRIDGE, socket.AF_INET, socket.AF_INET6])
def test_the_filter_drops_nothing_the_watch_would_report(family):
    program = ignored_filter()
    dropped = 0
    for mtype, ifindex, state, flags in itertools.product(
            (RTM_NEWNEIGH, RTM_DELNEIGH), (BRIDGE, LAN_PORT, VXLAN_PORT), STATES, FLAGS):
        dst = None if family == AF_BRIDGE else "198.19.0.5" if family == socket.AF_INET else "2001:db8::5"
        master = BRIDGE if family == AF_BRIDGE and flags & NTF_SELF == 0 else None
        msg = neigh_msg(mtype, family, ifindex, state, flags, dst=dst, master=master)
        if run_bpf(program, msg) == 0:
            dropped += 1
            assert reported(msg) == [], (mtype, family, ifindex, hex(state), hex(flags))
    assert dropped  # the filter does something for every family


def test_what_nsg_installs_is_dropped_in_the_kernel():
    program = ignored_filter()
    for mtype in (RTM_NEWNEIGH, RTM_DELNEIGH):
        # the bridge's extern_learn entry on the VXLAN port, the VXLAN device's own entry, the ARP entry
        ours = [neigh_msg(mtype, AF_BRIDGE, VXLAN_PORT, NUD_REACHABLE, NTF_EXT_LEARNED, master=BRIDGE),
                neigh_msg(mtype, AF_BRIDGE, VXLAN_PORT, NUD_PERMANENT, NTF_SELF | NTF_EXT_LEARNED,
                          dst="198.18.1.1"),
                neigh_msg(mtype, socket.AF_INET, BRIDGE, NUD_PERMANENT, 0, dst="198.19.0.9")]
        assert [run_bpf(program, m) for m in ours] == [0, 0, 0]


def test_learned_entries_and_links_pass_appearing_and_going():
    program = ignored_filter()
    for mtype in (RTM_NEWNEIGH, RTM_DELNEIGH):
        for state in (NUD_REACHABLE, NUD_STALE):
            msg = neigh_msg(mtype, AF_BRIDGE, LAN_PORT, state, 0, master=BRIDGE)
            assert run_bpf(program, msg) != 0
            assert [e.present for e in reported(msg)] == [mtype == RTM_NEWNEIGH]
        for state in (NUD_REACHABLE, NUD_STALE, NUD_FAILED, NUD_INCOMPLETE):
            msg = neigh_msg(mtype, socket.AF_INET, BRIDGE, state, 0, dst="198.19.0.5")
            assert run_bpf(program, msg) != 0 and len(reported(msg)) == 1
    link = struct.pack("=IHHII", 32, RTM_NEWLINK, 0, 0, 0) + bytes(16)
    assert run_bpf(program, link) != 0
    short = struct.pack("=IHHII", 20, RTM_NEWNEIGH, 0, 0, 0) + bytes([AF_BRIDGE, 0, 0, 0])
    assert run_bpf(program, short) != 0  # too short to judge: user space decides


def test_the_parser_reads_the_attributes_and_stops_at_truncation():
    msg = neigh_msg(RTM_NEWNEIGH, AF_BRIDGE, VXLAN_PORT, NUD_PERMANENT, NTF_SELF, dst="198.18.1.1", master=BRIDGE)
    view = memoryview(msg + msg[:20])  # a second message cut short is not read
    found = list(_messages(view))
    assert len(found) == 1
    _t, _s, off, end = found[0]
    rec = _neigh_record(view, off, end, True)
    assert rec is not None
    assert (rec.family, rec.ifindex, rec.state, rec.flags) == (AF_BRIDGE, VXLAN_PORT, NUD_PERMANENT, NTF_SELF)
    assert (rec.mac, rec.dst, rec.master) == (MAC, "198.18.1.1", BRIDGE)
    bad_attr = msg[:28] + struct.pack("=HH", 200, 2) + msg[32:]  # an attribute longer than its message
    rec = _neigh_record(memoryview(bad_attr), 16, len(bad_attr), False)
    assert rec is not None and rec.mac is None and not rec.present
    assert _neigh_record(memoryview(msg), 16, 20, True) is None


def test_link_records_update_the_watch():
    w = NeighWatch(lambda _v, _e: None)
    events: list = []
    w._message(LinkRecord(True, 9, "lan1", BRIDGE, "veth"), events)
    assert w._links[9] == ("lan1", BRIDGE, "veth") and events == []
    w._message(LinkRecord(False, 9, "lan1", None, None), events)
    assert 9 not in w._links
