"""compose(): config + leases + EVPN view + probe -> one DesiredState; what it derives, once."""

from __future__ import annotations

from ipaddress import IPv4Interface, ip_address

import pytest

from nsg.compose import DESIRED_ORDER, ComposeError, DesiredState, EvpnView, compose, local_ip
from nsg.dataplane.desired import ESP_TUN
from nsg.dataplane.mtu import tenant_mtu
from nsg.dataplane.types import Fdb, Neigh, Route
from nsg.model import parse_config
from nsg.tunnels import Credentials
from nsg.uplinks.lease import Lease
from tests.unit.conftest import base_doc


def cfg(**extra):
    doc = base_doc()
    doc.update(extra)
    return parse_config(doc)


def dhcp_doc(**uplink):
    return [{"name": "wan0", "interface": "wan0", "mode": "dhcp", **uplink}]


def lease(addr="198.18.5.7/24", gw="198.18.5.1", mtu=None):
    return Lease(IPv4Interface(addr), ip_address(gw), mtu)


EVPN = {"asn": 65000, "peers": [{"address": "198.19.255.254", "asn": 65000}]}


def test_parts_follow_the_declared_order():
    fields = [f for f in DesiredState.__dataclass_fields__ if f not in ("tenant_mtu", "local_ip")]
    assert tuple(fields) == DESIRED_ORDER == ("dhcp", "resolver", "guard", "policy", "esp_engine", "dataplane",
                                              "port_guard", "ike", "qos", "evpn", "workloads", "upgrade")


def test_the_state_is_frozen_and_the_same_inputs_compose_the_same_state():
    c = cfg()
    s = compose(c)
    assert s == compose(c)
    with pytest.raises(AttributeError):
        s.tenant_mtu = 1  # type: ignore[misc]


@pytest.mark.parametrize(("uplinks", "leases", "want"), [
    (None, {}, "198.18.1.2"),  # the static address
    (dhcp_doc(), {}, "0.0.0.0"),  # no lease yet
    (dhcp_doc(), {"wan0": lease()}, "198.18.5.7"),  # the lease's
])
def test_local_ip_from_the_static_address_or_the_lease(uplinks, leases, want):
    c = cfg(uplinks=uplinks) if uplinks else cfg()
    s = compose(c, leases)
    assert s.local_ip == local_ip(c, leases) == want


def test_local_ip_reaches_ike_and_evpn():
    c = cfg(uplinks=dhcp_doc(), transport="esp", ipsec={"auth": "psk"},
            peers=[{"name": "b2", "system_ip": "198.19.255.2", "endpoint": "198.18.2.2", "psk": "x" * 32}],
            evpn=EVPN)
    s = compose(c, {"wan0": lease()})
    assert s.ike.enabled and s.ike.local_ip == "198.18.5.7" and s.evpn.local_ip == "198.18.5.7"
    assert s.ike != compose(c, {"wan0": lease("198.18.5.8/24")}).ike  # a new address reaches IKE
    # the credentials loaded for the config reach IKE; the part changes with a renewal (epoch), not
    # with another load of the same ones (they are compared by epoch, never by key bytes)
    first, again, renewed = Credentials(), Credentials(), Credentials(epoch=1)
    with_creds = compose(c, {"wan0": lease()}, credentials=first).ike
    assert with_creds.credentials is first and with_creds == compose(c, {"wan0": lease()}, credentials=again).ike
    assert with_creds != compose(c, {"wan0": lease()}, credentials=renewed).ike  # a renewed LDevID


