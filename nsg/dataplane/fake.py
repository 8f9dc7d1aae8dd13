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
        handler = _HANDLERS.get(type(op))
        if handler is None:
            raise TypeError(f"unknown op {op!r}")
        self.applied.append(op)
        handler(self, op)

    # --- one handler per kind of operation (the kernel's rules for it) ---------------------------

    def _create_link(self, op: CreateLink) -> None:
        spec = op.spec
        if spec.name in self.links:
            raise DataplaneError(op, "File exists", 17)
        self.links[spec.name] = LinkState(spec.name, self._next_index, spec.kind, 1500, False, None, None, None,
                                          spec.vxlan)
        self._next_index += 1

    def _delete_link(self, op: DeleteLink) -> None:
        name = op.name
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

    def _set_link(self, op: SetAlias | SetMtu | SetMac | SetUp) -> None:
        change = {SetAlias: lambda: {"alias": OWNER_ALIAS}, SetMtu: lambda: {"mtu": op.mtu},
                  SetMac: lambda: {"mac": op.mac}, SetUp: lambda: {"up": True}}[type(op)]()
        self.links[op.name] = replace(self._need(op, op.name), **change)

    def _set_master(self, op: SetMaster) -> None:
        if op.master is not None:
            self._need(op, op.master)
        # leaving a bridge (or joining another) resets the port's flags, as in the kernel
        self.links[op.name] = replace(self._need(op, op.name), master=op.master,
                                      port_flags=None if op.master is None else DEFAULT_PORT_FLAGS)

    def _set_port_flags(self, op: SetPortFlags) -> None:
        link = self._need(op, op.name)
        if link.master is None:
            raise DataplaneError(op, "Operation not supported", 95)
        self.links[op.name] = replace(link, port_flags=op.flags)

    def _add_addr(self, op: AddAddr) -> None:
        self._need(op, op.addr.ifname)
        if op.addr in self.addrs:
            raise DataplaneError(op, "File exists", 17)
        self.addrs.add(op.addr)
        self.owned_addrs.add(op.addr)

    def _del_addr(self, op: DelAddr) -> None:
        if op.addr not in self.addrs:
            raise DataplaneError(op, "Cannot assign requested address", 99)
        self.addrs.discard(op.addr)
        self.owned_addrs.discard(op.addr)

    def _add_fdb(self, op: AddFdb) -> None:
        link = self._need(op, op.fdb.ifname)
        if op.fdb.master and link.master is None:
            raise DataplaneError(op, "Invalid argument", 22)
        if op.fdb in self.fdb:
            raise DataplaneError(op, "File exists", 17)
        self.fdb.add(op.fdb)

    def _del_fdb(self, op: DelFdb) -> None:
        if op.fdb not in self.fdb:
            raise DataplaneError(op, "No such file or directory", 2)
        self.fdb.discard(op.fdb)

    def _add_neigh(self, op: AddNeigh) -> None:
        self._need(op, op.neigh.ifname)
        if any((n.ifname, n.ip) == (op.neigh.ifname, op.neigh.ip) for n in self.neighbors):
            raise DataplaneError(op, "File exists", 17)
        self.neighbors.add(op.neigh)

    def _del_neigh(self, op: DelNeigh) -> None:
        if op.neigh not in self.neighbors:
            raise DataplaneError(op, "No such file or directory", 2)
        self.neighbors.discard(op.neigh)

    def _add_route(self, op: AddRoute) -> None:
        self._need(op, op.route.ifname)
        if any((r.dst, r.metric) == (op.route.dst, op.route.metric) for r in self.routes):
            raise DataplaneError(op, "File exists", 17)
        self.routes.add(op.route)

    def _del_route(self, op: DelRoute) -> None:
        if op.route not in self.routes:
            raise DataplaneError(op, "No such process", 3)
        self.routes.discard(op.route)


_HANDLERS = {
    CreateLink: FakeKernel._create_link, DeleteLink: FakeKernel._delete_link,
    SetAlias: FakeKernel._set_link, SetMtu: FakeKernel._set_link, SetMac: FakeKernel._set_link,
    SetUp: FakeKernel._set_link, SetMaster: FakeKernel._set_master, SetPortFlags: FakeKernel._set_port_flags,
    AddAddr: FakeKernel._add_addr, DelAddr: FakeKernel._del_addr, AddFdb: FakeKernel._add_fdb,
    DelFdb: FakeKernel._del_fdb, AddNeigh: FakeKernel._add_neigh, DelNeigh: FakeKernel._del_neigh,
    AddRoute: FakeKernel._add_route, DelRoute: FakeKernel._del_route,
}
