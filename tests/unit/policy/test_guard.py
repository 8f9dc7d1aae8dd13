"""The input guard's ruleset, read back as nft JSON: what each kind of config lets in (table tests)."""

from __future__ import annotations

import json

import pytest

from nsg.model import parse_config
from nsg.policy.guard import COUNTERS, guard_for, render

BASE = {
    "schema_version": 1, "system_ip": "198.19.255.1",
    "uplinks": [{"name": "wan0", "interface": "wan0", "mode": "static", "address": "198.18.1.2/24",
                 "gateway": "198.18.1.1"},
                {"name": "lte", "interface": "wwan0", "mode": "dhcp"}],
    "peers": [{"name": "b2", "system_ip": "198.19.255.2", "endpoint": "198.18.2.2", "serial": "LAB-B2"},
              {"name": "hub", "system_ip": "198.19.255.254", "endpoint": "198.18.0.2", "serial": "LAB-HUB"}],
}
ESP = {"transport": "esp", "ipsec": {"auth": "ldevid"}}


def rules(doc: dict) -> dict[str, list[list[dict]]]:
    out: dict[str, list[list[dict]]] = {}
    for cmd in json.loads(render(guard_for(parse_config(doc))))["nftables"]:
        r = cmd.get("add", {}).get("rule")
        if r:
            out.setdefault(r["chain"], []).append(r["expr"])
    return out


def matches(expr: list[dict]) -> dict[str, object]:
    """{left key: right} of a rule's matches, e.g. {"udp.dport": 4789, "meta.iifname": "nsg-esp"}."""
    found = {}
    for e in expr:
        if "match" in e:
            left = e["match"]["left"]
            key = (f"{left['payload']['protocol']}.{left['payload']['field']}" if "payload" in left else
                   f"meta.{left['meta']['key']}" if "meta" in left else f"ct.{left['ct']['key']}")
            right = e["match"]["right"]
            found[key] = sorted(right["set"]) if isinstance(right, dict) and "set" in right else right
    return found


def verdict(expr: list[dict]) -> str:
    last = expr[-1]
    return "jump " + last["jump"]["target"] if "jump" in last else next(iter(last))


def test_vxlan_and_bgp_always_go_through_the_overlay_chain():
    r = rules({**BASE, **ESP})
    heads = [(matches(x), verdict(x)) for x in r["input"]]
    assert heads == [({"udp.dport": 4789}, "jump overlay"), ({"tcp.dport": 179}, "jump overlay"),
                     ({"meta.iifname": ["wan0", "wwan0"]}, "jump uplink")]


@pytest.mark.parametrize(("extra", "accepted"), [
    # esp: decrypted only (the userspace engine's TUN, or an XFRM secpath), from peers' system IPs
    (ESP, [{"ip.saddr": ["198.19.255.2", "198.19.255.254"], "meta.iifname": "nsg-esp"},
           {"ip.saddr": ["198.19.255.2", "198.19.255.254"], "meta.ipsec": True}]),
    # plain (lab): from peers' system IPs on any interface -- unauthenticated, and status says so
    ({}, [{"ip.saddr": ["198.19.255.2", "198.19.255.254"]}]),
])
def test_overlay_accepts_only_peers(extra, accepted):
    r = rules({**BASE, **extra})["overlay"]
    assert [matches(x) for x in r if verdict(x) == "accept"] == accepted
    assert verdict(r[-1]) == "drop" and {"counter": None} in r[-1]


def test_evpn_neighbours_count_as_overlay_sources():
    doc = {**BASE, **ESP, "evpn": {"asn": 65000, "peers": [{"address": "198.19.255.200", "asn": 65000}]}}
    acc = [matches(x) for x in rules(doc)["overlay"] if verdict(x) == "accept"]
    assert "198.19.255.200" in acc[0]["ip.saddr"]


def test_uplinks_let_in_dhcp_ike_natt_return_traffic_and_named_services_only():
    doc = {**BASE, **ESP, "uplink_services": [{"protocol": "tcp", "port": 8444}]}
    r = rules(doc)["uplink"]
    assert [(matches(x), verdict(x)) for x in r[:-1]] == [
        ({"ct.state": ["established", "related"]}, "accept"),
        ({"udp.sport": 67, "udp.dport": 68}, "accept"),
        ({"udp.dport": [500, 4500]}, "accept"),
        # what kernel ESP decrypted arrives on the uplink itself: a peer may start traffic through it
        ({"ip.saddr": ["198.19.255.2", "198.19.255.254"], "meta.ipsec": True}, "accept"),
        ({"tcp.dport": 8444}, "accept"),
    ]
    assert verdict(r[-1]) == "drop" and matches(r[-1]) == {}
    # without ESP (the plain lab transport) nothing comes decrypted: no such rule
    plain = rules({**BASE, "uplink_services": [{"protocol": "tcp", "port": 8444}]})["uplink"]
    assert not any("meta.ipsec" in matches(x) for x in plain)


def test_every_drop_is_counted_under_a_name():
    doc = json.loads(render(guard_for(parse_config({**BASE, **ESP}))))
    comments = [c["add"]["rule"]["comment"] for c in doc["nftables"] if "comment" in c.get("add", {}).get("rule", {})]
    assert tuple(comments) == COUNTERS


def test_a_peer_set_of_one_is_a_plain_match():
    doc = {**BASE, **ESP, "peers": BASE["peers"][:1]}
    acc = [matches(x) for x in rules(doc)["overlay"] if verdict(x) == "accept"]
    assert acc[0]["ip.saddr"] == "198.19.255.2"


def test_no_peers_means_no_overlay_at_all():
    doc = {**BASE, **ESP, "peers": []}
    r = rules(doc)["overlay"]
    assert len(r) == 1 and verdict(r[0]) == "drop"


def test_bad_service_port_is_refused_naming_the_field():
    from nsg.model import ConfigError

    with pytest.raises(ConfigError) as exc:
        parse_config({**BASE, "uplink_services": [{"protocol": "tcp", "port": 70000}]})
    assert "uplink_services" in str(exc.value)
