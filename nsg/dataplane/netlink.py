"""The one module of nsg that talks to the kernel through pyroute2 (rtnetlink).

snapshot() reads what the planner needs; apply() performs one planned operation.
Both block: the daemon calls them from a worker thread.

FDB and neighbour tables hold tens of thousands of entries in a route flood (two and one per remote
MAC+IP): they are read on raw netlink sockets (nsg/dataplane/neigh_netlink.py), one datagram at a
time into compact records (NeighRecord), and written the same way (apply_many); pyroute2 would build
a message object of KBs for every entry.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from nsg.dataplane import pyroute2_light  # noqa: F401  (first: pyroute2 without its whole API)

# isort: split
from pyroute2.iproute.linux import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTMGRP_LINK, RTMGRP_NEIGH
from pyroute2.netlink.rtnl.marshal import MarshalRtnl
from pyroute2.netns import popns, pushns

from nsg.dataplane.errors import DataplaneError
from nsg.dataplane.neigh_netlink import (
    AF_BRIDGE,
    DUMP_BUF,
    NDA_DST,
    NDA_LLADDR,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    NLMSGHDR,
    RTM_DELLINK,
    RTM_DELNEIGH,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    _dump_neighbours,
    _messages,
    _neigh_record,
    _raw_socket,
)
from nsg.dataplane.types import (
    NSG_PROTO,
    OWNER_ALIAS,
    AddAddr,
    AddFdb,
    AddNeigh,
    Addr,
    AddRoute,
    CreateLink,
    DelAddr,
    DeleteLink,
    DelFdb,
    DelNeigh,
    DelRoute,
    Fdb,
    LinkRecord,
    LinkState,
    Neigh,
    NeighRecord,
    Op,
    PortFlags,
    Route,
    SetAlias,
    SetMac,
    SetMaster,
    SetMtu,
    SetPortFlags,
    SetUp,
    Snapshot,
    VxlanSpec,
)

log = logging.getLogger("nsg.dataplane.netlink")

IFF_UP = 0x1
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
NTF_MASTER = 0x04
NTF_EXT_LEARNED = 0x10
NUD_NOARP = 0x40
ZERO_MAC = "00:00:00:00:00:00"
MAIN_TABLE = 254
NLM_F_ACK = 0x4
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND = 0x100, 0x200, 0x400, 0x800
BATCH_BYTES = 60 * 1024  # requests per sendto(); the kernel handles them in order, one ack each


def _nla(kind: int, value: bytes) -> bytes:
    """One netlink attribute: length, type, value, padded to 4 octets."""
    return struct.pack("=HH", 4 + len(value), kind) + value + bytes(-len(value) % 4)


def _mac(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


class NetlinkAdapter:
    def __init__(self, netns: str | None = None) -> None:
        # netns: operate in a named namespace (tests); None: the namespace we run in.
        self._ip = IPRoute(netns=netns) if netns else IPRoute()
        self._indexes: dict[str, int] = {}
        self._batch: socket.socket | None = None  # apply_many's own netlink socket
        self._netns = netns

    def close(self) -> None:
        self._ip.close()
        if self._batch is not None:
            self._batch.close()

    # --- reading ---------------------------------------------------------

    def _socket(self) -> socket.socket:
        """A raw rtnetlink socket in the adapter's namespace (it belongs to the one it is made in)."""
        if self._netns:
            pushns(self._netns)
        try:
            return _raw_socket()
        finally:
            if self._netns:
                popns()

    def snapshot(self) -> Snapshot:
        raw = list(self._ip.get_links())
        names = {m["index"]: m.get("ifname") for m in raw}
        self._indexes = {name: index for index, name in names.items() if name}
        links: dict[str, LinkState] = {}
        for m in raw:
            info = m.get("IFLA_LINKINFO")
            kind = info.get("IFLA_INFO_KIND") if info else None
            vx = None
            if kind == "vxlan":
                data = info.get("IFLA_INFO_DATA")
                vx = VxlanSpec(
                    vni=data.get("IFLA_VXLAN_ID"),
                    local=data.get("IFLA_VXLAN_LOCAL"),
                    port=data.get("IFLA_VXLAN_PORT"),
                    learning=bool(data.get("IFLA_VXLAN_LEARNING")),
                    tos=data.get("IFLA_VXLAN_TOS") or 0,
                )
            flags = None
            if info and info.get("IFLA_INFO_SLAVE_KIND") == "bridge":
                sd = info.get("IFLA_INFO_SLAVE_DATA")
                if sd is not None:
                    flags = PortFlags(bool(sd.get("IFLA_BRPORT_LEARNING")),
                                      bool(sd.get("IFLA_BRPORT_NEIGH_SUPPRESS")))
            name = m.get("ifname")
            links[name] = LinkState(
                name=name,
                index=m["index"],
                kind=kind,
                mtu=m.get("IFLA_MTU"),
                up=bool(m["flags"] & IFF_UP),
                master=names.get(m.get("IFLA_MASTER")),
                alias=m.get("IFLA_IFALIAS"),
                mac=m.get("IFLA_ADDRESS"),
                vxlan=vx,
                port_flags=flags,
            )
        addrs, owned = set(), set()
        for a in self._ip.get_addr(family=socket.AF_INET):
            addr = Addr(names.get(a["index"], "?"), f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}")
            addrs.add(addr)
            if a.get("IFA_PROTO") == NSG_PROTO:
                owned.add(addr)
        routes = set()
        for r in self._ip.get_routes(family=socket.AF_INET, table=MAIN_TABLE):
            if r["proto"] != NSG_PROTO:
                continue
            dst = r.get("RTA_DST") or "0.0.0.0"
            routes.add(
                Route(
                    dst=f"{dst}/{r['dst_len']}",
                    ifname=names.get(r.get("RTA_OIF"), "?"),
                    gateway=r.get("RTA_GATEWAY"),
                    src=r.get("RTA_PREFSRC"),
                    metric=r.get("RTA_PRIORITY") or 0,
                )
            )
        return Snapshot(links, frozenset(addrs), frozenset(owned), frozenset(self._fdb(links)), frozenset(routes),
                        frozenset(self._neighbours(links)))

    def _fdb(self, links: dict[str, LinkState]) -> Iterator[Fdb]:
        """The entries on the owned VXLAN devices: the device's own (MAC -> remote VTEP) and the
        bridge's extern_learn ones on that port. Only those are asked for: LAN ports hold many."""
        for ifname, link in links.items():
            if not (link.owned and link.kind == "vxlan"):
                continue
            for f in _dump_neighbours(self._socket, AF_BRIDGE, link.index, by_port=True):
                if f.ifindex != link.index or not f.mac:
                    continue
                if f.dst and f.flags & NTF_SELF:
                    yield Fdb(ifname, f.mac, f.dst)
                elif f.master and f.flags & NTF_EXT_LEARNED and not f.flags & NTF_SELF:
                    yield Fdb(ifname, f.mac, "", master=True)

    def _neighbours(self, links: dict[str, LinkState]) -> Iterator[Neigh]:
        """The permanent IPv4 neighbours on the owned bridges (only those bridges are asked for)."""
        for ifname, link in links.items():
            if not (link.owned and link.kind == "bridge"):
                continue
            for nb in _dump_neighbours(self._socket, socket.AF_INET, link.index, by_port=False):
                if nb.ifindex == link.index and nb.state & NUD_PERMANENT and nb.mac and nb.dst:
                    yield Neigh(ifname, nb.dst, nb.mac)

    # --- writing ---------------------------------------------------------

    def _index(self, op: Op, name: str) -> int:
        """Interface index by name, cached (a lookup costs a netlink round trip; thousands of FDB
        entries on one device would pay it each time). Links we create or delete drop the cache;
        a stale index fails with ENODEV, and the next full apply reads everything afresh."""
        idx = self._indexes.get(name)
        if idx is not None:
            return idx
        found = self._ip.link_lookup(ifname=name)
        if not found:
            raise DataplaneError(op, f"no interface named {name}", 19)
        self._indexes[name] = found[0]
        return found[0]

    def apply_many(self, ops: Sequence[Op]) -> None:
        """Apply in order; runs of FDB and neighbour operations go as pipelined netlink requests
        (thousands per second instead of a round trip each). On a failure the error names the first
        operation refused, with ``applied``: the indexes of those that took effect."""
        i = 0
        while i < len(ops):
            run: list[tuple[int, bytes]] = []
            size = 0
            start = i
            try:
                while i < len(ops) and size < BATCH_BYTES:
                    data = self._entry_request(ops[i], len(run) + 1)
                    if data is None:
                        break
                    run.append((i, data))
                    size += len(data)
                    i += 1
            except DataplaneError as exc:  # e.g. no such interface: nothing of this run was sent
                exc.applied = frozenset(range(start))
                raise
            except (OSError, ValueError) as exc:  # an address or MAC that does not pack: refused like the kernel would
                err = DataplaneError(ops[i], f"cannot encode: {exc}", 22)
                err.applied = frozenset(range(start))
                raise err from None
            if run:
                self._send_run(ops, run)
                continue
            try:
                self.apply(ops[i])
            except DataplaneError as exc:
                exc.applied = frozenset(range(i))
                raise
            i += 1

    def _send_run(self, ops: Sequence[Op], run: list[tuple[int, bytes]]) -> None:
        if self._batch is None:
            self._batch = self._socket()
        self._batch.sendto(b"".join(d for _i, d in run), (0, 0))
        errors: dict[int, int] = {}
        acked = 0
        while acked < len(run):
            try:
                data = self._batch.recv(1 << 20)
            except TimeoutError:
                self._batch.close()  # acks still on their way must not be read as the next run's
                self._batch = None
                raise DataplaneError(ops[run[acked][0]], "no answer from the kernel (netlink)", None) from None
            off = 0
            while off + 16 <= len(data):
                length, mtype, _flags, seq, _pid = struct.unpack_from("=IHHII", data, off)
                if mtype == NLMSG_ERROR and 1 <= seq <= len(run):
                    (err,) = struct.unpack_from("=i", data, off + 16)
                    acked += 1
                    if err:
                        errors[seq - 1] = -err
                off += max((length + 3) & ~3, 16)
        if errors:
            first = min(errors)
            idx = run[first][0]
            exc = DataplaneError(ops[idx], os.strerror(errors[first]), errors[first])
            applied = {i for n, (i, _d) in enumerate(run) if n not in errors}
            exc.applied = frozenset(range(run[0][0])) | frozenset(applied)
            raise exc

    def _entry_request(self, op: Op, seq: int) -> bytes | None:
        """The RTM_NEWNEIGH / RTM_DELNEIGH request of an FDB or neighbour operation (None for others),
        packed here: pyroute2's message objects cost ~0.1 ms each, too much for 20,000 entries."""
        match op:
            case AddFdb(f) | DelFdb(f):
                add = isinstance(op, AddFdb)
                index = self._index(op, f.ifname)
                if f.master:  # the bridge's entry: frames to the MAC go to the VXLAN port, and ARP
                    # suppression answers for the MAC's IPs (the kernel replies only for MACs it has)
                    family, state = AF_BRIDGE, NUD_NOARP
                    flags = NTF_MASTER | (NTF_EXT_LEARNED if add else 0)
                    attrs = _nla(NDA_LLADDR, _mac(f.mac))
                    extra = NLM_F_CREATE | NLM_F_EXCL
                else:
                    family, state = AF_BRIDGE, NUD_PERMANENT
                    flags = NTF_SELF | (NTF_EXT_LEARNED if add and f.mac != ZERO_MAC else 0)
                    attrs = _nla(NDA_LLADDR, _mac(f.mac)) + _nla(NDA_DST, socket.inet_aton(f.dst))
                    extra = NLM_F_CREATE | NLM_F_APPEND
            case AddNeigh(n) | DelNeigh(n):  # replace: a dynamic entry for the IP gives way to EVPN's
                add = isinstance(op, AddNeigh)
                index = self._index(op, n.ifname)
                family, state, flags = socket.AF_INET, NUD_PERMANENT, 0
                attrs = _nla(NDA_DST, socket.inet_aton(n.ip)) + _nla(NDA_LLADDR, _mac(n.mac))
                extra = NLM_F_CREATE | NLM_F_REPLACE
            case _:
                return None
        body = struct.pack("=BxxxiHBB", family, index, state, flags, 0) + attrs
        mtype = RTM_NEWNEIGH if add else RTM_DELNEIGH
        hflags = NLM_F_REQUEST | NLM_F_ACK | (extra if add else 0)
        return struct.pack("=IHHII", 16 + len(body), mtype, hflags, seq, 0) + body

    def apply(self, op: Op) -> None:
        if isinstance(op, AddFdb | DelFdb | AddNeigh | DelNeigh):  # one encoding of these: _entry_request
            self.apply_many([op])
            return
        if isinstance(op, CreateLink | DeleteLink):
            self._indexes.clear()
        try:
            self._apply(op)
        except NetlinkError as exc:
            raise DataplaneError(op, exc.args[1] if len(exc.args) > 1 else str(exc), exc.code) from None

    def _apply(self, op: Op) -> None:
        ip = self._ip
        match op:
            case CreateLink(spec) if spec.kind == "bridge":
                ip.link("add", ifname=spec.name, kind="bridge", br_stp_state=0)
            case CreateLink(spec) if spec.kind == "vxlan" and spec.vxlan is not None:
                ip.link(
                    "add",
                    ifname=spec.name,
                    kind="vxlan",
                    vxlan_id=spec.vxlan.vni,
                    vxlan_local=spec.vxlan.local,
                    vxlan_port=spec.vxlan.port,
                    vxlan_learning=int(spec.vxlan.learning),
                    vxlan_tos=spec.vxlan.tos,
                )
            case DeleteLink(name):
                ip.link("del", index=self._index(op, name))
            case SetAlias(name):
                ip.link("set", index=self._index(op, name), ifalias=OWNER_ALIAS)
            case SetMtu(name, mtu):
                ip.link("set", index=self._index(op, name), mtu=mtu)
            case SetMac(name, mac):
                ip.link("set", index=self._index(op, name), address=mac)
            case SetMaster(name, master):
                target = self._index(op, master) if master else 0
                ip.link("set", index=self._index(op, name), master=target)
            case SetPortFlags(name, flags):
                ip.brport("set", index=self._index(op, name), learning=int(flags.learning),
                          neigh_suppress=int(flags.neigh_suppress))
            case SetUp(name):
                ip.link("set", index=self._index(op, name), state="up")
            case AddAddr(a) | DelAddr(a):
                host, plen = a.cidr.split("/")
                verb = "add" if isinstance(op, AddAddr) else "del"
                extra = {"proto": NSG_PROTO} if verb == "add" else {}
                ip.addr(verb, index=self._index(op, a.ifname), address=host, prefixlen=int(plen), **extra)
            case AddRoute(r) | DelRoute(r):
                verb = "add" if isinstance(op, AddRoute) else "del"
                kw: dict[str, object] = {
                    "dst": r.dst,
                    "oif": self._index(op, r.ifname),
                    "priority": r.metric,
                    "proto": NSG_PROTO,
                    "table": MAIN_TABLE,
                }
                if r.gateway:
                    kw["gateway"] = r.gateway
                if r.src:
                    kw["prefsrc"] = r.src
                ip.route(verb, **kw)
            case _:
                raise DataplaneError(op, "operation not supported by the netlink adapter")


