"""The one module of nsg.evpn that reads the kernel: it watches the neighbour tables (rtnetlink
RTMGRP_NEIGH and RTMGRP_LINK, through nsg's netlink adapter: nsg/dataplane/netlink.py) and reports
what the subnets' bridges learn on their LAN ports.

A thread reads a netlink socket (select with a short timeout, so stop() is prompt); every batch of
events it could read without blocking goes to ``deliver`` as MacEvent / IpEvent values (local.py).
``deliver`` is called on the watcher thread: the daemon hands the batch to its event loop.

At start and whenever the set of bridges changes, the watcher dumps the bridge FDB and the IPv4
neighbour table and delivers ``(vnis, events)`` as a resync: the full local state of those VNIs.

Left aside: entries the kernel holds for itself (permanent: interface addresses), entries nsg
installed (extern_learn, NTF_SELF on the VXLAN devices, permanent neighbours), multicast MACs,
everything on the VXLAN ports (what is behind them is remote by definition).
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import threading
from collections.abc import Callable

from nsg.dataplane.netlink import NeighEvents
from nsg.evpn.local import IpEvent, MacEvent

log = logging.getLogger("nsg.evpn.watch")

RCVBUF = 4 << 20
AF_BRIDGE = 7
NTF_SELF = 0x02
NTF_EXT_LEARNED = 0x10
NUD_INCOMPLETE, NUD_REACHABLE, NUD_STALE, NUD_DELAY, NUD_PROBE = 0x01, 0x02, 0x04, 0x08, 0x10
NUD_FAILED, NUD_NOARP, NUD_PERMANENT = 0x20, 0x40, 0x80
NUD_VALID = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE

Event = MacEvent | IpEvent
Deliver = Callable[[frozenset[int] | None, list[Event]], None]  # (resynced VNIs or None, events)


class NeighWatch:
    def __init__(self, deliver: Deliver):
        self.deliver = deliver
        self._bridges: dict[str, int] = {}  # bridge name -> VNI
        self._lock = threading.Lock()
        self._resync = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._links: dict[int, tuple[str, int | None, str | None]] = {}  # ifindex -> (name, master, kind)
        self.counters = {"events": 0, "resyncs": 0, "errors": 0, "overflows": 0}

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
                with NeighEvents(RCVBUF) as nl:
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
        for m in nl.links():
            self._link(m)
        events: list[Event] = []
        for m in nl.neighbours():
            self._message(m, events)
        with self._lock:
            vnis = frozenset(self._bridges.values())
        self.counters["resyncs"] += 1
        self.deliver(vnis, events)

    def _link(self, m) -> None:
        info = m.get("IFLA_LINKINFO")
        kind = info.get("IFLA_INFO_KIND") if info else None
        if m.get("event") == "RTM_DELLINK":
            self._links.pop(m["index"], None)
        else:
            self._links[m["index"]] = (m.get("ifname"), m.get("IFLA_MASTER"), kind)

    def _vni_of(self, bridge_index: int | None) -> int | None:
        link = self._links.get(bridge_index) if bridge_index is not None else None
        if link is None:
            return None
        with self._lock:
            return self._bridges.get(link[0])

    def _message(self, m, events: list[Event]) -> None:
        event = m.get("event")
        if event in ("RTM_NEWLINK", "RTM_DELLINK"):
            self._link(m)
            return
        if event not in ("RTM_NEWNEIGH", "RTM_DELNEIGH"):
            return
        present = event == "RTM_NEWNEIGH"
        mac = m.get("NDA_LLADDR")
        state, flags, ifindex = m.get("state", 0), m.get("flags", 0), m.get("ifindex")
        if m.get("family") == AF_BRIDGE:
            port = self._links.get(ifindex)
            master = m.get("NDA_MASTER") or (port[1] if port else None)
            vni = self._vni_of(master)
            if vni is None or not mac or ifindex == master:
                return
            if flags & (NTF_SELF | NTF_EXT_LEARNED) or state & NUD_PERMANENT:
                return
            if int(mac.split(":")[0], 16) & 1:  # multicast / broadcast
                return
            if port is not None and port[2] == "vxlan":
                return
            events.append(MacEvent(vni, mac.lower(), str(ifindex), present))
        elif m.get("family") == socket.AF_INET:
            vni = self._vni_of(ifindex)
            ip = m.get("NDA_DST")
            if vni is None or not ip or state & (NUD_PERMANENT | NUD_NOARP):
                return
            if present and mac and state & NUD_VALID:
                events.append(IpEvent(vni, ip, mac.lower(), True))
            else:
                events.append(IpEvent(vni, ip, (mac or "").lower(), False))
