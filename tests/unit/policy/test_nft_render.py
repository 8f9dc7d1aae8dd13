"""nsg.policy.nft: the policy -> one nftables JSON document (pure). Table-driven on the rules' shapes;
the kernel's reading of the same documents is tested in tests/netns/test_policy.py."""

from __future__ import annotations

import json

import pytest

from nsg.model import ConfigError, parse_config
from nsg.policy.nft import STATEFUL, render
from tests.unit.conftest import base_doc


def doc(policy: dict, **extra) -> dict:
    d = base_doc()
    d["subnets"].append({"name": "guest", "vni": 200, "cidr": "198.19.1.0/24", "gateway": "198.19.1.1", "ports": []})
    d.update(extra)
    d["policy"] = policy
    return d


def rules(rendered, chain: str) -> list[list[dict]]:
    return [c["add"]["rule"]["expr"] for c in rendered.commands if "rule" in c.get("add", {})
            and c["add"]["rule"]["chain"] == chain]


def comments(rendered, chain: str) -> list[str | None]:
    return [c["add"]["rule"].get("comment") for c in rendered.commands if "rule" in c.get("add", {})
            and c["add"]["rule"]["chain"] == chain]


def text(exprs: list[dict]) -> str:
    return json.dumps(exprs, sort_keys=True)


UPLINKS = {"wan0": "wan0"}


def test_the_table_is_replaced_whole_and_nothing_else_is_named():
    r = render(parse_config(doc({"tenants": [{"name": "corp", "subnets": ["corp"]}]})), UPLINKS)
    assert r.commands[:3] == [{"add": {"table": {"family": "inet", "name": "nsg"}}},
                              {"delete": {"table": {"family": "inet", "name": "nsg"}}},
                              {"add": {"table": {"family": "inet", "name": "nsg"}}}]
    for c in r.commands[3:]:
        (obj,) = c["add"].values()
        assert (obj["family"], obj["table"]) == ("inet", "nsg")
    # the same config renders the same document
    assert render(parse_config(doc({"tenants": [{"name": "corp", "subnets": ["corp"]}]})), UPLINKS) == r


def test_unnamed_subnets_form_the_default_tenant_and_tenants_are_walled_off():
    r = render(parse_config(doc({"tenants": [{"name": "corp", "subnets": ["corp"]}]})), UPLINKS)
    fwd = [text(x) for x in rules(r, "forward")]
    assert "ct" in fwd[0] and str(STATEFUL) in fwd[0]  # return traffic of allowed flows first
    wall = [x for x in rules(r, "forward") if {"drop": None} in x]
    assert len(wall) == 2  # one per subnet: corp may reach only br-100, guest only br-200 (no breakout)
    assert {"match": {"op": "!=", "left": {"meta": {"key": "oifname"}}, "right": "br-100"}} in wall[0]
    assert r.counters == ("wall.corp", "wall.default", "default.corp", "default.default")
    assert rules(r, "t_default")[-1][-1] == {"accept": None}  # the default tenant allows
    assert rules(r, "t_corp")[-1][-1] == {"drop": None}  # a named tenant drops by default
    assert rules(r, "postrouting") == []


def test_entries_in_order_with_their_matches_and_verdicts():
    pol = {"groups": [{"name": "srv", "members": ["198.19.0.10/32", "198.19.0.11", "subnet:guest"]}],
           "tenants": [{"name": "corp", "subnets": ["corp", "guest"], "acl": [
               {"name": "web", "src": "subnet:corp", "dst": "group:srv", "protocol": "tcp",
                "dst_ports": [80, "8000-8080"], "action": "allow"},
               {"name": "udp", "protocol": "udp", "src_ports": [53], "action": "allow", "stateful": False},
               {"name": "ef", "dscp": 46, "action": "drop", "log": True},
               {"name": "rej", "src": "198.19.0.99/32", "action": "reject"},
               {"name": "rej-udp", "protocol": "udp", "action": "reject"},
               {"name": "p47", "protocol": 47, "action": "allow"}]}]}
    r = render(parse_config(doc(pol)), UPLINKS)
    sets = [c["add"]["set"] for c in r.commands if "set" in c.get("add", {})]
    assert sets == [{"family": "inet", "table": "nsg", "name": "g_srv", "type": "ipv4_addr", "flags": ["interval"],
                     "elem": [{"prefix": {"addr": "198.19.0.10", "len": 31}},
                              {"prefix": {"addr": "198.19.1.0", "len": 24}}]}]  # collapsed
    t = [text(x) for x in rules(r, "t_corp")]
    assert len(t) == 8  # 6 entries, the any-protocol reject is two rules, and the default
    assert '"@g_srv"' in t[0] and '"range": [8000, 8080]' in t[0] and '"counter": null' in t[0]
    assert '"mangle"' in t[0] and t[0].endswith('{"accept": null}]')
    assert '"sport"' in t[1] and '"mangle"' not in t[1]  # stateless: no conntrack mark
    assert '"dscp"' in t[2] and '"log"' in t[2] and t[2].endswith('{"drop": null}]')
    assert '"tcp reset"' in t[3] and '"l4proto"' in t[3] and '"admin-prohibited"' in t[4]
    assert comments(r, "t_corp") == ["acl.corp.web", "acl.corp.udp", "acl.corp.ef", "acl.corp.rej", "acl.corp.rej",
                                     "acl.corp.rej-udp", "acl.corp.p47", "default.corp"]
    assert '"admin-prohibited"' in t[5] and '"tcp reset"' not in t[5]
    assert '"right": 47' in t[6]
    assert r.counters == ("wall.corp", "acl.corp.web", "acl.corp.udp", "acl.corp.ef", "acl.corp.rej",
                          "acl.corp.rej-udp", "acl.corp.p47", "default.corp")


