"""Table tests: desired state + kernel state -> operations (tailscale router_linux_test style)."""

from dataclasses import replace

import pytest

from nsg.dataplane.desired import build_desired
from nsg.dataplane.fake import FakeKernel
from nsg.dataplane.mtu import tenant_mtu
from nsg.dataplane.planner import plan
from nsg.dataplane.reconciler import Reconciler
from nsg.dataplane.types import (
    NSG_PROTO,
    AddAddr,
    Addr,
    DelAddr,
    DeleteLink,
    Desired,
    LinkState,
    SetMaster,
    Snapshot,
)
from nsg.model import parse_config
from nsg.uplinks.lease import Lease
from tests.unit.conftest import base_doc

assert NSG_PROTO == 250


def kernel_with_ports(*extra: str) -> FakeKernel:
    links = {"lo": LinkState("lo", 1, None, 65536, False)}
    for i, name in enumerate(("wan0", "lan0", *extra), start=2):
        links[name] = LinkState(name, i, "veth", 1500, False)
    return FakeKernel(Snapshot(links=links))


def test_tenant_mtu_reserves_esp_and_vxlan():
    # 1500 - IP 20 - UDP 8 - ESP 8 - IV 8 - ICV 16 = 1440 (4-aligned), - trailer 2 = 1438 inner; - VXLAN 50
    assert tenant_mtu(1500) == 1388
    assert tenant_mtu(9000) == 8888
    with pytest.raises(ValueError, match="below 1280"):
        tenant_mtu(1300)


def ops_text(p):
    return [str(op) for op in p.ops]


def test_first_apply_builds_everything_in_order():
    k = kernel_with_ports()
    d = build_desired(parse_config(base_doc()))
    got = ops_text(plan(d, k.snapshot()))
    assert got == [
        "create bridge br-100 mtu 1388",
        "set br-100 alias nsg",
        "create vxlan vx-100 mtu 1388 vni 100 local 198.19.255.1",
        "set vx-100 alias nsg",
        "set br-100 address 02:4e:53:00:00:64",
        "set br-100 mtu 1388",
        "set br-100 up",
        "set vx-100 mtu 1388",
        "set vx-100 master br-100",
        "set vx-100 up",
        "set lan0 master br-100",
        "set lan0 up",
        "set lo up",
        "set wan0 up",
        "add address 198.19.0.1/24 dev br-100",
        "add address 198.19.255.1/32 dev lo",
        "add address 198.18.1.2/24 dev wan0",
        "append fdb 00:00:00:00:00:00 dev vx-100 dst 198.19.255.2",
        "add route 0.0.0.0/0 via 198.18.1.1 dev wan0 metric 100",
        "add route 198.19.255.2/32 via 198.18.1.1 dev wan0 src 198.19.255.1 metric 0",
    ]


def test_reapply_is_a_noop_and_changes_only_the_difference():
    k = kernel_with_ports("lan1")
    r = Reconciler(k)
    cfg = parse_config(base_doc())
    first = r.apply(build_desired(cfg))
    assert first.ok and len(first.changes) == 20
    again = r.apply(build_desired(cfg))
    assert again.ok and again.changes == ()

    doc = base_doc()
    doc["peers"].append({"name": "b3", "system_ip": "198.19.255.3", "endpoint": "198.18.3.2"})
    doc["subnets"].append({"name": "guest", "vni": 200, "cidr": "198.19.1.0/24", "gateway": "198.19.1.1",
                           "ports": ["lan1"]})
    res = r.apply(build_desired(parse_config(doc)))
    assert res.ok
    changed = set(res.changes)
    assert "append fdb 00:00:00:00:00:00 dev vx-100 dst 198.19.255.3" in changed
    assert "create vxlan vx-200 mtu 1388 vni 200 local 198.19.255.1" in changed
    assert not any("br-100" in c and "create" in c for c in changed)
    assert r.apply(build_desired(parse_config(doc))).changes == ()

    # Remove the guest subnet: its devices go, lan1 is released with the bridge.
    res = r.apply(build_desired(parse_config(base_doc())))
    assert {"delete link br-200", "delete link vx-200"} <= set(res.changes)
    assert "br-200" not in k.links and k.links["lan1"].master is None
    assert "append fdb" not in " ".join(res.changes)
    assert r.apply(build_desired(parse_config(base_doc()))).changes == ()


def test_system_ip_change_replaces_address_routes_and_vxlan():
    k = kernel_with_ports()
    r = Reconciler(k)
    r.apply(build_desired(parse_config(base_doc())))
    doc = base_doc()
    doc["system_ip"] = "198.19.255.9"
    res = r.apply(build_desired(parse_config(doc)))
    ch = res.changes
    assert "delete address 198.19.255.1/32 dev lo" in ch
    assert "add address 198.19.255.9/32 dev lo" in ch
    assert "delete link vx-100" in ch  # VXLAN local cannot change in place
    assert "delete link br-100" not in ch
    assert r.apply(build_desired(parse_config(doc))).changes == ()