def tc_class_stats(ifname: str) -> dict[int, dict[str, int]]:
    """The traffic classes of a device and what they counted, by class id (major << 16 | minor):
    bytes, packets, drops, overlimits. {} if the device is gone. (tc's own JSON output leaves HTB
    classes out, so QoS reads them here, where nsg's netlink lives.)"""
    try:
        with IPRoute() as ip:
            idx = ip.link_lookup(ifname=ifname)
            if not idx:
                return {}
            out = {}
            for c in ip.get_classes(index=idx[0]):
                st = c.get_attr("TCA_STATS2")
                basic = (st.get_attr("TCA_STATS_BASIC") if st else None) or {}
                queue = (st.get_attr("TCA_STATS_QUEUE") if st else None) or {}
                out[c["handle"]] = {"bytes": basic.get("bytes", 0), "packets": basic.get("packets", 0),
                                    "drops": queue.get("drops", 0), "overlimits": queue.get("overlimits", 0)}
            return out
    except NetlinkError:
        return {}


def _link_record(m: Any) -> LinkRecord:  # m: a pyroute2 ifinfmsg
    info = m.get("IFLA_LINKINFO")
    return LinkRecord(m.get("event") != "RTM_DELLINK", m["index"], m.get("ifname"), m.get("IFLA_MASTER"),
                      info.get("IFLA_INFO_KIND") if info else None)


