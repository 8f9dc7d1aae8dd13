"""controller/route_budget.py: the routes a gateway can honestly announce, from its LAN port security
and workloads; and where the budget is used: the reflector's per-client limit (rr_policy
``view_from_configs``) and every other gateway's per-site limit (mesh ``evpn.remote_limits``)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from controller.mesh import render, with_remote_prefixes
from controller.route_budget import MARGIN, ROUTES_PER_HOST, route_budget
from controller.rr_policy import view_from_configs
from nsg.model import ConfigError, parse_config
from tests.unit.controller.test_mesh_remote_prefixes import SYS, enterprise


def changed(cfg, **subnet):
    doc = cfg.model_dump(mode="json")
    doc["subnets"][0].update(subnet)
    return parse_config(doc)


def test_the_budget_counts_each_guarded_port_and_workload():
    cfg = render(enterprise())["b1"]  # one subnet, one LAN port at the default 256 MACs
    assert route_budget(cfg) == MARGIN + 1 + ROUTES_PER_HOST * 256 == 833
    two_ports = changed(cfg, ports=["lan0", "lan1"], port_security={"max_macs": 10})
    assert route_budget(two_ports) == MARGIN + 1 + ROUTES_PER_HOST * 20
    doc = two_ports.model_dump(mode="json")
    doc["apps"] = [{"name": "web", "image": "acme/web:1", "subnet": "corp", "address": "198.19.0.40"}]
    assert route_budget(parse_config(doc)) == MARGIN + 1 + ROUTES_PER_HOST * (20 + 4)  # its port: 4 MACs


def test_an_unguarded_lan_has_no_budget_and_the_hub_none():
    configs = render(enterprise())
    assert route_budget(changed(configs["b1"], port_security=None)) is None
    assert route_budget(configs["hub"]) is None  # no EVPN


def test_every_gateway_limits_the_other_sites_to_their_budget():
    configs = render(enterprise())
    limits = {n: {str(rl.system_ip): rl.max_routes for rl in c.evpn.remote_limits}
              for n, c in configs.items() if c.evpn}
    assert limits == {"b1": {SYS["b2"]: 833, SYS["b3"]: 833}, "b2": {SYS["b1"]: 833, SYS["b3"]: 833},
                      "b3": {SYS["b1"]: 833, SYS["b2"]: 833}}
    # b2's LAN unguarded: the others fall back to their default for it; a re-render picks it up
    configs["b2"] = changed(configs["b2"], port_security=None)
    again = with_remote_prefixes(configs)
    assert {str(rl.system_ip) for rl in again["b1"].evpn.remote_limits} == {SYS["b3"]}


def test_the_reflector_view_limits_each_client_to_its_budget():
    configs = render(enterprise())
    configs["b3"] = changed(configs["b3"], port_security={"max_macs": 4})
    view = view_from_configs(configs)
    assert {str(ip): c.max_routes for ip, c in view.clients.items()} == {
        SYS["b1"]: 833, SYS["b2"]: 833, SYS["b3"]: MARGIN + 1 + ROUTES_PER_HOST * 4}
    configs["b1"] = changed(configs["b1"], port_security=None)
    assert view_from_configs(configs).clients[IPv4Address(SYS["b1"])].max_routes is None  # --max-routes


def test_a_config_refuses_a_limit_for_itself_or_twice():
    cfg = render(enterprise())["b1"]
    doc = cfg.model_dump(mode="json")
    doc["evpn"]["remote_limits"] = [{"system_ip": SYS["b1"], "max_routes": 5}]
    with pytest.raises(ConfigError, match=r"remote_limits.*this gateway's own"):
        parse_config(doc)
    doc["evpn"]["remote_limits"] = [{"system_ip": SYS["b2"], "max_routes": 5}] * 2
    with pytest.raises(ConfigError, match="listed twice"):
        parse_config(doc)
