"""The reconciler scenarios, run against the fake kernel and the real one (netlink in a namespace).

Whatever the fake claims, the kernel must do too: every scenario asserts the same
things on both.
"""

from __future__ import annotations

import json

import pytest

from nsg.dataplane.desired import build_desired
from nsg.dataplane.errors import DataplaneError
from nsg.dataplane.fake import FakeKernel
from nsg.dataplane.netlink import NetlinkAdapter
from nsg.dataplane.reconciler import Reconciler
from nsg.dataplane.types import AddAddr, Addr, LinkState, Snapshot
from nsg.model import parse_config
from tests.conftest import sh
from tests.unit.conftest import base_doc

PORTS = ("wan0", "lan0", "lan1")


class FakeEnv:
    def __init__(self):
        links = {"lo": LinkState("lo", 1, None, 65536, True)}  # lab namespaces bring lo up
        for i, name in enumerate(PORTS, start=2):
            links[name] = LinkState(name, i, "veth", 1500, True)
        self.kernel = FakeKernel(Snapshot(links=links))

    def foreign_address(self, ifname, cidr):
        self.kernel.addrs.add(Addr(ifname, cidr))

    def delete_link(self, name):
        from nsg.dataplane.types import DeleteLink

        self.kernel.apply(DeleteLink(name))


class RealEnv:
    def __init__(self, ns):
        self.ns = ns
        for p in PORTS:
            sh("ip", "-n", ns, "link", "add", "name", p, "type", "veth", "peer", "name", p + "p")
            sh("ip", "-n", ns, "link", "set", p + "p", "up")
            sh("ip", "-n", ns, "link", "set", p, "up")
        self.kernel = NetlinkAdapter(netns=ns)

    def foreign_address(self, ifname, cidr):
        sh("ip", "-n", self.ns, "addr", "add", cidr, "dev", ifname)

    def delete_link(self, name):
        sh("ip", "-n", self.ns, "link", "del", name)

    def links_json(self):
        return {link["ifname"]: link for link in json.loads(sh("ip", "-n", self.ns, "-j", "-d", "link", "show"))}


@pytest.fixture(params=["fake", "real"])
def env(request):
    if request.param == "fake":
        yield FakeEnv()
    else:
        ns = request.getfixturevalue("netns_name")
        e = RealEnv(ns)
        yield e
        e.kernel.close()


class FailOn:
    """Wraps a kernel and refuses one kind of operation, like a kernel saying EPERM."""

    def __init__(self, inner, kind):
        self.inner, self.kind = inner, kind

    def snapshot(self):
        return self.inner.snapshot()

    def apply(self, op):
        if isinstance(op, self.kind):
            raise DataplaneError(op, "injected failure", 1)
        self.inner.apply(op)


def cfg(**changes):
    doc = base_doc()
    doc.update(changes)
    return parse_config(doc)


def view(snap: Snapshot):
    """The part of a snapshot both kernels must agree on."""
    owned = {n: (link.kind, link.mtu, link.master, link.up) for n, link in snap.links.items() if link.owned}
    ports = {n: snap.links[n].master for n in PORTS if n in snap.links}
    return owned, ports, snap.owned_addrs, snap.fdb, snap.routes


def test_apply_reapply_change_remove(env):
    r = Reconciler(env.kernel)
    first = r.apply(build_desired(cfg()))
    assert first.ok, first.error
    assert len(first.changes) == 17
    assert r.apply(build_desired(cfg())).changes == ()
    owned, ports, addrs, fdb, routes = view(env.kernel.snapshot())
    assert owned == {"br-100": ("bridge", 1388, None, True), "vx-100": ("vxlan", 1388, "br-100", True)}
    assert ports["lan0"] == "br-100"
    assert Addr("lo", "198.19.255.1/32") in addrs and Addr("br-100", "198.19.0.1/24") in addrs

    doc = base_doc()
    doc["peers"].append({"name": "b3", "system_ip": "198.19.255.3", "endpoint": "198.18.3.2"})
    doc["subnets"].append({"name": "guest", "vni": 200, "cidr": "198.19.1.0/24", "gateway": "198.19.1.1",
                           "ports": ["lan1"]})
    bigger = parse_config(doc)
    res = r.apply(build_desired(bigger))
    assert res.ok, res.error
    assert not any("br-100" in c and ("create" in c or "delete" in c) for c in res.changes)
    assert "append fdb 00:00:00:00:00:00 dev vx-100 dst 198.19.255.3" in res.changes
    assert r.apply(build_desired(bigger)).changes == ()
    owned, ports, _, fdb, routes = view(env.kernel.snapshot())
    assert set(owned) == {"br-100", "vx-100", "br-200", "vx-200"}
    assert ports["lan1"] == "br-200"
    assert len(fdb) == 4 and len(routes) == 3

    res = r.apply(build_desired(cfg()))
    assert res.ok, res.error
    assert {"delete link br-200", "delete link vx-200"} <= set(res.changes)
    owned, ports, _, fdb, routes = view(env.kernel.snapshot())
    assert set(owned) == {"br-100", "vx-100"} and ports["lan1"] is None
    assert len(fdb) == 1 and len(routes) == 2
    assert r.apply(build_desired(cfg())).changes == ()


