"""Desired vs actual -> the ordered operations that turn one into the other. Pure.

Only what nsg owns is ever removed: links carrying the owner alias, addresses and
routes carrying NSG_PROTO (plus addresses on owned links), FDB entries on owned
VXLAN links. A desired item that needs an interface the kernel does not have is
held back and reported as waiting rather than failing the whole apply.

Order: removals first (routes, fdb, addresses, links), then links are created and
configured, then addresses, fdb entries and routes are added.
"""

from __future__ import annotations

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


def plan(desired: Desired, actual: Snapshot) -> Plan:
    waiting: list[str] = []
    removals: list[Op] = []
    creates: list[Op] = []
    configure: list[Op] = []
    adds: list[Op] = []

    wanted = {spec.name: spec for spec in desired.links}
    # Links that will exist once the plan ran (owned ones recreated or kept, plus foreign ones).
    recreate = {n for n, spec in wanted.items() if n in actual.links and _incompatible(spec, actual.links[n])}
    for name, have in sorted(actual.links.items()):
        if name in wanted:
            if name in recreate:
                if not have.owned:
                    waiting.append(f"link {name} exists as a {have.kind} nsg does not own")
                    continue
                removals.append(DeleteLink(name))
        elif have.owned:
            removals.append(DeleteLink(name))
    blocked = {n for n in recreate if not actual.links[n].owned}
    gone = {op.name for op in removals if isinstance(op, DeleteLink)}
    present = (set(actual.links) - gone) | (set(wanted) - blocked)

    for spec in desired.links:
        if spec.name in blocked:
            continue
        have = None if spec.name in gone else actual.links.get(spec.name)
        if have is None:
            creates.append(CreateLink(spec))
            creates.append(SetAlias(spec.name))
            have_mtu, have_master, have_up, have_mac, have_flags = None, None, False, None, None
        else:
            if not have.owned:
                configure.append(SetAlias(spec.name))
            have_mtu, have_master, have_up, have_mac = have.mtu, have.master, have.up, have.mac
            have_flags = have.port_flags
        if spec.mac and have_mac != spec.mac:
            configure.append(SetMac(spec.name, spec.mac))
        if have_mtu != spec.mtu:
            configure.append(SetMtu(spec.name, spec.mtu))
        if have_master != spec.master:
            configure.append(SetMaster(spec.name, spec.master))
        if spec.master and spec.port_flags is not None and (have_flags != spec.port_flags
                                                            or have_master != spec.master):
            configure.append(SetPortFlags(spec.name, spec.port_flags))
        if not have_up:
            configure.append(SetUp(spec.name))

    owned_bridges = {n for n, s in wanted.items() if s.kind == "bridge"} | {
        n for n, link in actual.links.items() if link.owned and link.kind == "bridge"
    }
    for port, bridge in sorted(desired.ports.items()):
        have = actual.links.get(port)
        if have is None:
            waiting.append(f"port {port} of {bridge} does not exist")
            continue
        if bridge in blocked:
            continue
        if have.master != bridge or bridge in gone:
            configure.append(SetMaster(port, bridge))
        if not have.up:
            configure.append(SetUp(port))
    for name, have in sorted(actual.links.items()):
        # A port taken out of a subnet is released, unless its bridge goes away anyway.
        if (
            name not in desired.ports
            and not have.owned
            and have.master in owned_bridges
            and have.master not in gone
            and name not in wanted
            and name not in desired.guests
        ):
            configure.append(SetMaster(name, None))
    for name in sorted(desired.up):
        have = actual.links.get(name)
        if have is None:
            waiting.append(f"interface {name} does not exist")
            continue
        if name in desired.mtus and have.mtu != desired.mtus[name]:
            configure.append(SetMtu(name, desired.mtus[name]))
        if not have.up:
            configure.append(SetUp(name))

    # Addresses: on a recreated link they vanish with it.
    actual_addrs = {a for a in actual.addrs if a.ifname not in gone}
    ours = {a for a in actual.owned_addrs if a.ifname not in gone} | {
        a for a in actual_addrs if a.ifname in actual.links and actual.links[a.ifname].owned
    }
    for a in sorted(ours - desired.addrs):
        removals.append(DelAddr(a))
    for a in sorted(desired.addrs - actual_addrs):
        if a.ifname not in present:
            waiting.append(f"address {a.cidr} needs {a.ifname}")
            continue
        adds.append(AddAddr(a))

    actual_fdb = {f for f in actual.fdb if f.ifname not in gone}
    for f in sorted(actual_fdb - desired.fdb, key=fdb_key):
        removals.append(DelFdb(f))
    for f in sorted(desired.fdb - actual_fdb, key=fdb_key):
        if f.ifname in present:
            adds.append(AddFdb(f))

    actual_neigh = {n for n in actual.neighbors if n.ifname not in gone}
    for n in sorted(actual_neigh - desired.neighbors, key=neigh_key):
        removals.append(DelNeigh(n))
    for n in sorted(desired.neighbors - actual_neigh, key=neigh_key):
        if n.ifname in present:
            adds.append(AddNeigh(n))

    actual_routes = {r for r in actual.routes if r.ifname not in gone}
    for r in sorted(actual_routes - desired.routes):
        removals.append(DelRoute(r))
    for r in sorted(desired.routes - actual_routes):
        if r.ifname not in present:
            waiting.append(f"route {r.dst} needs {r.ifname}")
            continue
        adds.append(AddRoute(r))

    order = {DelRoute: 0, DelNeigh: 1, DelFdb: 1, DelAddr: 2, DeleteLink: 3}
    removals.sort(key=lambda op: order[type(op)])
    order_add = {AddAddr: 0, AddFdb: 1, AddNeigh: 1, AddRoute: 2}
    adds.sort(key=lambda op: order_add[type(op)])
    return Plan(tuple(removals + creates + configure + adds), tuple(waiting))
