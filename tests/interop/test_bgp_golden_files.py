"""The BGP golden file (tests/golden/bgp/frr_gobgp.json, made by capture_bgp_golden.py) is sane.

No root. Checks: well-formed JSON; every message is one whole BGP message (16 x 0xff marker, a length
that matches the hex, a known type); the byte-level fields tshark decoded agree with the bytes (type,
length; the EVPN NLRI MACs/IPs and the next hop appear in the hex); and the messages the lead's codec
tests rely on are present: OPEN from both sides, KEEPALIVE, UPDATEs with EVPN type-2 MAC-only and
MAC+IP, type-3 with a PMSI tunnel (ingress replication), and a withdrawal.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "bgp" / "frr_gobgp.json"
TYPES = {1: "OPEN", 2: "UPDATE", 3: "NOTIFICATION", 4: "KEEPALIVE", 5: "ROUTE-REFRESH"}


@pytest.fixture(scope="module")
def doc() -> dict:
    return json.loads(GOLDEN.read_text())


@pytest.fixture(scope="module")
def messages(doc) -> list[dict]:
    return doc["messages"]


def routes(messages: list[dict], *, withdrawn: bool = False) -> list[tuple[dict, dict]]:
    return [(m, r) for m in messages if m["type"] == 2 for r in m["expect"]["routes"] if r["withdrawn"] == withdrawn]


def test_every_message_has_a_valid_header(messages):
    assert messages
    for m in messages:
        raw = bytes.fromhex(m["hex"])
        assert len(raw) >= 19, m["index"]
        assert raw[:16] == b"\xff" * 16, m["index"]
        assert int.from_bytes(raw[16:18], "big") == len(raw) == m["length"], m["index"]
        assert 19 <= len(raw) <= 4096
        assert raw[18] == m["type"] and TYPES[raw[18]] == m["type_name"], m["index"]
        assert m["sender"] in ("frr", "gobgp")
        # tshark's independent reading of the same message
        assert int(m["tshark"]["bgp.type"]) == raw[18]
        assert int(m["tshark"]["bgp.length"]) == len(raw)
        assert m["description"]


def test_fixed_size_messages(messages):
    for m in messages:
        if m["type"] == 4:
            assert m["length"] == 19
        if m["type"] == 3:
            assert m["length"] >= 21


def test_open_from_both_sides(doc, messages):
    opens = {m["sender"]: m for m in messages if m["type"] == 1}
    assert set(opens) == {"frr", "gobgp"}
    for sender, m in opens.items():
        e = m["expect"]
        raw = bytes.fromhex(m["hex"])
        assert raw[19] == e["version"] == 4
        assert int.from_bytes(raw[20:22], "big") == e["my_as"] == doc["asn"]
        assert int.from_bytes(raw[22:24], "big") == e["hold_time"]
        assert str(ipaddress.ip_address(raw[24:28])) == e["bgp_id"] == doc[sender]
        assert [25, 70] in e["mp_afi_safi"]  # l2vpn evpn
        assert 65 in e["capabilities"]  # 4-octet AS


def test_keepalives_both_ways(messages):
    assert {m["sender"] for m in messages if m["type"] == 4} == {"frr", "gobgp"}


def test_type2_mac_only_and_mac_ip(doc, messages):
    adv = [(m, r) for m, r in routes(messages) if r["route_type"] == 2]
    mac_only = [(m, r) for m, r in adv if r["ip_len"] == 0]
    mac_ip = [(m, r) for m, r in adv if r["ip_len"] == 32]
    assert mac_only and mac_ip
    # both kinds from both implementations
    assert {m["sender"] for m, _ in mac_only} == {"frr", "gobgp"}
    assert {m["sender"] for m, _ in mac_ip} == {"frr", "gobgp"}
    go = doc["gobgp_routes"]
    assert any(r["mac"] == go["mac_ip"][0] and r["ip"] == go["mac_ip"][1] and r["rd"] == go["rd"] for _, r in mac_ip)
    assert any(r["mac"] == go["mac_only"] and r["ip"] is None for _, r in mac_only)
    for m, r in adv:
        raw = bytes.fromhex(m["hex"])
        assert bytes.fromhex(r["mac"].replace(":", "")) in raw
        assert r["nlri_length"] == (33 if r["ip_len"] == 0 else 37)
        assert r["label1_mpls"] == doc["vni"] >> 4  # VNI in the whole 24-bit label field (RFC 8365)
        assert (doc["vni"]).to_bytes(3, "big") in raw
        if r["ip"]:
            assert ipaddress.ip_address(r["ip"]).packed in raw
        e = m["expect"]
        assert f"{doc['asn']}:{doc['vni']}" in e["route_targets"]
        assert e["encapsulation"] == 8  # VXLAN
        assert e["next_hop"] == doc[m["sender"]]
        assert ipaddress.ip_address(e["next_hop"]).packed in raw


def test_type3_with_pmsi_from_both(doc, messages):
    imet = [(m, r) for m, r in routes(messages) if r["route_type"] == 3]
    assert {m["sender"] for m, _ in imet} == {"frr", "gobgp"}
    for m, r in imet:
        e = m["expect"]
        assert r["ip"] == doc[m["sender"]] and r["ip_len"] == 32 and r["etag"] == 0
        assert e["pmsi"]["tunnel_type"] == 6  # ingress replication
        assert e["pmsi"]["vni"] == doc["vni"]
        assert e["pmsi"]["tunnel_id"] == doc[m["sender"]]
        assert 22 in e["attribute_types"]
        assert f"{doc['asn']}:{doc['vni']}" in e["route_targets"]


def test_withdrawal(doc, messages):
    gone = routes(messages, withdrawn=True)
    assert gone
    m, r = gone[0]
    assert m["sender"] == "gobgp" and r["route_type"] == 2
    assert (r["mac"], r["ip"]) == tuple(doc["gobgp_routes"]["mac_ip"])
    assert 15 in m["expect"]["attribute_types"] and 14 not in m["expect"]["attribute_types"]


def test_readme_names_versions(doc):
    text = (GOLDEN.parent / "README.md").read_text()
    assert "bgpd version" in text and "gobgpd version" in text
    assert doc["versions"]["bgpd"].startswith("bgpd version")
