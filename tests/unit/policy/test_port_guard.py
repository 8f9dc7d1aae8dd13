"""LAN port security and the overlay frame guard (table bridge nsg_port): the config, the rendered nft
document, the parsed counters, and the apply/read pair against a fake nft and a fake sysfs."""

from __future__ import annotations

import copy
import json

import pytest

from nsg.model import ConfigError, parse_config
from nsg.model.config import PortSecurity
from nsg.policy import port_guard as pg
from nsg.policy import port_guard_apply as pga
from nsg.policy.apply import PolicyApplyError

BASE = {
    "schema_version": 1, "system_ip": "198.19.255.1",
    "uplinks": [{"name": "wan0", "interface": "wan0", "mode": "static", "address": "198.18.1.2/24",
                 "gateway": "198.18.1.1"}],
    "subnets": [{"name": "corp", "vni": 100, "cidr": "198.19.0.0/24", "gateway": "198.19.0.1",
                 "ports": ["lan1", "lan0"]},
                {"name": "guest", "vni": 200, "cidr": "198.19.1.0/24", "gateway": "198.19.1.1", "ports": ["lan2"],
                 "port_security": {"max_macs": 8, "learn_rate": 5, "learn_burst": 10}},
                {"name": "lab", "vni": 300, "cidr": "198.19.2.0/24", "gateway": "198.19.2.1", "ports": ["lan3"],
                 "port_security": None}],
}


def guard(doc: dict = BASE) -> pg.PortGuard:
    return pg.port_guard_for(parse_config(doc))


def commands(doc: str) -> list[dict]:
    return json.loads(doc)["nftables"]


def objects(doc: str, kind: str) -> dict[str, dict]:
    return {c["add"][kind]["name"]: c["add"][kind] for c in commands(doc) if kind in c.get("add", {})}


def rules(doc: str) -> dict[str, list[list[dict]]]:
    out: dict[str, list[list[dict]]] = {}
    for c in commands(doc):
        r = c.get("add", {}).get("rule")
        if r:
            out.setdefault(r["chain"], []).append(r["expr"])
    return out


# --- config ---------------------------------------------------------------------------------------


def test_port_security_is_on_by_default_and_null_turns_it_off():
    cfg = parse_config(BASE)
    assert cfg.subnets[0].port_security == PortSecurity(max_macs=256, learn_rate=20, learn_burst=40)
    assert cfg.subnets[1].port_security == PortSecurity(max_macs=8, learn_rate=5, learn_burst=10)
    assert cfg.subnets[2].port_security is None


def test_port_security_survives_a_dump_and_a_parse():
    from nsg.model.config import dump_config

    cfg = parse_config(BASE)
    assert parse_config(json.loads(dump_config(cfg))) == cfg


@pytest.mark.parametrize(("field", "value", "expect"), [
    ("max_macs", 0, "subnets[1].port_security.max_macs: Input should be greater than or equal to 1"),
    ("max_macs", 65536, "subnets[1].port_security.max_macs: Input should be less than or equal to 65535"),
    ("learn_rate", 0, "subnets[1].port_security.learn_rate: Input should be greater than or equal to 1"),
    ("learn_rate", 10001, "subnets[1].port_security.learn_rate: Input should be less than or equal to 10000"),
    ("learn_burst", 0, "subnets[1].port_security.learn_burst: Input should be greater than or equal to 1"),
    ("max_macs", "many", "subnets[1].port_security.max_macs: Input should be a valid integer"),
    ("sticky", True, "subnets[1].port_security.sticky: Extra inputs are not permitted"),
])
def test_bad_port_security_names_the_field(field, value, expect):
    doc = copy.deepcopy(BASE)
    doc["subnets"][1]["port_security"][field] = value
    with pytest.raises(ConfigError) as ei:
        parse_config(doc)
    assert expect in str(ei.value), str(ei.value)


# --- what the config asks for -------------------------------------------------------------------


