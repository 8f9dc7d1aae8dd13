"""Desired vs actual -> the ordered operations that turn one into the other. Pure.

Only what nsg owns is ever removed: links carrying the owner alias, addresses and
routes carrying NSG_PROTO (plus addresses on owned links), FDB entries on owned
VXLAN links. A desired item that needs an interface the kernel does not have is
held back and reported as waiting rather than failing the whole apply.

Order: removals first (routes, fdb, addresses, links), then links are created and
configured, then addresses, fdb entries and routes are added.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from nsg.dataplane.types import (
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
    Desired,
    Fdb,
    LinkSpec,
    LinkState,
    Neigh,
    Op,
    Plan,
    SetAlias,
    SetMac,
    SetMaster,
    SetMtu,
    SetPortFlags,
    SetUp,
    Snapshot,
)


def _incompatible(spec: LinkSpec, have: LinkState) -> bool:
    """True when the link must be recreated (kind or VXLAN identity cannot change in place)."""
    if have.kind != spec.kind:
        return True
    return spec.kind == "vxlan" and have.vxlan != spec.vxlan


def fdb_key(f: Fdb) -> tuple[str, str, str, bool]:
    """Sort key of FDB entries: plain tuples compare much faster than the dataclasses (10,000s of them)."""
    return (f.ifname, f.mac, f.dst, f.master)


def neigh_key(n: Neigh) -> tuple[str, str, str]:
    return (n.ifname, n.ip, n.mac)


@dataclass
class _Work:
    """What the per-kind planners share: the two states, what links will exist, and the ops so far."""

    desired: Desired
    actual: Snapshot
    gone: set[str] = field(default_factory=set)  # owned links deleted by this plan
    blocked: set[str] = field(default_factory=set)  # wanted links held back (a foreign link in the way)
    present: set[str] = field(default_factory=set)  # links that exist once the plan ran
    waiting: list[str] = field(default_factory=list)
    removals: list[Op] = field(default_factory=list)
    creates: list[Op] = field(default_factory=list)
    configure: list[Op] = field(default_factory=list)
    adds: list[Op] = field(default_factory=list)


def _links(w: _Work) -> None:
    desired, actual = w.desired, w.actual
    wanted = {spec.name: spec for spec in desired.links}
    recreate = {n for n, spec in wanted.items() if n in actual.links and _incompatible(spec, actual.links[n])}
    for name, have in sorted(actual.links.items()):
        if name in wanted:
            if name in recreate:
                if not have.owned:
                    w.waiting.append(f"link {name} exists as a {have.kind} nsg does not own")
                    continue
                w.removals.append(DeleteLink(name))
        elif have.owned:
            w.removals.append(DeleteLink(name))
    w.blocked = {n for n in recreate if not actual.links[n].owned}
    w.gone = {op.name for op in w.removals if isinstance(op, DeleteLink)}
    w.present = (set(actual.links) - w.gone) | (set(wanted) - w.blocked)
    for spec in desired.links:
        if spec.name in w.blocked:
            continue
        have = None if spec.name in w.gone else actual.links.get(spec.name)
        if have is None:
            w.creates.append(CreateLink(spec))
            w.creates.append(SetAlias(spec.name))
            have_mtu, have_master, have_up, have_mac, have_flags = None, None, False, None, None
        else:
            if not have.owned:
                w.configure.append(SetAlias(spec.name))
            have_mtu, have_master, have_up, have_mac = have.mtu, have.master, have.up, have.mac
            have_flags = have.port_flags
        if spec.mac and have_mac != spec.mac:
            w.configure.append(SetMac(spec.name, spec.mac))
        if have_mtu != spec.mtu:
            w.configure.append(SetMtu(spec.name, spec.mtu))
        if have_master != spec.master:
            w.configure.append(SetMaster(spec.name, spec.master))
        if spec.master and spec.port_flags is not None and (have_flags != spec.port_flags
                                                            or have_master != spec.master):
            w.configure.append(SetPortFlags(spec.name, spec.port_flags))
        if not have_up:
            w.configure.append(SetUp(spec.name))


def _ports(w: _Work) -> None:
    """LAN ports into their bridges; a port taken out of a subnet is released (unless its bridge goes
    anyway); workload ports (guests) are never released."""
    desired, actual = w.desired, w.actual
    wanted = {spec.name for spec in desired.links}
    owned_bridges = {s.name for s in desired.links if s.kind == "bridge"} | {
        n for n, link in actual.links.items() if link.owned and link.kind == "bridge"
    }
    for port, bridge in sorted(desired.ports.items()):
        have = actual.links.get(port)
        if have is None:
            w.waiting.append(f"port {port} of {bridge} does not exist")
            continue
        if bridge in w.blocked:
            continue
        if have.master != bridge or bridge in w.gone:
            w.configure.append(SetMaster(port, bridge))
        if not have.up:
            w.configure.append(SetUp(port))
    for name, have in sorted(actual.links.items()):
        if (name not in desired.ports and not have.owned and have.master in owned_bridges
                and have.master not in w.gone and name not in wanted and name not in desired.guests):
            w.configure.append(SetMaster(name, None))


def _up(w: _Work) -> None:
    """Interfaces nsg does not own but needs up (uplinks, lo), with their MTU."""
    for name in sorted(w.desired.up):
        have = w.actual.links.get(name)
        if have is None:
            w.waiting.append(f"interface {name} does not exist")
            continue
        if name in w.desired.mtus and have.mtu != w.desired.mtus[name]:
            w.configure.append(SetMtu(name, w.desired.mtus[name]))
        if not have.up:
            w.configure.append(SetUp(name))


def _addrs(w: _Work) -> None:
    """Addresses: on a recreated link they vanish with it; ours are owned ones and any on owned links."""
    actual = w.actual
    actual_addrs = {a for a in actual.addrs if a.ifname not in w.gone}
    ours = {a for a in actual.owned_addrs if a.ifname not in w.gone} | {
        a for a in actual_addrs if a.ifname in actual.links and actual.links[a.ifname].owned
    }
    for a in sorted(ours - w.desired.addrs):
        w.removals.append(DelAddr(a))
    for a in sorted(w.desired.addrs - actual_addrs):
        if a.ifname not in w.present:
            w.waiting.append(f"address {a.cidr} needs {a.ifname}")
            continue
        w.adds.append(AddAddr(a))


@dataclass(frozen=True)
class _Entries:
    """A kind of table entry on a link: FDB entries, neighbours, routes."""

    desired: Callable[[Desired], frozenset]
    actual: Callable[[Snapshot], frozenset]
    add: type
    delete: type
    key: Callable | None = None  # sort key (fast tuples for 10,000s of entries)
    wait: Callable | None = None  # the waiting message for an entry whose link will not exist; None: skip


ENTRIES = (
    _Entries(lambda d: d.fdb, lambda a: a.fdb, AddFdb, DelFdb, fdb_key),
    _Entries(lambda d: d.neighbors, lambda a: a.neighbors, AddNeigh, DelNeigh, neigh_key),
    _Entries(lambda d: d.routes, lambda a: a.routes, AddRoute, DelRoute, None,
             lambda r: f"route {r.dst} needs {r.ifname}"),
)


def _entries(w: _Work) -> None:
    for kind in ENTRIES:
        actual = {e for e in kind.actual(w.actual) if e.ifname not in w.gone}
        wanted = kind.desired(w.desired)
        for e in sorted(actual - wanted, key=kind.key):
            w.removals.append(kind.delete(e))
        for e in sorted(wanted - actual, key=kind.key):
            if e.ifname in w.present:
                w.adds.append(kind.add(e))
            elif kind.wait is not None:
                w.waiting.append(kind.wait(e))


PLANNERS = (_links, _ports, _up, _addrs, _entries)  # in this order: later ones use what _links decided
REMOVAL_ORDER = {DelRoute: 0, DelNeigh: 1, DelFdb: 1, DelAddr: 2, DeleteLink: 3}
ADD_ORDER = {AddAddr: 0, AddFdb: 1, AddNeigh: 1, AddRoute: 2}


def plan(desired: Desired, actual: Snapshot) -> Plan:
    w = _Work(desired, actual)
    for planner in PLANNERS:
        planner(w)
    w.removals.sort(key=lambda op: REMOVAL_ORDER[type(op)])
    w.adds.sort(key=lambda op: ADD_ORDER[type(op)])
    return Plan(tuple(w.removals + w.creates + w.configure + w.adds), tuple(w.waiting))