def test_foreign_objects_are_never_removed():
    k = kernel_with_ports()
    k.links["br-x"] = LinkState("br-x", 50, "bridge", 1500, True)  # not ours (no alias)
    k.addrs.add(Addr("wan0", "203.0.113.5/24"))  # added by someone else (no proto)
    p = plan(Desired(), k.snapshot())
    assert p.ops == ()


def test_foreign_link_with_our_name_of_other_kind_waits():
    k = kernel_with_ports()
    k.links["vx-100"] = LinkState("vx-100", 60, "veth", 1500, True)
    p = plan(build_desired(parse_config(base_doc())), k.snapshot())
    assert any("vx-100 exists as a veth" in w for w in p.waiting)
    assert not any(isinstance(op, DeleteLink) for op in p.ops)


def test_missing_port_is_reported_not_fatal():
    k = kernel_with_ports()
    del k.links["lan0"]
    r = Reconciler(k)
    res = r.apply(build_desired(parse_config(base_doc())))
    assert res.ok
    assert "port lan0 of br-100 does not exist" in res.waiting


def test_port_removed_from_subnet_is_released():
    k = kernel_with_ports()
    r = Reconciler(k)
    r.apply(build_desired(parse_config(base_doc())))
    doc = base_doc()
    doc["subnets"][0]["ports"] = []
    p = plan(build_desired(parse_config(doc)), k.snapshot())
    assert p.ops == (SetMaster("lan0", None),)


def test_ports_wired_by_workloads_are_never_released():
    """An app's veth or a VM's TAP on an owned bridge belongs to their supervisors: a full pass (at
    start, at every resync) must not take it off the bridge (it did: apps flapped every 30 s)."""
    k = kernel_with_ports()
    r = Reconciler(k)
    r.apply(build_desired(parse_config(base_doc())))
    doc = base_doc()
    doc["subnets"][0]["ports"] = []
    desired = build_desired(parse_config(doc), guests=frozenset({"lan0"}))
    assert plan(desired, k.snapshot()).ops == ()
    assert plan(build_desired(parse_config(doc)), k.snapshot()).ops == (SetMaster("lan0", None),)


def test_failed_apply_rolls_back_to_last_good():
    k = kernel_with_ports("lan1")
    r = Reconciler(k)
    cfg = parse_config(base_doc())
    r.apply(build_desired(cfg))
    before = k.snapshot()
    doc = base_doc()
    doc["subnets"].append({"name": "guest", "vni": 200, "cidr": "198.19.1.0/24", "gateway": "198.19.1.1"})
    k.fail_on = AddAddr  # the kernel refuses the new gateway address midway
    res = r.apply(build_desired(parse_config(doc)))
    k.fail_on = None
    assert not res.ok and "injected failure" in res.error
    assert res.rolled_back
    after = k.snapshot()
    assert set(after.links) == set(before.links)
    assert after.addrs == before.addrs and after.fdb == before.fdb and after.routes == before.routes


def test_flush_removes_only_ours():
    k = kernel_with_ports()
    k.addrs.add(Addr("wan0", "203.0.113.5/24"))
    r = Reconciler(k)
    r.apply(build_desired(parse_config(base_doc())))
    res = r.flush()
    assert res.ok
    assert set(k.links) == {"lo", "wan0", "lan0"}
    assert k.addrs == {Addr("wan0", "203.0.113.5/24")}
    assert k.routes == set() and k.fdb == set()
    assert any(isinstance(op, DelAddr) for op in k.applied)


def test_dhcp_uplink_waits_for_lease_then_uses_it():
    doc = base_doc()
    doc["uplinks"][0] = {"name": "wan0", "interface": "wan0", "mode": "dhcp"}
    cfg = parse_config(doc)
    d0 = build_desired(cfg)
    assert not any(a.ifname == "wan0" for a in d0.addrs)
    assert d0.routes == frozenset()
    lease = Lease(address=__import__("ipaddress").IPv4Interface("198.18.5.10/24"),
                  gateway=__import__("ipaddress").IPv4Address("198.18.5.1"), mtu=1400)
    d1 = build_desired(cfg, {"wan0": lease})
    assert Addr("wan0", "198.18.5.10/24") in d1.addrs
    assert {r.gateway for r in d1.routes} == {"198.18.5.1"}
    assert {link.mtu for link in d1.links} == {tenant_mtu(1400)}


def test_recreated_bridge_gets_its_ports_back():
    k = kernel_with_ports()
    r = Reconciler(k)
    r.apply(build_desired(parse_config(base_doc())))
    # someone deletes our bridge behind our back: drift repair puts everything back
    k.apply(DeleteLink("br-100"))
    res = r.apply(build_desired(parse_config(base_doc())))
    assert "create bridge br-100 mtu 1388" in res.changes
    assert "set lan0 master br-100" in res.changes and "set vx-100 master br-100" in res.changes
    assert k.links["lan0"].master == "br-100"
    assert r.apply(build_desired(parse_config(base_doc()))).changes == ()


def test_link_state_owned_flag():
    assert replace(LinkState("x", 1, "bridge", 1500, True), alias="nsg").owned