def test_counters_can_start_where_they_were():
    pol = {"tenants": [{"name": "corp", "subnets": ["corp", "guest"], "acl": [
        {"name": "rej", "src": "198.19.0.99/32", "action": "reject"}]}]}
    r = render(parse_config(doc(pol)), UPLINKS, start={"acl.corp.rej": {"packets": 7, "bytes": 700}})
    first, second, default = rules(r, "t_corp")
    assert {"counter": {"packets": 7, "bytes": 700}} in first  # the first rule of the entry carries it
    assert {"counter": None} in second and {"counter": None} in default


def test_breakout_masquerades_out_of_its_uplink_and_opens_the_wall_to_it():
    r = render(parse_config(doc({"breakout": [{"subnet": "guest", "uplink": "wan0"}]})), UPLINKS)
    (nat,) = rules(r, "postrouting")
    assert nat[-1] == {"masquerade": None} and {"match": {"op": "==", "left": {"meta": {"key": "oifname"}},
                                                          "right": "wan0"}} in nat
    corp, guest = (x for x in rules(r, "forward") if {"drop": None} in x)  # one tenant "default" holds both
    assert {"set": ["br-100", "br-200"]} in [m["match"]["right"] for m in corp if "match" in m]
    assert {"set": ["br-100", "br-200", "wan0"]} in [m["match"]["right"] for m in guest if "match" in m]


@pytest.mark.parametrize(("policy", "field"), [
    ({"tenants": [{"name": "t", "subnets": ["corp"], "acl": [{"name": "a", "protocol": "tcp",
                                                              "dst_ports": [70000], "action": "allow"}]}]},
     "policy.tenants[0].acl[0].dst_ports[0]"),
    ({"tenants": [{"name": "t", "subnets": ["corp"], "acl": [{"name": "a", "dst": "group:nope",
                                                              "action": "allow"}]}]},
     "policy.tenants[0].acl[0].dst: no group named 'nope'"),
    ({"tenants": [{"name": "t", "subnets": ["nope"]}]}, "policy.tenants[0].subnets[0]: no subnet named 'nope'"),
    ({"tenants": [{"name": "t", "subnets": ["corp"]}, {"name": "u", "subnets": ["corp"]}]},
     "already in tenant 't'"),
    ({"tenants": [{"name": "t", "subnets": ["corp"], "acl": [{"name": "a", "dst_ports": [80],
                                                              "action": "allow"}]}]}, "ports need protocol"),
    ({"tenants": [{"name": "t", "subnets": ["corp"], "acl": [{"name": "a", "action": "maybe"}]}]},
     "policy.tenants[0].acl[0].action"),
    ({"tenants": [{"name": "t", "subnets": ["corp"], "acl": [{"name": "a", "action": "drop"},
                                                             {"name": "a", "action": "drop"}]}]}, "used twice"),
    ({"tenants": [{"name": "t", "subnets": ["corp"], "acl": [{"name": "a", "dst": "10.0.0.1/8",
                                                              "action": "drop"}]}]}, "prefix without host bits"),
    ({"groups": [{"name": "g", "members": ["app:ghost"]}]}, "policy.groups[0].members[0]: no app named 'ghost'"),
    ({"breakout": [{"subnet": "corp", "uplink": "lte9"}]}, "policy.breakout[0].uplink: no uplink named 'lte9'"),
    ({"tenants": [{"name": "t", "subnets": ["corp"], "acl": [{"name": "a", "dscp": 64, "action": "drop"}]}]},
     "policy.tenants[0].acl[0].dscp"),
])
def test_bad_policies_are_refused_naming_the_field(policy, field):
    with pytest.raises(ConfigError) as info:
        parse_config(doc(policy))
    assert field in str(info.value), str(info.value)
