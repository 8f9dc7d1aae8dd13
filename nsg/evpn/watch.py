"""The one module of nsg.evpn that reads the kernel: it watches the neighbour tables (rtnetlink
RTMGRP_NEIGH and RTMGRP_LINK, through nsg/dataplane/netlink.py) and reports
what the subnets' bridges learn on their LAN ports.

A thread reads a netlink socket (select with a short timeout, so stop() is prompt); every batch of
events it could read without blocking goes to ``deliver`` as MacEvent / IpEvent values (local.py).
``deliver`` is called on the watcher thread: the daemon hands the batch to its event loop.

At start, whenever the set of bridges changes and after an overflow, the watcher dumps the FDB of
the watched bridges' LAN ports and the IPv4 neighbours of those bridges (the kernel is asked for
those devices alone, and entries are turned into events as they come: never the whole tables, which
hold an entry per remote MAC) and delivers ``(vnis, events)`` as a resync: the full local state of
those VNIs.

Left aside: entries the kernel holds for itself (permanent: interface addresses), entries nsg
installed (extern_learn, NTF_SELF on the VXLAN devices, permanent neighbours), multicast MACs,
everything on the VXLAN ports (what is behind them is remote by definition). The first ones are
dropped in the kernel already (NeighEvents' socket filter): installing a flood of remote routes
(three notifications per MAC+IP) then leaves the socket's buffer to what is learned on the LAN, and
no local MAC is lost in an overflow while it happens.
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import struct
import sys
import threading
from collections.abc import Callable

from nsg.dataplane.netlink import NeighEvents
from nsg.dataplane.types import LinkRecord, NeighRecord
from nsg.evpn.local import IpEvent, MacEvent

log = logging.getLogger("nsg.evpn.watch")

RCVBUF = 4 << 20
AF_BRIDGE = 7
NTF_SELF = 0x02
NTF_EXT_LEARNED = 0x10
NUD_INCOMPLETE, NUD_REACHABLE, NUD_STALE, NUD_DELAY, NUD_PROBE = 0x01, 0x02, 0x04, 0x08, 0x10
NUD_FAILED, NUD_NOARP, NUD_PERMANENT = 0x20, 0x40, 0x80
NUD_VALID = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE

BPF_LDH, BPF_LDB, BPF_LDLEN, BPF_JEQ, BPF_JGE, BPF_JSET, BPF_RET = 0x28, 0x30, 0x80, 0x15, 0x35, 0x45, 0x06
RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29
NEIGH_MSG_LEN = 16 + 12  # nlmsghdr + ndmsg

Event = MacEvent | IpEvent
Deliver = Callable[[frozenset[int] | None, list[Event]], None]  # (resynced VNIs or None, events)
Instr = str | tuple[int, int] | tuple[int, int, str | None, str | None]


def _be16(value: int) -> int:
    """A host-order u16 (netlink's byte order) as a BPF half-word load, which reads big-endian, sees it."""
    return int.from_bytes(value.to_bytes(2, sys.byteorder), "big")


def assemble(program: list[Instr]) -> bytes:
    """struct sock_filter[] (linux/filter.h: u16 code, u8 jt, u8 jf, u32 k) from instructions
    (code, k[, label if true, label if false]) and the labels (str) before their targets; a label
    None is the next instruction."""
    at: dict[str, int] = {}
    code: list[tuple] = []
    for item in program:
        if isinstance(item, str):
            at[item] = len(code)
        else:
            code.append(item)
    out = []
    for n, (op, k, *jumps) in enumerate(code):
        jt, jf = (*jumps, None, None)[:2]
        out.append(struct.pack("=HBBI", op, at[jt] - n - 1 if jt else 0, at[jf] - n - 1 if jf else 0, k))
    return b"".join(out)


def ignored_filter() -> bytes:
    """The classic BPF socket filter the watch's netlink socket carries (NeighEvents): what _message
    leaves aside by flags and state is dropped by the kernel before it is queued, so it neither fills
    the receive buffer nor wakes this thread: FDB entries flagged NTF_SELF (a device's own, e.g. the
    VXLAN device's remote VTEPs) or NTF_EXT_LEARNED (EVPN's, on the VXLAN ports) or permanent; IPv4
    neighbours permanent or noarp (nsg's, interface addresses); families other than those two. Learned
    entries pass, appearing and going (the RTM_DELNEIGH of an entry carries its own flags and state),
    and so does every other notification (links). A notification is one message per datagram
    (rtnl_notify), so the first message is all there is to look at:

      0      4      6                16     17            20          24     26     27
      | len  | type | flags seq port | fam  | pad         | ifindex   | state| flags| type |
        nlmsghdr (host byte order)     ndmsg (linux/neighbour.h)
    """
    return assemble([
        (BPF_LDH, 4),
        (BPF_JEQ, _be16(RTM_NEWNEIGH), "neigh", None),
        (BPF_JEQ, _be16(RTM_DELNEIGH), "neigh", "accept"),
        "neigh",
        (BPF_LDLEN, 0),
        (BPF_JGE, NEIGH_MSG_LEN, None, "accept"),  # too short to judge: _message decides
        (BPF_LDB, 16),
        (BPF_JEQ, AF_BRIDGE, None, "inet"),
        (BPF_LDB, 26),
        (BPF_JSET, NTF_SELF | NTF_EXT_LEARNED, "drop", None),
        (BPF_LDH, 24),
        (BPF_JSET, _be16(NUD_PERMANENT), "drop", "accept"),
        "inet",
        (BPF_JEQ, socket.AF_INET, None, "drop"),
        (BPF_LDH, 24),
        (BPF_JSET, _be16(NUD_PERMANENT | NUD_NOARP), "drop", "accept"),
        "accept",
        (BPF_RET, 0xFFFFFFFF),
        "drop",
        (BPF_RET, 0),
    ])


class NeighWatch:
    def __init__(self, deliver: Deliver):
        self.deliver = deliver
        self._bridges: dict[str, int] = {}  # bridge name -> VNI
        self._lock = threading.Lock()
        self._resync = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._links: dict[int, tuple[str, int | None, str | None]] = {}  # ifindex -> (name, master, kind)
        self.counters = {"events": 0, "resyncs": 0, "errors": 0, "overflows": 0, "unfiltered": 0}

    def set_bridges(self, bridges: dict[str, int]) -> None:
        with self._lock:
            if bridges == self._bridges:
                return
            self._bridges = dict(bridges)
        self._resync.set()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="evpn-neigh-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    # --- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                # subscribed before the dump (NeighEvents): nothing falls between the two
                with NeighEvents(RCVBUF, ignored_filter()) as nl:
                    self.counters["unfiltered"] = int(not nl.filtered)
                    self._resync.set()
                    self._loop(nl)
            except Exception as exc:  # noqa: BLE001 - a netlink failure must not end local learning for good
                self.counters["errors"] += 1
                log.warning("neighbour watch failed, restarting: %s", exc)
                self._stop.wait(1.0)

    def _loop(self, nl: NeighEvents) -> None:
        while not self._stop.is_set():
            if self._resync.is_set():
                self._resync.clear()
                self._full(nl)
            ready, _, _ = select.select([nl], [], [], 0.2)
            if not ready:
                continue
            events: list[Event] = []
            while ready:
                try:
                    messages = nl.read()
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:
                        raise
                    # the kernel dropped events (a burst beyond the buffer): read it all again
                    self.counters["overflows"] += 1
                    self._resync.set()
                    break
                for msg in messages:
                    self._message(msg, events)
                ready, _, _ = select.select([nl], [], [], 0)
            if events:
                self.counters["events"] += len(events)
                self.deliver(None, events)

    def _full(self, nl: NeighEvents) -> None:
        self._links = {}
        for link in nl.links():
            self._link(link)
        with self._lock:
            vnis = frozenset(self._bridges.values())
            names = set(self._bridges)
        bridges = [i for i, (name, _m, _k) in self._links.items() if name in names]
        ports = [i for i, (_n, master, kind) in self._links.items() if master in bridges and kind != "vxlan"]
        events: list[Event] = []
        for rec in nl.neighbours(ports, bridges):
            self._message(rec, events)
        self.counters["resyncs"] += 1
        self.deliver(vnis, events)

    def _link(self, link: LinkRecord) -> None:
        if link.present:
            self._links[link.index] = (link.name or "", link.master, link.kind)
        else:
            self._links.pop(link.index, None)

    def _vni_of(self, bridge_index: int | None) -> int | None:
        link = self._links.get(bridge_index) if bridge_index is not None else None
        if link is None:
            return None
        with self._lock:
            return self._bridges.get(link[0])

    def _message(self, m: LinkRecord | NeighRecord, events: list[Event]) -> None:
        if isinstance(m, LinkRecord):
            self._link(m)
            return
        mac, state, flags, ifindex = m.mac, m.state, m.flags, m.ifindex
        if m.family == AF_BRIDGE:
            port = self._links.get(ifindex)
            master = m.master or (port[1] if port else None)
            vni = self._vni_of(master)
            if vni is None or not mac or ifindex == master:
                return
            if flags & (NTF_SELF | NTF_EXT_LEARNED) or state & NUD_PERMANENT:
                return
            if int(mac.split(":")[0], 16) & 1:  # multicast / broadcast
                return
            if port is not None and port[2] == "vxlan":
                return
            events.append(MacEvent(vni, mac.lower(), str(ifindex), m.present))
        elif m.family == socket.AF_INET:
            vni = self._vni_of(ifindex)
            ip = m.dst
            if vni is None or not ip or state & (NUD_PERMANENT | NUD_NOARP):
                return
            if m.present and mac and state & NUD_VALID:
                events.append(IpEvent(vni, ip, mac.lower(), True))
            else:
                events.append(IpEvent(vni, ip, (mac or "").lower(), False))