def test_each_guarded_lan_port_gets_its_subnets_limits_and_every_subnet_an_overlay_guard():
    g = guard()
    assert [(p.name, p.bridge, p.max_macs, p.learn_rate, p.learn_burst) for p in g.ports] == [
        ("lan0", "br-100", 256, 20, 40), ("lan1", "br-100", 256, 20, 40), ("lan2", "br-200", 8, 5, 10)]
    assert [(o.name, o.bridge, o.gateway, o.gateway_mac, o.local_ports, o.closed) for o in g.overlays] == [
        ("vx-100", "br-100", "198.19.0.1", "02:4e:53:00:00:64", ("lan0", "lan1"), True),
        ("vx-200", "br-200", "198.19.1.1", "02:4e:53:00:00:c8", ("lan2",), True),
        ("vx-300", "br-300", "198.19.2.1", "02:4e:53:00:01:2c", (), False)]  # lab: no port security, gateway ARP kept
    assert g.bridges == ("br-100", "br-200", "br-300")
    assert {p.workload for p in g.ports} == {None}


WORKLOADS = (pg.WorkloadPort("a-0123456789ab", "br-100", "app web"),
             pg.WorkloadPort("v-0123456789ab", "br-200", "vm db"),
             pg.WorkloadPort("a-ba9876543210", "br-300", "app lab"),
             pg.WorkloadPort("lan0", "br-100", "app odd"),
             pg.WorkloadPort("a-0123456789ab", "br-100", "app web"),
             pg.WorkloadPort("lan2", "br-100", "app odd2"),  # a LAN port of another subnet
             pg.WorkloadPort("a-0123456789ab", "br-200", "app dup"))  # a name taken: the first one keeps it


def test_each_workload_port_is_guarded_with_a_small_set_of_its_own_and_its_subnets_rate():
    g = pg.port_guard_for(parse_config(BASE), WORKLOADS)
    assert [(p.name, p.bridge, p.max_macs, p.learn_rate, p.learn_burst, p.workload) for p in g.ports] == [
        ("a-0123456789ab", "br-100", pg.WORKLOAD_MAX_MACS, 20, 40, "app web"),  # once, though given thrice
        ("lan0", "br-100", 256, 20, 40, None),  # a LAN port's name stays the LAN port's (lan2's too)
        ("lan1", "br-100", 256, 20, 40, None), ("lan2", "br-200", 8, 5, 10, None),
        ("v-0123456789ab", "br-200", 4, 5, 10, "vm db")]  # min(4, the subnet's 8); lab's app: no port security
    assert [o.local_ports for o in g.overlays] == [("a-0123456789ab", "lan0", "lan1"), ("lan2", "v-0123456789ab"), ()]
    assert pg.WORKLOAD_MAX_MACS == 4
    doc = copy.deepcopy(BASE)
    doc["subnets"][1]["port_security"]["max_macs"] = 2
    assert pg.port_guard_for(parse_config(doc), WORKLOADS).ports[-1].max_macs == 2  # never more than the subnet's


def test_a_workload_port_is_dispatched_limited_and_its_macs_protected_from_the_overlay_like_a_lan_port():
    doc = pg.render(pg.port_guard_for(parse_config(BASE), WORKLOADS))
    veth = "a-0123456789ab"
    assert objects(doc, "set")[f"macs.{veth}"]["size"] == 4
    r = rules(doc)
    assert [veth, {"goto": {"target": f"port.{veth}"}}] in r["prerouting"][0][0]["vmap"]["data"]["set"]
    assert "a-ba9876543210" not in json.dumps(r)  # the lab subnet's app: no port security there
    assert [{"counter": f"{veth}.full"}, {"drop": None}] == r[f"port.{veth}"][-1]
    assert [{"match": {"op": "==", "left": {"payload": {"protocol": "ether", "field": "saddr"}},
                       "right": f"@macs.{veth}"}}, {"counter": "vx-100.spoof"}, {"drop": None}] in r["overlay.vx-100"]