def test_system_ip_change(env):
    r = Reconciler(env.kernel)
    assert r.apply(build_desired(cfg())).ok
    res = r.apply(build_desired(cfg(system_ip="198.19.255.9")))
    assert res.ok, res.error
    assert "delete link vx-100" in res.changes and "delete link br-100" not in res.changes
    snap = env.kernel.snapshot()
    assert snap.links["vx-100"].vxlan.local == "198.19.255.9"
    assert snap.links["vx-100"].master == "br-100"
    assert {r_.src for r_ in snap.routes if r_.src} == {"198.19.255.9"}
    assert r.apply(build_desired(cfg(system_ip="198.19.255.9"))).changes == ()


def test_failure_rolls_back(env):
    r = Reconciler(env.kernel)
    assert r.apply(build_desired(cfg())).ok
    before = view(env.kernel.snapshot())
    doc = base_doc()
    doc["subnets"].append({"name": "guest", "vni": 200, "cidr": "198.19.1.0/24", "gateway": "198.19.1.1",
                           "ports": ["lan1"]})
    r.kernel = FailOn(env.kernel, AddAddr)
    res = r.apply(build_desired(parse_config(doc)))
    r.kernel = env.kernel
    assert not res.ok and "injected failure" in res.error and res.rolled_back
    assert view(env.kernel.snapshot()) == before


def test_flush_keeps_foreign(env):
    env.foreign_address("wan0", "203.0.113.5/24")
    r = Reconciler(env.kernel)
    assert r.apply(build_desired(cfg())).ok
    assert r.flush().ok
    snap = env.kernel.snapshot()
    owned, ports, addrs, fdb, routes = view(snap)
    assert owned == {} and addrs == frozenset() and fdb == frozenset() and routes == frozenset()
    assert Addr("wan0", "203.0.113.5/24") in snap.addrs
    assert all(m is None for m in ports.values())


def test_drift_is_repaired(env):
    r = Reconciler(env.kernel)
    assert r.apply(build_desired(cfg())).ok
    env.delete_link("br-100")
    res = r.apply(build_desired(cfg()))
    assert res.ok, res.error
    assert "create bridge br-100 mtu 1388" in res.changes
    snap = env.kernel.snapshot()
    assert snap.links["lan0"].master == "br-100" and snap.links["vx-100"].master == "br-100"
    assert Addr("br-100", "198.19.0.1/24") in snap.addrs
    assert r.apply(build_desired(cfg())).changes == ()


def test_real_devices_match_config(netns_name):
    """Read back with iproute2 (an independent reader) what the adapter built."""
    e = RealEnv(netns_name)
    try:
        assert Reconciler(e.kernel).apply(build_desired(cfg())).ok
    finally:
        e.kernel.close()
    links = e.links_json()
    vx = links["vx-100"]
    data = vx["linkinfo"]["info_data"]
    assert (data["id"], data["local"], data["port"], data["learning"]) == (100, "198.19.255.1", 4789, False)
    assert vx["mtu"] == 1388 and vx["master"] == "br-100"
    assert links["br-100"]["address"] == "02:4e:53:00:00:64"
    assert links["br-100"]["ifalias"] == "nsg"
    fdb = json.loads(sh("ip", "netns", "exec", netns_name, "bridge", "-j", "fdb", "show", "dev", "vx-100"))
    assert {"mac": "00:00:00:00:00:00", "dst": "198.19.255.2"}.items() <= next(
        f for f in fdb if f.get("dst")).items()
    routes = json.loads(sh("ip", "-n", netns_name, "-j", "route", "show", "proto", "250"))
    assert {(r["dst"], r.get("gateway"), r.get("prefsrc")) for r in routes} == {
        ("default", "198.18.1.1", None), ("198.19.255.2", "198.18.1.1", "198.19.255.1")}


