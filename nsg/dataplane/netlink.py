"""The one module of nsg that talks to the kernel through pyroute2 (rtnetlink).

snapshot() reads what the planner needs; apply() performs one planned operation.
Both block: the daemon calls them from a worker thread.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Sequence

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTMGRP_LINK, RTMGRP_NEIGH
from pyroute2.netlink.rtnl.marshal import MarshalRtnl
from pyroute2.netns import popns, pushns

from nsg.dataplane.errors import DataplaneError
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
    LinkState,
    Neigh,
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

IFF_UP = 0x1
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
NTF_MASTER = 0x04
NTF_EXT_LEARNED = 0x10
NUD_NOARP = 0x40
ZERO_MAC = "00:00:00:00:00:00"
MAIN_TABLE = 254
AF_BRIDGE = 7
RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND = 0x100, 0x200, 0x400, 0x800
BATCH_BYTES = 60 * 1024  # requests per sendto(); the kernel handles them in order, one ack each


NDA_DST, NDA_LLADDR = 1, 2


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
        vx_owned = {link.index: n for n, link in links.items() if link.owned and link.kind == "vxlan"}
        fdb = set()
        if vx_owned:
            for f in self._ip.fdb("dump"):
                ifname = vx_owned.get(f["ifindex"])
                dst = f.get("NDA_DST")
                if not ifname:
                    continue
                if dst and f["flags"] & NTF_SELF:
                    fdb.add(Fdb(ifname, f.get("NDA_LLADDR"), dst))
                elif f.get("NDA_MASTER") and f["flags"] & NTF_EXT_LEARNED and not f["flags"] & NTF_SELF:
                    fdb.add(Fdb(ifname, f.get("NDA_LLADDR"), "", master=True))
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
        neighbors = set()
        br_owned = {link.index: n for n, link in links.items() if link.owned and link.kind == "bridge"}
        if br_owned:
            for nb in self._ip.get_neighbours(family=socket.AF_INET):
                ifname = br_owned.get(nb["ifindex"])
                if ifname and nb["state"] & NUD_PERMANENT and nb.get("NDA_LLADDR"):
                    neighbors.add(Neigh(ifname, nb.get("NDA_DST"), nb.get("NDA_LLADDR")))
        return Snapshot(links, frozenset(addrs), frozenset(owned), frozenset(fdb), frozenset(routes),
                        frozenset(neighbors))

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
            if self._netns:  # the socket belongs to the namespace it is made in
                pushns(self._netns)
                try:
                    self._batch = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
                finally:
                    popns()
            else:
                self._batch = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            self._batch.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self._batch.settimeout(10)
            self._batch.bind((0, 0))
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
                if f.master:
                    family, state = AF_BRIDGE, NUD_NOARP
                    flags = NTF_MASTER | (NTF_EXT_LEARNED if add else 0)
                    attrs = _nla(NDA_LLADDR, _mac(f.mac))
                    extra = NLM_F_CREATE | NLM_F_EXCL
                else:
                    family, state = AF_BRIDGE, NUD_PERMANENT
                    flags = NTF_SELF | (NTF_EXT_LEARNED if add and f.mac != ZERO_MAC else 0)
                    attrs = _nla(NDA_LLADDR, _mac(f.mac)) + _nla(NDA_DST, socket.inet_aton(f.dst))
                    extra = NLM_F_CREATE | NLM_F_APPEND
            case AddNeigh(n) | DelNeigh(n):
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
            case AddFdb(f) | DelFdb(f) if f.master:
                # the bridge's entry: frames to the MAC go to the VXLAN port, and ARP suppression
                # answers for the MAC's IPs (the kernel replies only for MACs it has an entry for)
                verb = "add" if isinstance(op, AddFdb) else "del"
                ip.fdb(verb, ifindex=self._index(op, f.ifname), lladdr=f.mac, flags=NTF_MASTER | NTF_EXT_LEARNED,
                       state=NUD_NOARP)
            case AddFdb(f) | DelFdb(f):
                verb = "append" if isinstance(op, AddFdb) else "del"
                flags = NTF_SELF | (NTF_EXT_LEARNED if f.mac != ZERO_MAC else 0)
                ip.fdb(verb, ifindex=self._index(op, f.ifname), lladdr=f.mac, dst=f.dst, flags=flags)
            case AddNeigh(n) | DelNeigh(n):
                # replace: a dynamic entry the kernel learned for the IP gives way to the EVPN one
                verb = "replace" if isinstance(op, AddNeigh) else "del"
                ip.neigh(verb, dst=n.ip, lladdr=n.mac, ifindex=self._index(op, n.ifname), state=NUD_PERMANENT)
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


class NeighEvents:
    """rtnetlink notifications of links and neighbours (RTMGRP_LINK | RTMGRP_NEIGH), and full dumps of
    the links, the bridge FDB and the IPv4 neighbour table: what the EVPN neighbour watch
    (nsg/evpn/watch.py) reads, here where nsg's netlink lives. Messages are pyroute2's parsed ones.

    Notifications come from a raw netlink socket (select() on this object): pyroute2's own event
    reader keeps messages in a buffer select() cannot see, so a burst could sit there until unrelated
    netlink traffic came by. The socket subscribes on construction, before any dump: nothing falls
    between the two."""

    def __init__(self, rcvbuf: int) -> None:
        self._rcvbuf = rcvbuf
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self._sock.bind((0, RTMGRP_LINK | RTMGRP_NEIGH))
            self._ip = IPRoute()
        except BaseException:
            self._sock.close()
            raise
        self._marshal = MarshalRtnl()

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self) -> list:
        """The messages of one datagram; blocks without one. OSError ENOBUFS: the kernel dropped
        notifications (a burst beyond the receive buffer)."""
        return list(self._marshal.parse(self._sock.recv(self._rcvbuf)))

    def links(self) -> list:
        return list(self._ip.get_links())

    def neighbours(self) -> list:
        """The bridge FDB, then the IPv4 neighbour table."""
        return [*self._ip.fdb("dump"), *self._ip.get_neighbours(family=socket.AF_INET)]

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
