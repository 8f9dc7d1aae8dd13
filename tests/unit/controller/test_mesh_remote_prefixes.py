"""controller/mesh.py renders each EVPN gateway's ``evpn.remote_prefixes``: the type-5 prefixes every
other gateway originates, each with that gateway's system IP; the gateway accepts no other type-5
route (nsg/evpn/routes.py). The hub has no EVPN section and gets none."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from controller.enterprise import Enterprise, GatewayDef, SubnetDef, UplinkDef
from controller.mesh import render, with_remote_prefixes
from nsg.model import ConfigError, parse_config
from nsg.model.evpn import RemotePrefix

SYS = {"b1": "198.19.255.1", "b2": "198.19.255.2", "b3": "198.19.255.3", "hub": "198.19.255.254"}


def enterprise() -> Enterprise:
    def gw(name: str, i: int, role: str = "edge") -> GatewayDef:
        up = UplinkDef(name="wan0", interface="wan0", mode="static", address=IPv4Interface(f"198.18.{i}.2/24"),
                       gateway=IPv4Address(f"198.18.{i}.1"))
        return GatewayDef(name=name, system_ip=IPv4Address(SYS[name]), uplinks=(up,), role=role,
                          ports={"corp": ("lan0",)} if role == "edge" else {})

    return Enterprise(name="acme", subnets=(SubnetDef(name="corp", vni=100, cidr="198.19.0.0/24",
                                                      gateway="198.19.0.1"),),
                      gateways=(gw("b1", 1), gw("b2", 2), gw("b3", 3), gw("hub", 9, "hub")))


def with_prefixes(configs, **prefixes):
    """The rendered configs with ``evpn.prefixes`` given to some gateways (as a lab or an operator does)."""
    out = dict(configs)
    for name, nets in prefixes.items():
        doc = configs[name].model_dump(mode="json")
        doc["evpn"]["prefixes"] = [{"prefix": p, "via": via} for p, via in nets]
        out[name] = parse_config(doc)
    return out


def remote(cfg) -> set[tuple[str, str]]:
    return {(str(rp.system_ip), str(rp.prefix)) for rp in cfg.evpn.remote_prefixes}


def test_render_gives_every_edge_the_others_prefixes_and_nothing_else():
    configs = render(enterprise())
    assert {n: remote(c) for n, c in configs.items() if c.evpn} == {"b1": set(), "b2": set(), "b3": set()}
    assert configs["hub"].evpn is None
    given = with_prefixes(configs, b3=[("203.0.113.0/24", "198.19.0.30")],
                          b1=[("192.0.2.0/25", "198.19.0.10"), ("192.0.2.128/25", "198.19.0.11")])
    got = with_remote_prefixes(given)
    assert remote(got["b2"]) == {(SYS["b3"], "203.0.113.0/24"), (SYS["b1"], "192.0.2.0/25"),
                                 (SYS["b1"], "192.0.2.128/25")}
    assert remote(got["b1"]) == {(SYS["b3"], "203.0.113.0/24")}  # never its own
    assert remote(got["b3"]) == {(SYS["b1"], "192.0.2.0/25"), (SYS["b1"], "192.0.2.128/25")}
    assert got["hub"] == given["hub"]
    # nothing else of a config changes (the round trip keeps nulls: a subnet's port security off stays off)
    doc = given["b2"].model_dump(mode="json")
    doc["subnets"][0]["port_security"] = None
    given["b2"] = parse_config(doc)
    got = with_remote_prefixes(given)
    assert got["b2"].subnets[0].port_security is None
    for name in ("b1", "b2", "b3"):
        assert got[name].model_copy(update={"evpn": given[name].evpn}) == given[name]
    assert got["b2"].evpn.remote_prefixes[0] == RemotePrefix(system_ip=SYS["b1"], prefix="192.0.2.0/25")


def test_a_prefix_that_moved_leaves_the_old_sites_list():
    configs = with_remote_prefixes(with_prefixes(render(enterprise()), b3=[("203.0.113.0/24", "198.19.0.30")]))
    moved = with_prefixes(configs, b3=[], b2=[("203.0.113.0/24", "198.19.0.20")])
    assert remote(with_remote_prefixes(moved)["b1"]) == {(SYS["b2"], "203.0.113.0/24")}


@pytest.mark.parametrize(("entry", "problem"), [
    ({"system_ip": "198.19.255.1", "prefix": "203.0.113.0/24"}, "is this gateway's own"),
    ({"system_ip": "198.19.255.3", "prefix": "198.19.0.128/25"}, "overlaps subnet 'corp'"),
    ({"system_ip": "198.19.255.3", "prefix": "0.0.0.0/0"}, "overlaps subnet 'corp'"),  # a default: never
    ({"system_ip": "198.19.255.3", "prefix": "203.0.113.1/24"}, "not a valid IPv4 network"),
])
def test_bad_remote_prefixes_are_refused_with_the_field_named(entry, problem):
    doc = render(enterprise())["b1"].model_dump(mode="json")
    doc["evpn"]["remote_prefixes"] = [entry]
    with pytest.raises(ConfigError) as exc:
        parse_config(doc)
    assert "remote_prefixes" in str(exc.value) and problem in str(exc.value)


def test_limits_and_duplicate_mac_detection_have_defaults():
    evpn = render(enterprise())["b1"].evpn
    assert (evpn.max_routes_per_peer, evpn.max_routes_per_site) == (20_000, 10_000)
    dm = evpn.duplicate_mac
    assert (dm.max_moves, dm.window_s, dm.freeze_s) == (5, 180, 180)
    assert IPv4Network("203.0.113.0/24") not in {rp.prefix for rp in evpn.remote_prefixes}
