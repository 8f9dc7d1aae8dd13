"""An in-memory kernel for unit tests of the reconciler.

It keeps the kernel rules that matter to the planner: names are unique, an address
or FDB entry cannot be added twice, deleting a link takes its addresses, FDB
entries and routes with it and releases its ports, routes need their interface.
tests/netns runs the same scenarios against the real kernel through netlink.py.
"""

from __future__ import annotations

from dataclasses import replace

from nsg.dataplane.errors import DataplaneError
from nsg.dataplane.types import (
    OWNER_ALIAS,
    AddAddr,
    AddFdb,
    AddNeigh,
    AddRoute,
    CreateLink,
    DelAddr,
    DeleteLink,
    DelFdb,
    DelNeigh,
    DelRoute,
    LinkState,
    Op,
    PortFlags,
    SetAlias,
    SetMac,
    SetMaster,
    SetMtu,
    SetPortFlags,
    SetUp,
    Snapshot,
)

DEFAULT_PORT_FLAGS = PortFlags(learning=True, neigh_suppress=False)


class FakeKernel:
    def __init__(self, snapshot: Snapshot | None = None, fail_on: type | None = None):
        snap = snapshot or Snapshot()
        self.links = dict(snap.links)
        self.addrs = set(snap.addrs)
        self.owned_addrs = set(snap.owned_addrs)
        self.fdb = set(snap.fdb)
        self.routes = set(snap.routes)
        self.neighbors = set(snap.neighbors)
        self.applied: list[Op] = []
        self.fail_on = fail_on
        self._next_index = max((link.index for link in self.links.values()), default=1) + 1

    def snapshot(self) -> Snapshot:
        return Snapshot(
            links=dict(self.links),
            addrs=frozenset(self.addrs),
            owned_addrs=frozenset(self.owned_addrs),
            fdb=frozenset(self.fdb),
            routes=frozenset(self.routes),
            neighbors=frozenset(self.neighbors),
        )

    def _need(self, op: Op, name: str) -> LinkState:
        if name not in self.links:
            raise DataplaneError(op, "No such device", 19)
        return self.links[name]

    def apply(self, op: Op) -> None:
        if self.fail_on is not None and isinstance(op, self.fail_on):
            raise DataplaneError(op, "injected failure", 1)
        self.applied.append(op)
        match op:
            case CreateLink(spec):
                if spec.name in self.links:
                    raise DataplaneError(op, "File exists", 17)
                self.links[spec.name] = LinkState(
                    spec.name, self._next_index, spec.kind, 1500, False, None, None, None, spec.vxlan
                )
                self._next_index += 1
            case DeleteLink(name):
                self._need(op, name)
                del self.links[name]
                for n, link in list(self.links.items()):
                    if link.master == name:
                        self.links[n] = replace(link, master=None)
                self.addrs = {a for a in self.addrs if a.ifname != name}
                self.owned_addrs = {a for a in self.owned_addrs if a.ifname != name}
                self.fdb = {f for f in self.fdb if f.ifname != name}
                self.routes = {r for r in self.routes if r.ifname != name}
                self.neighbors = {n for n in self.neighbors if n.ifname != name}
            case SetAlias(name):
                self.links[name] = replace(self._need(op, name), alias=OWNER_ALIAS)
            case SetMtu(name, mtu):
                self.links[name] = replace(self._need(op, name), mtu=mtu)
            case SetMac(name, mac):
                self.links[name] = replace(self._need(op, name), mac=mac)
            case SetMaster(name, master):
                if master is not None:
                    self._need(op, master)
                # leaving a bridge (or joining another) resets the port's flags, as in the kernel
                self.links[name] = replace(self._need(op, name), master=master,
                                           port_flags=None if master is None else DEFAULT_PORT_FLAGS)
            case SetPortFlags(name, flags):
                link = self._need(op, name)
                if link.master is None:
                    raise DataplaneError(op, "Operation not supported", 95)
                self.links[name] = replace(link, port_flags=flags)
            case SetUp(name):
                self.links[name] = replace(self._need(op, name), up=True)
            case AddAddr(addr):
                self._need(op, addr.ifname)
                if addr in self.addrs:
                    raise DataplaneError(op, "File exists", 17)
                self.addrs.add(addr)
                self.owned_addrs.add(addr)
            case DelAddr(addr):
                if addr not in self.addrs:
                    raise DataplaneError(op, "Cannot assign requested address", 99)
                self.addrs.discard(addr)
                self.owned_addrs.discard(addr)
            case AddFdb(fdb):
                link = self._need(op, fdb.ifname)
                if fdb.master and link.master is None:
                    raise DataplaneError(op, "Invalid argument", 22)
                if fdb in self.fdb:
                    raise DataplaneError(op, "File exists", 17)
                self.fdb.add(fdb)
            case DelFdb(fdb):
                if fdb not in self.fdb:
                    raise DataplaneError(op, "No such file or directory", 2)
                self.fdb.discard(fdb)
            case AddNeigh(neigh):
                self._need(op, neigh.ifname)
                if any((n.ifname, n.ip) == (neigh.ifname, neigh.ip) for n in self.neighbors):
                    raise DataplaneError(op, "File exists", 17)
                self.neighbors.add(neigh)
            case DelNeigh(neigh):
                if neigh not in self.neighbors:
                    raise DataplaneError(op, "No such file or directory", 2)
                self.neighbors.discard(neigh)
            case AddRoute(route):
                self._need(op, route.ifname)
                if any((r.dst, r.metric) == (route.dst, route.metric) for r in self.routes):
                    raise DataplaneError(op, "File exists", 17)
                self.routes.add(route)
            case DelRoute(route):
                if route not in self.routes:
                    raise DataplaneError(op, "No such process", 3)
                self.routes.discard(route)
            case _:
                raise TypeError(f"unknown op {op!r}")