def test_compose_names_every_app_and_vm_port_to_the_port_guard():
    from nsg.compose import compose

    doc = copy.deepcopy(BASE)
    kernel = {"url": "https://images.example/bzImage", "sha256": "0" * 64}
    doc["apps"] = [{"name": "web", "image": "nginx:1", "subnet": "corp", "address": "198.19.0.50"}]
    doc["vms"] = [{"name": "db", "subnet": "guest", "address": "198.19.1.70", "kernel": kernel}]
    s = compose(parse_config(doc))
    veth, tap = s.workloads.apps["web"].host_ifname, s.workloads.vms["db"].tap
    ports = {p.name: p for p in s.port_guard.ports}
    assert (ports[veth].bridge, ports[veth].max_macs, ports[veth].workload) == ("br-100", 4, "app web")
    assert (ports[tap].bridge, ports[tap].max_macs, ports[tap].workload) == ("br-200", 4, "vm db")
    assert veth in s.port_guard.overlays[0].local_ports and tap in s.port_guard.overlays[1].local_ports
    # the engine sets the port guard before it hands the supervisors the specs that make these ports
    from nsg.compose import DESIRED_ORDER
    assert DESIRED_ORDER.index("port_guard") < DESIRED_ORDER.index("workloads")


# --- the rendered document ----------------------------------------------------------------------


def test_the_table_is_replaced_whole_in_one_transaction():
    cmds = commands(pg.render(guard()))
    table = {"family": "bridge", "name": "nsg_port"}
    assert cmds[:3] == [{"add": {"table": table}}, {"delete": {"table": table}}, {"add": {"table": table}}]
    assert json.loads(pg.remove_document())["nftables"] == cmds[:2]


def test_rendering_is_deterministic_whatever_the_order_of_ports_and_subnets():
    doc = copy.deepcopy(BASE)
    doc["subnets"] = list(reversed(doc["subnets"]))
    doc["subnets"][-1]["ports"] = ["lan0", "lan1"]
    assert pg.render(guard(doc)) == pg.render(guard())


def test_both_base_chains_hook_ahead_of_filter_and_br_netfilter_and_accept_by_default():
    chains = objects(pg.render(guard()), "chain")
    for base in ("prerouting", "input"):
        assert chains[base] == {"family": "bridge", "table": "nsg_port", "name": base, "type": "filter",
                                "hook": base, "prio": -300, "policy": "accept"}
    assert pg.PRIORITY < -200 < 0  # nft bridge "filter" and br_netfilter's NF_BR_PRI_BRNF


def test_each_lan_port_has_a_bounded_ageing_set_of_source_macs():
    sets = objects(pg.render(guard()), "set")
    assert sets["macs.lan2"] == {"family": "bridge", "table": "nsg_port", "name": "macs.lan2", "type": "ether_addr",
                                 "flags": ["timeout"], "timeout": 300, "size": 8}
    assert sorted(sets) == ["macs.lan0", "macs.lan1", "macs.lan2"]  # lan3's subnet has no port security


def test_ports_are_dispatched_by_one_verdict_map_and_link_local_frames_too():
    r = rules(pg.render(guard()))
    vmap = r["prerouting"][0][0]["vmap"]
    assert vmap["key"] == {"meta": {"key": "iifname"}}
    # goto: a named port's chain ends its way through the base chain, never falls into the stray rules
    assert [(k, v["goto"]["target"]) for k, v in vmap["data"]["set"]] == [
        ("lan0", "port.lan0"), ("lan1", "port.lan1"), ("lan2", "port.lan2"),
        ("vx-100", "overlay.vx-100"), ("vx-200", "overlay.vx-200"), ("vx-300", "overlay.vx-300")]
    (link_local, same_vmap), *_ = r["input"]
    assert link_local["match"]["left"] == {"&": [{"payload": {"protocol": "ether", "field": "daddr"}},
                                                 "ff:ff:ff:ff:ff:f0"]}
    assert link_local["match"]["right"] == "01:80:c2:00:00:00"
    assert same_vmap == {"vmap": vmap}


def test_any_other_port_of_a_guarded_subnets_bridge_is_a_stray_dropped_after_the_named_ones():
    r = rules(pg.render(guard()))
    in_bridge = {"meta": {"key": "ibrname"}}
    assert r["prerouting"][1:] == [
        [{"match": {"op": "==", "left": in_bridge, "right": br}}, {"counter": f"{br}.stray"}, {"drop": None}]
        for br in ("br-100", "br-200")]  # br-300: port security off, its bridge stays open
    link_local = r["input"][0][0]
    assert r["input"][1:] == [[link_local, *rule] for rule in r["prerouting"][1:]]