class NeighEvents:
    """rtnetlink notifications of links and neighbours (RTMGRP_LINK | RTMGRP_NEIGH), and dumps of the
    links, bridge ports' FDB entries and devices' IPv4 neighbours: what the EVPN neighbour watch
    (nsg/evpn/watch.py) reads, here where nsg's netlink lives, as LinkRecord / NeighRecord values.

    Notifications come from a raw netlink socket (select() on this object): pyroute2's own event
    reader keeps messages in a buffer select() cannot see, so a burst could sit there until unrelated
    netlink traffic came by. ``bpf``: a classic BPF program (struct sock_filter[]) the kernel runs on
    each notification before queueing it, to drop what the reader would ignore (the watch's: the
    entries nsg installs itself, so that a flood of remote routes cannot overflow the socket);
    ``filtered`` says whether the kernel took it. The socket subscribes on construction, after the
    filter and before any dump: nothing falls between the two. The bridge's per-port link notices
    (family AF_BRIDGE) are left out: they say nothing of the link itself."""

    def __init__(self, rcvbuf: int, bpf: bytes | None = None) -> None:
        groups = RTMGRP_LINK | RTMGRP_NEIGH
        self.filtered = bpf is not None
        try:
            self._sock = _raw_socket(rcvbuf, groups, bpf)
        except OSError as exc:
            if bpf is None:
                raise
            log.warning("neighbour notifications unfiltered: the kernel refused the socket filter (%s)", exc)
            self.filtered = False
            self._sock = _raw_socket(rcvbuf, groups)
        self._buf = bytearray(DUMP_BUF)
        try:
            self._ip = IPRoute()
        except BaseException:
            self._sock.close()
            raise
        self._marshal = MarshalRtnl()

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self) -> list[LinkRecord | NeighRecord]:
        """What one datagram holds; blocks without one. OSError ENOBUFS: the kernel dropped
        notifications (a burst beyond the receive buffer)."""
        data = memoryview(self._buf)[:self._sock.recv_into(self._buf)]
        out: list[LinkRecord | NeighRecord] = []
        for mtype, _seq, off, end in _messages(data):
            if mtype in (RTM_NEWNEIGH, RTM_DELNEIGH):
                if (rec := _neigh_record(data, off, end, mtype == RTM_NEWNEIGH)) is not None:
                    out.append(rec)
            elif mtype in (RTM_NEWLINK, RTM_DELLINK) and end > off and data[off] != AF_BRIDGE:
                out.extend(_link_record(m) for m in self._marshal.parse(bytes(data[off - NLMSGHDR.size:end])))
        return out

    def links(self) -> list[LinkRecord]:
        return [_link_record(m) for m in self._ip.get_links()]

    def neighbours(self, ports: Iterable[int], devices: Iterable[int]) -> Iterator[NeighRecord]:
        """The FDB entries on bridge ports ``ports``, then the IPv4 neighbours on ``devices``, one at a
        time (an older kernel may answer with more than asked: check the ifindex)."""
        for index in ports:
            yield from _dump_neighbours(_raw_socket, AF_BRIDGE, index, by_port=True)
        for index in devices:
            yield from _dump_neighbours(_raw_socket, socket.AF_INET, index, by_port=False)

    def close(self) -> None:
        self._ip.close()
        self._sock.close()

    def __enter__(self) -> NeighEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ifb_up(ifname: str) -> None:
    """An ifb device ``ifname`` (where QoS redirects an uplink's ingress to shape it), made if it is not
    there yet, and set up. Raises DataplaneError if it cannot be made or brought up."""
    op = f"ifb {ifname} up"
    try:
        with IPRoute() as ip:
            refused: NetlinkError | None = None
            if not ip.link_lookup(ifname=ifname):
                try:
                    ip.link("add", ifname=ifname, kind="ifb")
                except NetlinkError as exc:  # e.g. made meanwhile (EEXIST): the lookup below decides
                    refused = exc
            idx = ip.link_lookup(ifname=ifname)
            if not idx:
                exc = refused or NetlinkError(19, "no such device")
                raise DataplaneError(op, str(exc.args[-1]), exc.code)
            ip.link("set", index=idx[0], state="up")
    except NetlinkError as exc:
        raise DataplaneError(op, str(exc.args[-1]), exc.code) from None


def ifb_delete(ifname: str) -> bool:
    """The ifb device ``ifname`` goes, if it is there (an error is not raised: what is left is found and
    cleared by the next apply). True if it was deleted."""
    try:
        with IPRoute() as ip:
            idx = ip.link_lookup(ifname=ifname)
            if not idx:
                return False
            ip.link("del", index=idx[0])
            return True
    except NetlinkError:
        return False