def test_neighbours_for_arp_suppression(env):
    from dataclasses import replace as dc_replace

    from nsg.dataplane.types import Neigh

    r = Reconciler(env.kernel)
    base = build_desired(cfg())
    n1 = Neigh("br-100", "198.19.0.21", "02:00:00:00:00:21")
    n2 = Neigh("br-100", "198.19.0.22", "02:00:00:00:00:22")
    res = r.apply(dc_replace(base, neighbors=frozenset({n1, n2})))
    assert res.ok, res.error
    assert env.kernel.snapshot().neighbors == {n1, n2}
    assert r.apply(dc_replace(base, neighbors=frozenset({n1, n2}))).changes == ()
    moved = Neigh("br-100", "198.19.0.22", "02:00:00:00:00:99")  # the IP now lives behind another MAC
    res = r.apply(dc_replace(base, neighbors=frozenset({n1, moved})))
    assert res.ok, res.error
    assert env.kernel.snapshot().neighbors == {n1, moved}
    assert r.apply(base).ok
    assert env.kernel.snapshot().neighbors == frozenset()


def test_evpn_port_flags_and_remote_macs(env):
    """With EVPN the VXLAN port neither learns nor floods ARP it can answer; a remote MAC is an
    entry of the VXLAN device (-> VTEP) and an extern_learn entry of the bridge (-> VXLAN port)."""
    from nsg.dataplane.types import Fdb, PortFlags

    doc = base_doc()
    doc["evpn"] = {"asn": 65000, "peers": [{"address": "198.18.1.1", "asn": 65000}]}
    evpn_cfg = parse_config(doc)
    mac = "02:00:00:00:00:31"
    remote = frozenset({Fdb("vx-100", mac, "198.19.255.7"), Fdb("vx-100", mac, "", master=True),
                        Fdb("vx-100", "00:00:00:00:00:00", "198.19.255.7")})
    r = Reconciler(env.kernel)
    res = r.apply(build_desired(evpn_cfg, evpn_fdb=remote))
    assert res.ok, res.error
    snap = env.kernel.snapshot()
    assert snap.links["vx-100"].port_flags == PortFlags(learning=False, neigh_suppress=True)
    assert {f for f in snap.fdb if f.ifname == "vx-100"} == remote
    assert r.apply(build_desired(evpn_cfg, evpn_fdb=remote)).changes == ()
    # the MAC moves to another VTEP; then it is withdrawn
    moved = frozenset({Fdb("vx-100", mac, "198.19.255.8"), Fdb("vx-100", mac, "", master=True)})
    assert r.apply(build_desired(evpn_cfg, evpn_fdb=moved)).ok
    assert {f for f in env.kernel.snapshot().fdb if f.ifname == "vx-100"} == moved
    assert r.apply(build_desired(evpn_cfg, evpn_fdb=frozenset())).ok
    assert {f for f in env.kernel.snapshot().fdb if f.ifname == "vx-100"} == frozenset()
    # without EVPN the port flags are left as they are (no churn on configs that never had them)
    assert all(s.port_flags is None for s in build_desired(cfg()).links)


def test_pipelined_entries_report_exactly_what_failed(netns_name):
    """apply_many sends FDB/neighbour requests back to back (one netlink ack each): a refusal in the
    middle names that operation, and the others of the run did take effect. Also a test that the
    pipelining socket lives in the adapter's namespace, not the test's."""
    from nsg.dataplane.types import AddFdb, AddNeigh, DelFdb, Fdb, Neigh

    env = RealEnv(netns_name)
    try:
        r = Reconciler(env.kernel)
        doc = base_doc()
        doc["evpn"] = {"asn": 65000, "peers": [{"address": "198.18.1.1", "asn": 65000}]}
        assert r.apply(build_desired(parse_config(doc))).ok
        macs = [f"02:00:00:00:01:{i:02x}" for i in range(200)]
        ops = [AddFdb(Fdb("vx-100", m, "198.19.255.7")) for m in macs]
        ops.insert(120, AddFdb(Fdb("vx-100", macs[3], "", master=True)))
        ops.insert(121, DelFdb(Fdb("vx-100", "02:00:00:00:09:99", "198.19.255.8")))  # not there: ENOENT
        ops.append(AddNeigh(Neigh("br-100", "198.19.0.9", macs[9])))
        with pytest.raises(DataplaneError) as exc:
            env.kernel.apply_many(ops)
        assert exc.value.op == ops[121] and exc.value.errno == 2
        assert exc.value.applied == frozenset(range(len(ops))) - {121}
        snap = env.kernel.snapshot()
        assert {f.mac for f in snap.fdb if not f.master and f.dst == "198.19.255.7"} == set(macs)
        assert Fdb("vx-100", macs[3], "", master=True) in snap.fdb
        assert Neigh("br-100", "198.19.0.9", macs[9]) in snap.neighbors
        bridge = json.loads(sh("ip", "netns", "exec", netns_name, "bridge", "-j", "fdb", "show", "dev", "vx-100"))
        assert sum(1 for f in bridge if f.get("dst") == "198.19.255.7" and "extern_learn" in f.get("flags", [])) == 200
    finally:
        env.kernel.close()