def test_without_bridge_meta_in_the_kernel_ports_are_guarded_by_name_alone():
    doc = pg.render(guard(), by_bridge=False)
    r = rules(doc)
    assert len(r["prerouting"]) == len(r["input"]) == 1  # the vmap only
    assert "ibrname" not in doc and not [c for c in objects(doc, "counter") if c.endswith(".stray")]
    assert r["port.lan0"] == rules(pg.render(guard()))["port.lan0"]


def test_the_probe_is_one_ibrname_match_in_a_table_of_its_own():
    cmds = commands(pg.probe_document())
    assert {c["add"][k]["name"] for c in cmds for k in ("table", "chain") if k in c["add"]} == {
        "nsg_port_probe", "probe"}
    assert cmds[-1]["add"]["rule"]["expr"] == [{"match": {"op": "==", "left": {"meta": {"key": "ibrname"}},
                                                          "right": "br-0"}}]


def test_a_lan_port_passes_known_macs_then_learns_under_the_rate_while_there_is_room():
    known, rate, learn, full = rules(pg.render(guard()))["port.lan2"]
    saddr = {"payload": {"protocol": "ether", "field": "saddr"}}
    assert known == [{"match": {"op": "==", "left": saddr, "right": "@macs.lan2"}},
                     {"set": {"op": "update", "elem": saddr, "set": "@macs.lan2"}}, {"accept": None}]
    assert rate == [{"limit": {"rate": 5, "per": "second", "burst": 10, "inv": True}}, {"counter": "lan2.rate"},
                    {"drop": None}]
    assert learn == [{"set": {"op": "add", "elem": saddr, "set": "@macs.lan2"}}, {"accept": None}]
    assert full == [{"counter": "lan2.full"}, {"drop": None}]


def test_the_overlay_drops_gateway_arp_and_frames_from_local_hosts_macs():
    gw_arp_reply, gw_arp_other, spoof0, spoof1 = rules(pg.render(guard()))["overlay.vx-100"]
    sender_ip = {"match": {"op": "==", "left": {"payload": {"protocol": "arp", "field": "saddr ip"}},
                           "right": "198.19.0.1"}}
    assert gw_arp_reply == [sender_ip, {"match": {"op": "==", "left": {"payload": {"protocol": "arp",
                                                                                   "field": "operation"}},
                                                  "right": "reply"}},
                            {"counter": "vx-100.gateway_arp"}, {"drop": None}]
    # a remote anycast gateway's own ARP (nsg without EVPN resolving a host here) carries the same MAC
    assert gw_arp_other == [sender_ip, {"match": {"op": "!=", "left": {"payload": {"protocol": "arp",
                                                                                   "field": "saddr ether"}},
                                                  "right": "02:4e:53:00:00:64"}},
                            {"counter": "vx-100.gateway_arp"}, {"drop": None}]
    for rule, port in ((spoof0, "lan0"), (spoof1, "lan1")):
        assert rule == [{"match": {"op": "==", "left": {"payload": {"protocol": "ether", "field": "saddr"}},
                                   "right": f"@macs.{port}"}}, {"counter": "vx-100.spoof"}, {"drop": None}]
    assert len(rules(pg.render(guard()))["overlay.vx-300"]) == 2  # no guarded ports: gateway ARP only


def test_every_port_and_reason_has_a_named_counter_starting_at_zero():
    counters = objects(pg.render(guard()), "counter")
    assert sorted(counters) == ["br-100.stray", "br-200.stray",
                                "lan0.full", "lan0.rate", "lan1.full", "lan1.rate", "lan2.full", "lan2.rate",
                                "vx-100.gateway_arp", "vx-100.spoof", "vx-200.gateway_arp", "vx-200.spoof",
                                "vx-300.gateway_arp", "vx-300.spoof"]
    assert {(c["packets"], c["bytes"]) for c in counters.values()} == {(0, 0)}


