"""Admin API: the enterprise's firewall policy (validated, rendered into each edge gateway's config,
app references by address, breakout only where the uplink exists) and per-rule counters from the channel."""

from __future__ import annotations

import pytest

from controller.channel_server import ChannelHub, GatewaySession
from controller.store import Store
from nsg.channel import wire
from tests.unit.controller.test_api import Api, error_of, run, wan

POLICY = {
    "groups": [{"name": "servers", "members": ["app:web", "192.0.2.10/32"]}],
    "tenants": [{"name": "corp", "subnets": ["corp"], "default": "drop", "acl": [
        {"name": "web", "dst": "group:servers", "protocol": "tcp", "dst_ports": [80, "8000-8080"], "action": "allow"},
        {"name": "to-web", "dst": "app:web", "protocol": "icmp", "action": "allow"}]}],
    "breakout": [{"subnet": "corp", "uplink": "wan0"}, {"subnet": "corp-lte", "uplink": "lte0"}],
}


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "c.db") as s:
        s.workloads.set_device_url("https://198.18.0.2:8444")
        s.enterprises.create("acme")
        s.enterprises.add_subnet("acme", "corp", vni=100, cidr="192.0.2.0/24", gateway="192.0.2.1")
        s.enterprises.add_subnet("acme", "corp-lte", vni=200, cidr="198.51.100.0/24", gateway="198.51.100.1")
        s.gateways.add("acme", "b1", serial="S1", uplinks=wan(1))
        s.gateways.add("acme", "b2", serial="S2", uplinks=[*wan(2), {"name": "lte0", "interface": "wwan0",
                                                                    "mode": "dhcp"}])
        s.gateways.add("acme", "hub", serial="H1", uplinks=wan(3), role="hub")
        s.workloads.add_image("acme", "a" * 64, 10, ["acme/web:1"])
        s.workloads.add_app("b1", "web", subnet="corp", image="acme/web:1", address="192.0.2.50")
        yield s


def test_policy_round_trip_render_and_counters(store):
    token = store.tokens.create("t")
    hub = ChannelHub(lambda serial: None)

    async def scenario(client):
        api = Api(client, token)
        status, doc = await api("GET", "/enterprises/acme/policy")
        assert status == 200 and doc["policy"] is None
        g = doc["generation"]
        status, doc = await api("PUT", "/enterprises/acme/policy", POLICY)
        assert status == 200 and doc["generation"] == g + 1 and doc["policy"]["tenants"][0]["name"] == "corp"
        # b1: the app by its address; only wan0's breakout (b1 has no lte0)
        _, cfg = await api("GET", "/gateways/b1/config")
        assert cfg["policy"]["groups"][0]["members"] == ["192.0.2.50/32", "192.0.2.10/32"]
        assert cfg["policy"]["tenants"][0]["acl"][1]["dst"] == "192.0.2.50/32"
        assert cfg["policy"]["breakout"] == [{"subnet": "corp", "uplink": "wan0"}]
        _, cfg = await api("GET", "/gateways/b2/config")
        assert [b["uplink"] for b in cfg["policy"]["breakout"]] == ["wan0", "lte0"]
        _, cfg = await api("GET", "/gateways/hub/config")
        assert "policy" not in cfg or cfg["policy"] is None  # the hub carries no subnets

        # bad policies: refused with the field named; the stored one stays
        bad = [({**POLICY, "tenants": [{**POLICY["tenants"][0], "acl": [
                    {"name": "x", "protocol": "tcp", "dst_ports": [70000], "action": "allow"}]}]},
                "tenants[0].acl[0].dst_ports[0]"),
               ({**POLICY, "tenants": [{**POLICY["tenants"][0], "acl": [
                    {"name": "x", "dst": "group:nope", "action": "allow"}]}]}, "policy"),
               ({**POLICY, "groups": [{"name": "g", "members": ["app:ghost"]}]}, "policy"),
               ({**POLICY, "colour": "red"}, "colour")]
        for body, field in bad:
            status, doc = await api("PUT", "/enterprises/acme/policy", body)
            assert status == 400 and error_of(doc)[1].startswith(field), doc
        _, doc = await api("GET", "/enterprises/acme/policy")
        assert doc["generation"] == g + 1 and doc["policy"]["tenants"][0]["acl"][0]["name"] == "web"

        status, doc = await api("GET", "/gateways/b1/policy/counters")
        assert status == 200 and doc == {"gateway": "b1", "connected": False, "generation": None, "ts": None,
                                         "counters": {}}
        session = GatewaySession("S1", ws=None)  # type: ignore[arg-type]
        session.policy_counters = wire.PolicyCounters(ts=5.0, generation=7, counters={
            "acl.corp.web": (12, 720), "default.corp": (3, 180)})
        hub.sessions["S1"] = session
        _, doc = await api("GET", "/gateways/b1/policy/counters")
        assert doc["generation"] == 7 and doc["counters"]["acl.corp.web"] == {"packets": 12, "bytes": 720}

        assert (await api("DELETE", "/enterprises/acme/policy"))[0] == 204
        _, cfg = await api("GET", "/gateways/b1/config")
        assert cfg.get("policy") is None

    run(store, scenario, hub=hub)