@pytest.mark.parametrize(("lease_mtu", "uplink_mtu", "wan"), [
    (None, 1500, 1500),
    (1400, 1500, 1400),  # the lease lowers it
    (1500, 1450, 1450),  # never above the uplink's own
])
def test_tenant_mtu_computed_once_and_handed_to_bridges_and_workloads(lease_mtu, uplink_mtu, wan):
    c = cfg(uplinks=dhcp_doc(mtu=uplink_mtu),
            apps=[{"name": "web", "image": "nginx:1", "subnet": "corp", "address": "198.19.0.50"}])
    s = compose(c, {"wan0": lease(mtu=lease_mtu)})
    assert s.tenant_mtu == tenant_mtu(wan) == s.workloads.mtu
    assert {ln.mtu for ln in s.dataplane.links} == {s.tenant_mtu}
    assert s.workloads.apps["web"].mtu == s.tenant_mtu
    assert s.workloads.apps["web"].host_ifname in s.dataplane.guests  # the dataplane leaves the veth be


def test_a_lease_mtu_too_small_is_a_compose_error_naming_it():
    c = cfg(uplinks=dhcp_doc())
    with pytest.raises(ComposeError, match="tenant MTU") as err:
        compose(c, {"wan0": lease(mtu=600)})
    assert err.value.what == "tenant MTU" and "cannot build the desired state" in str(err.value)


def test_the_evpn_view_becomes_fdb_neighbours_and_routes_of_our_subnets_only():
    view = EvpnView(
        fdb=frozenset({Fdb("vx-100", "00:00:00:00:00:00", "198.19.255.2"), Fdb("vx-999", "02:00:00:00:00:01", "x")}),
        neighbors=frozenset({Neigh("br-100", "198.19.0.9", "02:00:00:00:00:09"),
                             Neigh("br-999", "198.19.9.9", "02:00:00:00:00:09")}),
        routes=frozenset({Route("203.0.113.0/24", "br-100", "198.19.0.7"), Route("192.0.2.0/24", "br-999", "x")}))
    s = compose(cfg(evpn=EVPN), evpn_view=view)
    assert {f.ifname for f in s.dataplane.fdb} == {"vx-100"}
    assert s.dataplane.neighbors == frozenset({Neigh("br-100", "198.19.0.9", "02:00:00:00:00:09")})
    assert Route("203.0.113.0/24", "br-100", "198.19.0.7") in s.dataplane.routes
    assert not any(r.ifname == "br-999" for r in s.dataplane.routes)
    assert s.evpn.bridges == (("br-100", 100),)
    plain = compose(cfg(), evpn_view=view)  # no evpn section: the view is not used
    assert not plain.dataplane.neighbors and plain.evpn.config is None


def test_only_entries_differ_when_the_rib_changes():
    c = cfg(evpn=EVPN)
    a = compose(c, evpn_view=EvpnView())
    b = compose(c, evpn_view=EvpnView(fdb=frozenset({Fdb("vx-100", "02:00:00:00:00:01", "198.19.255.2")})))
    assert a.dataplane != b.dataplane and a.dataplane.links == b.dataplane.links
    assert (a.guard, a.policy, a.esp_engine, a.ike, a.qos, a.evpn, a.workloads) == \
           (b.guard, b.policy, b.esp_engine, b.ike, b.qos, b.evpn, b.workloads)


@pytest.mark.parametrize(("kernel_esp", "tun"), [(False, True), (True, False)])
def test_the_esp_probe_decides_whether_peers_route_into_the_tun(kernel_esp, tun):
    c = cfg(transport="esp", ipsec={"auth": "psk"},
            peers=[{"name": "b2", "system_ip": "198.19.255.2", "endpoint": "198.18.2.2", "psk": "x" * 32}])
    s = compose(c, kernel_esp=kernel_esp)
    assert s.esp_engine.enabled and s.esp_engine.kernel_esp is kernel_esp
    assert (ESP_TUN in s.dataplane.up) is tun
    assert any(r.ifname == ESP_TUN for r in s.dataplane.routes) is tun


def test_dhcp_part_names_the_dhcp_uplinks():
    assert compose(cfg()).dhcp.uplinks == ()
    assert compose(cfg(uplinks=dhcp_doc())).dhcp.uplinks == (("wan0", "wan0"),)