def test_a_reapply_carries_learned_macs_up_to_the_new_limit_and_the_counts():
    macs = tuple(f"02:00:00:00:00:{i:02x}" for i in range(12))  # most recent first
    carry = pg.Carry(macs={"lan2": macs, "lan0": macs[:2], "gone0": macs},
                     counters={"lan2.rate": (7, 700), "vx-100.spoof": (3, 180), "gone0.full": (1, 1)})
    doc = pg.render(guard(), carry)
    sets, counters = objects(doc, "set"), objects(doc, "counter")
    assert sets["macs.lan2"]["elem"] == list(macs[:8])  # max_macs 8: the eight most recently seen
    assert sets["macs.lan0"]["elem"] == list(macs[:2])
    assert "elem" not in sets["macs.lan1"]
    assert (counters["lan2.rate"]["packets"], counters["lan2.rate"]["bytes"]) == (7, 700)
    assert (counters["vx-100.spoof"]["packets"], counters["vx-100.spoof"]["bytes"]) == (3, 180)
    assert "gone0.full" not in counters and "macs.gone0" not in sets


# --- reading the table back ---------------------------------------------------------------------

# `nft -j list table bridge nsg_port` from nft 1.0.6 on Linux 6.18 (tests/netns/test_port_guard.py's
# site, max_macs 4, learn_rate 2, learn_burst 2, after ten frames from new MACs on lan0); chains and
# rules left out, one more set element and a foreign table's counter added.
LISTING = {"nftables": [
    {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
    {"table": {"family": "bridge", "name": "nsg_port", "handle": 1}},
    {"counter": {"family": "bridge", "name": "lan0.full", "table": "nsg_port", "handle": 2, "packets": 0,
                 "bytes": 0}},
    {"counter": {"family": "bridge", "name": "lan0.rate", "table": "nsg_port", "handle": 3, "packets": 8,
                 "bytes": 368}},
    {"counter": {"family": "bridge", "name": "lan1.full", "table": "nsg_port", "handle": 5, "packets": 0,
                 "bytes": 0}},
    {"counter": {"family": "bridge", "name": "lan1.rate", "table": "nsg_port", "handle": 6, "packets": 0,
                 "bytes": 0}},
    {"counter": {"family": "bridge", "name": "vx-100.gateway_arp", "table": "nsg_port", "handle": 7,
                 "packets": 2, "bytes": 120}},
    {"counter": {"family": "bridge", "name": "vx-100.spoof", "table": "nsg_port", "handle": 8, "packets": 0,
                 "bytes": 0}},
    {"counter": {"family": "bridge", "name": "br-100.stray", "table": "nsg_port", "handle": 9, "packets": 5,
                 "bytes": 300}},
    {"counter": {"family": "inet", "name": "lan0.full", "table": "someone_else", "handle": 1, "packets": 99,
                 "bytes": 99}},
    {"set": {"family": "bridge", "name": "macs.lan0", "table": "nsg_port", "type": "ether_addr", "handle": 1,
             "size": 4, "flags": ["timeout"], "timeout": 300,
             "elem": [{"elem": {"val": "4a:15:a7:02:7a:c9", "expires": 299}},
                      {"elem": {"val": "02:00:00:00:00:01", "expires": 12}},
                      {"elem": {"val": "5a:3a:02:cf:df:cd", "expires": 299}}]}},
    {"set": {"family": "bridge", "name": "macs.lan1", "table": "nsg_port", "type": "ether_addr", "handle": 4,
             "size": 4, "flags": ["timeout"], "timeout": 300}},
    {"chain": {"family": "bridge", "table": "nsg_port", "name": "prerouting", "handle": 1, "type": "filter",
               "hook": "prerouting", "prio": -300, "policy": "accept"}},
]}


def test_the_listing_gives_macs_and_drops_per_port_and_reason():
    r = pg.parse(json.dumps(LISTING))
    assert sorted(r.ports) == ["br-100", "lan0", "lan1", "vx-100"]
    lan0 = r.ports["lan0"]
    assert lan0.kind == "lan" and lan0.max_macs == 4 and lan0.learned == 3
    assert lan0.macs == ("4a:15:a7:02:7a:c9", "5a:3a:02:cf:df:cd", "02:00:00:00:00:01")  # most recent first
    assert r.drops("lan0", pg.RATE) == 8 and r.drops("lan0", pg.FULL) == 0
    assert r.drops("vx-100", pg.GATEWAY_ARP) == 2 and r.drops("vx-100", pg.SPOOF) == 0
    assert r.drops("lan9", pg.RATE) == 0
    assert r.ports["vx-100"].kind == "overlay" and r.ports["vx-100"].macs == ()
    assert r.as_dict()["lan0"] == {"kind": "lan", "macs": 3, "max_macs": 4, "dropped": {
        "full": {"packets": 0, "bytes": 0}, "rate": {"packets": 8, "bytes": 368}}}
    assert r.as_dict()["vx-100"] == {"kind": "overlay", "dropped": {
        "gateway_arp": {"packets": 2, "bytes": 120}, "spoof": {"packets": 0, "bytes": 0}}}
    assert r.drops("br-100", pg.STRAY) == 5  # frames from ports of br-100 the table does not name
    assert r.as_dict()["br-100"] == {"kind": "bridge", "dropped": {"stray": {"packets": 5, "bytes": 300}}}


def test_what_is_read_back_is_what_a_reapply_carries():
    carry = pg.parse(LISTING).carry()
    assert carry.macs == {"lan0": ("4a:15:a7:02:7a:c9", "5a:3a:02:cf:df:cd", "02:00:00:00:00:01"), "lan1": ()}
    assert carry.counters["lan0.rate"] == (8, 368) and carry.counters["vx-100.gateway_arp"] == (2, 120)
    assert carry.counters["br-100.stray"] == (5, 300)


def test_a_rendered_table_read_back_has_every_port_at_zero():
    """What render writes, as nft lists it (objects without their rules), parses to every port and reason."""
    listing = {"nftables": [{k: {**v, "packets": 0, "bytes": 0} if k == "counter" else v
                             for k, v in c["add"].items()} for c in commands(pg.render(guard()))[2:]
                            if "set" in c["add"] or "counter" in c["add"]]}
    r = pg.parse(listing)
    assert sorted(r.ports) == ["br-100", "br-200", "lan0", "lan1", "lan2", "vx-100", "vx-200", "vx-300"]
    assert r.ports["lan2"].max_macs == 8 and r.ports["lan2"].learned == 0
    assert r.ports["br-100"].kind == "bridge" and list(r.ports["br-100"].drops) == ["stray"]
    assert all(d.packets == 0 for p in r.ports.values() for d in p.drops.values())


@pytest.mark.parametrize(("listing", "expect"), [
    ("not json", "not JSON"),
    ({"rules": []}, "no 'nftables' list"),
    ({"nftables": [{"counter": {"table": "nsg_port", "name": "lan0.rate", "packets": -1}}]}, "not a count"),
    ({"nftables": [{"counter": {"table": "nsg_port", "name": "lan0.rate", "packets": True}}]}, "not a count"),
    ({"nftables": [{"set": {"table": "nsg_port", "name": "macs.lan0", "size": 4, "elem": [7]}}]}, "not a MAC"),
])
def test_a_listing_that_is_not_what_we_wrote_is_a_local_fault(listing, expect):
    with pytest.raises(pg.PortGuardReadError, match=expect):
        pg.parse(listing if isinstance(listing, str) else json.dumps(listing))


# --- apply and read, against a fake nft and a fake sysfs ----------------------------------------


class FakeNft:
    """Holds one listing per table; records every document applied."""

    def __init__(self) -> None:
        self.listing: dict | None = None
        self.applied: list[str] = []
        self.refuse: str | None = None
        self.bridge_meta = True  # the kernel has nft_meta_bridge
        self.probes = 0

    def __call__(self, doc: str | None, *args: str) -> str:
        if args == ("-c",):  # a dry run: only the probe uses one
            assert doc == pg.probe_document()
            self.probes += 1
            if not self.bridge_meta:
                raise PolicyApplyError("nft refused the ruleset: Could not process rule: Operation not supported")
            return ""
        if doc is not None:
            if self.refuse:
                raise PolicyApplyError(f"nft refused the ruleset: {self.refuse}")
            self.applied.append(doc)
            cmds = commands(doc)
            self.listing = None if cmds[-1].get("delete") else LISTING
            return ""
        if args[:2] == ("list", "tables"):
            tables = [{"table": {"family": "bridge", "name": "nsg_port"}}] if self.listing else []
            return json.dumps({"nftables": tables})
        assert args == ("list", "table", "bridge", "nsg_port")
        return json.dumps(self.listing)


@pytest.fixture
def nft(monkeypatch):
    fake = FakeNft()
    monkeypatch.setattr(pga, "nft_text", fake)
    return fake


@pytest.fixture
def sysfs(tmp_path):
    for br in ("br-100", "br-200"):  # br-300 is not made yet
        (tmp_path / br / "bridge").mkdir(parents=True)
        (tmp_path / br / "bridge" / "no_linklocal_learn").write_text("0\n")
    return tmp_path


def test_linklocal_learning_is_turned_off_on_the_bridges_there(sysfs):
    assert pga.linklocal_learning_off(("br-100", "br-200", "br-300"), sysfs) == ("br-300",)
    assert (sysfs / "br-100" / "bridge" / "no_linklocal_learn").read_text() == "1"


def test_the_first_apply_renders_fresh_and_a_repeat_changes_nothing(nft, sysfs):
    guarded = pga.NftPortGuard(sysfs)
    assert guarded.status() is None
    assert guarded.set(guard()) is True
    assert nft.applied == [pg.render(guard())]
    assert guarded.set(guard()) is False and len(nft.applied) == 1
    assert guarded.bridges_missing == ("br-300",)
    assert (sysfs / "br-200" / "bridge" / "no_linklocal_learn").read_text() == "1"
    st = guarded.status()
    assert (st["applied"], st["noop"], st["bridges_missing"]) == (1, 1, ["br-300"])
    assert st["bridges_closed"] == ["br-100", "br-200"] and nft.probes == 1
    assert st["ports"]["lan0"]["dropped"]["rate"]["packets"] == 8


def test_a_kernel_without_bridge_meta_gets_the_table_without_stray_rules(nft, sysfs):
    nft.bridge_meta = False
    guarded = pga.NftPortGuard(sysfs)
    assert guarded.set(guard()) is True
    assert nft.applied == [pg.render(guard(), by_bridge=False)] and nft.probes == 1
    assert guarded.status()["bridges_closed"] == []


def test_a_changed_guard_is_applied_with_what_the_old_table_held(nft, sysfs):
    guarded = pga.NftPortGuard(sysfs)
    guarded.set(guard())
    doc = copy.deepcopy(BASE)
    doc["subnets"][0]["port_security"] = {"max_macs": 2}
    assert guarded.set(guard(doc)) is True
    assert nft.applied[-1] == pg.render(guard(doc), pg.parse(LISTING).carry())
    assert objects(nft.applied[-1], "set")["macs.lan0"]["elem"] == ["4a:15:a7:02:7a:c9", "5a:3a:02:cf:df:cd"]


def test_verify_puts_back_a_table_that_went_missing(nft, sysfs):
    guarded = pga.NftPortGuard(sysfs)
    guarded.set(guard())
    nft.listing = None  # someone ran `nft flush ruleset`
    assert guarded.set(guard()) is False  # unverified passes trust what they applied
    assert guarded.set(guard(), verify=True) is True
    assert nft.applied[-1] == pg.render(guard())  # nothing to carry


def test_a_refused_apply_is_counted_and_says_which_part(nft, sysfs):
    guarded = pga.NftPortGuard(sysfs)
    nft.refuse = "Error: Could not process rule: No such file or directory"
    with pytest.raises(PolicyApplyError, match=r"^port guard: nft refused the ruleset"):
        guarded.set(guard())
    assert (guarded.state.errors, guarded.want) == (1, None)
    assert "No such file" in guarded.state.last_error
    nft.refuse = None
    assert guarded.set(guard()) is True and guarded.state.last_error is None


def test_remove_takes_the_table_away_once(nft, sysfs):
    guarded = pga.NftPortGuard(sysfs)
    guarded.set(guard())
    assert guarded.remove() is True and nft.applied[-1] == pg.remove_document()
    assert guarded.remove() is False