def test_an_app_name_on_two_gateways_cannot_be_referred_to_by_name(store):
    store.workloads.add_app("b2", "web", subnet="corp", image="acme/web:1", address="192.0.2.51")
    token = store.tokens.create("t")

    async def scenario(client):
        status, doc = await Api(client, token)("PUT", "/enterprises/acme/policy", POLICY)
        assert status == 400 and error_of(doc)[1] == "policy" and "b1, b2" in doc["error"]["message"], doc

    run(store, scenario)


QOS = {"classes": [{"name": "A", "guaranteed_pct": 70, "priority": 1}, {"name": "H", "guaranteed_pct": 30}],
       "dscp": {"46": "A"}, "default_class": "H",
       "limiters": [{"name": "web", "target": "app:web", "rate_kbit": 4000}]}


def test_qos_profile_rendered_with_each_gateways_uplink_rates(store):
    store.gateways.update("b1", uplinks=[{**wan(1)[0], "egress_kbit": 20000, "ingress_kbit": 50000}])
    token = store.tokens.create("t")

    async def scenario(client):
        api = Api(client, token)
        status, doc = await api("PUT", "/enterprises/acme/qos", QOS)
        assert status == 200 and doc["qos"]["default_class"] == "H"
        _, cfg = await api("GET", "/gateways/b1/config")
        assert cfg["qos"]["uplinks"] == [{"uplink": "wan0", "egress_kbit": 20000, "ingress_kbit": 50000}]
        assert cfg["qos"]["limiters"][0]["target"] == "192.0.2.50/32"  # the app, by its address
        assert "egress_kbit" not in cfg["uplinks"][0]  # the rates go into qos, not the uplink
        _, cfg = await api("GET", "/gateways/b2/config")
        assert cfg["qos"]["uplinks"] == [] and cfg["qos"]["limiters"]  # no rates: limiters only
        _, cfg = await api("GET", "/gateways/hub/config")
        assert cfg.get("qos") is None
        for body, field in (({**QOS, "uplinks": [{"uplink": "wan0", "egress_kbit": 1000}]}, "qos"),
                            ({**QOS, "classes": [{"name": "A", "guaranteed_pct": 0}]}, "classes[0].guaranteed_pct"),
                            ({**QOS, "limiters": [{"name": "x", "target": "app:ghost", "rate_kbit": 8}]}, "qos")):
            status, doc = await api("PUT", "/enterprises/acme/qos", body)
            assert status == 400 and error_of(doc)[1] == field, doc
        status, doc = await api("PATCH", "/gateways/b1", {"uplinks": [{**wan(1)[0], "egress_kbit": 0}]})
        assert status == 400 and error_of(doc)[1] == "uplinks[0].egress_kbit", doc
        assert (await api("DELETE", "/enterprises/acme/qos"))[0] == 204
        _, cfg = await api("GET", "/gateways/b1/config")
        assert cfg.get("qos") is None

    run(store, scenario)
