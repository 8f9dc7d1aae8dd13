"""nsg.model.qos + nsg.policy.tc: QoS validation naming the field, and the plan (HTB trees, the
classification table) as data. The kernel's reading of the plan: tests/e2e/test_qos.py."""

from __future__ import annotations

import json

import pytest

from nsg.model import ConfigError, parse_config
from nsg.policy.tc import ifb_name, plan
from tests.unit.conftest import base_doc

QOS = {"classes": [{"name": "A", "guaranteed_pct": 70, "priority": 1}, {"name": "B", "guaranteed_pct": 20},
                   {"name": "H", "guaranteed_pct": 10, "ceiling_pct": 50, "priority": 7}],
       "dscp": {"46": "A", "10": "B"}, "default_class": "H",
       "uplinks": [{"uplink": "wan0", "egress_kbit": 20000, "ingress_kbit": 50000}]}


def cfg(qos: dict):
    d = base_doc()
    d["qos"] = qos
    return parse_config(d)


def test_the_plan_builds_one_tree_per_direction_and_classifies_by_dscp():
    p = plan(cfg(QOS), {"wan0": "eth9"})
    egress, ingress = p.links
    assert (egress.dev, egress.rate_kbit, egress.ingress_of) == ("eth9", 20000, None)
    assert (ingress.dev, ingress.rate_kbit, ingress.ingress_of) == (ifb_name("eth9"), 50000, "eth9")
    assert [(c.name, c.minor, c.rate_kbit, c.ceil_kbit, c.prio) for c in egress.classes] == [
        ("A", 0x10, 14000, 20000, 1), ("B", 0x11, 4000, 20000, 4), ("H", 0x17, 2000, 10000, 7)]
    argv = egress.argv()
    assert argv[0] == ["qdisc", "add", "dev", "eth9", "root", "handle", "1:", "htb", "default", "17"]
    assert ["class", "add", "dev", "eth9", "parent", "1:1", "classid", "1:10", "htb", "rate", "14000kbit", "ceil",
            "20000kbit", "prio", "1", "quantum", "90840"] in argv
    assert not any(a[0] == "filter" for a in argv)  # egress: nftables picks the class
    filters = [a for a in ingress.argv() if a[0] == "filter"]
    assert [a[a.index("tos") + 1:] for a in filters] == [["0x28", "0xfc", "flowid", "1:11"],
                                                         ["0xb8", "0xfc", "flowid", "1:10"]]
    rules = [c["add"]["rule"] for c in json.loads(p.nft)["nftables"] if "rule" in c.get("add", {})]
    assert [r["comment"] for r in rules] == ["dscp.10", "dscp.46", "default"]
    assert rules[1]["expr"][2] == {"mangle": {"key": {"meta": {"key": "priority"}}, "value": "1:10"}}
    assert plan(cfg(QOS), {"wan0": "eth9"}).digest() == p.digest() != plan(cfg(QOS), {"wan0": "eth8"}).digest()


@pytest.mark.parametrize(("change", "field"), [
    ({"uplinks": [{"uplink": "wan0", "egress_kbit": 0}]}, "qos.uplinks[0].egress_kbit"),
    ({"uplinks": [{"uplink": "lte9", "egress_kbit": 1000}]}, "qos.uplinks[0].uplink: no uplink named 'lte9'"),
    ({"classes": [{"name": "A", "guaranteed_pct": 0}]}, "qos.classes[0].guaranteed_pct"),
    ({"classes": [{"name": "A", "guaranteed_pct": 80}, {"name": "H", "guaranteed_pct": 30}], "dscp": {}},
     "add up to 110%"),
    ({"classes": [{"name": "A", "guaranteed_pct": 50, "ceiling_pct": 40}, {"name": "H", "guaranteed_pct": 5}],
      "dscp": {}}, "ceiling_pct 40"),
    ({"classes": [{"name": "Z", "guaranteed_pct": 5}]}, "qos.classes[0].name"),
    ({"dscp": {"64": "A"}}, "DSCP 64"),
    ({"dscp": {"46": "C"}}, "class C is not defined"),
    ({"default_class": "C"}, "default_class"),
])
def test_bad_qos_is_refused_naming_the_field(change, field):
    with pytest.raises(ConfigError) as info:
        cfg({**QOS, **change})
    assert field in str(info.value), str(info.value)


def test_limiters_police_what_a_target_sends_or_receives():
    d = base_doc()
    d["qos"] = {**QOS, "limiters": [{"name": "h1", "target": "198.19.0.11/32", "rate_kbit": 4000, "direction": "from"},
                                    {"name": "corp", "target": "subnet:corp", "rate_kbit": 80000}]}
    p = plan(parse_config(d), {"wan0": "eth9"})
    rules = [c["add"]["rule"] for c in json.loads(p.nft)["nftables"] if "rule" in c.get("add", {})
             and c["add"]["rule"]["chain"] == "limit"]
    assert [r["comment"] for r in rules] == ["limit.h1.from", "limit.corp.from", "limit.corp.to"]
    assert rules[0]["expr"][1]["limit"] == {"rate": 500, "rate_unit": "kbytes", "per": "second", "burst": 64,
                                            "burst_unit": "kbytes", "inv": True}
    assert rules[2]["expr"][0]["match"]["left"]["payload"]["field"] == "daddr" and p.limiters
    d["qos"]["limiters"] = [{"name": "x", "target": "app:ghost", "rate_kbit": 100}]
    with pytest.raises(ConfigError) as info:
        parse_config(d)
    assert "qos.limiters[0].target: no app named 'ghost'" in str(info.value)
