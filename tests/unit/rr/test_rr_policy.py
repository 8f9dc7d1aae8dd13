"""The reflector's view (controller/rr_policy.py): the JSON format, refusals that name the field, the
view derived from rendered gateway configs, and the file source noticing changes."""

from __future__ import annotations

import json
import os
from ipaddress import IPv4Address, IPv4Network

import pytest

from bgp.evpn_nlri import RouteDistinguisher
from controller.enterprise import AppDef, Enterprise, GatewayDef, SubnetDef, UplinkDef
from controller.mesh import render
from controller.rr_policy import ViewError, ViewFile, dump_view, parse_view, view_from_configs

DOC = {"asn": 65000,
       "subnets": {"100": {"cidr": "198.19.0.0/24", "gateway": "198.19.0.1"}},
       "clients": {"198.19.255.1": {"name": "b1", "vnis": [100], "rds": ["198.19.255.1:100"],
                                    "prefixes": ["203.0.113.0/24"], "hosts": ["198.19.0.5"]},
                   "198.19.255.2": {"vnis": [100], "max_routes": 50}}}


def test_the_documented_format_parses():
    view = parse_view(json.dumps(DOC), "owners.json")
    b1 = view.clients[IPv4Address("198.19.255.1")]
    assert b1.system_ip == IPv4Address("198.19.255.1") and b1.bgp_id == "198.19.255.1"
    assert b1.prefixes == (IPv4Network("203.0.113.0/24"),) and b1.vnis == {100}
    assert b1.owns_rd(RouteDistinguisher.ipv4("198.19.255.1", 100))
    assert not b1.owns_rd(RouteDistinguisher.ipv4("198.19.255.1", 101))
    b2 = view.clients[IPv4Address("198.19.255.2")]
    assert b2.max_routes == 50 and b2.rds is None  # any type-1 RD of its system IP
    assert b2.owns_rd(RouteDistinguisher.ipv4("198.19.255.2", 7))
    assert not b2.owns_rd(RouteDistinguisher.ipv4("198.19.255.1", 7)) and not b2.owns_rd(
        RouteDistinguisher.as2(65000, 7))
    assert parse_view(dump_view(view), "again") == view


def _bad(change) -> str:
    doc = json.loads(json.dumps(DOC))
    change(doc)
    with pytest.raises(ViewError) as exc:
        parse_view(json.dumps(doc), "owners.json")
    return str(exc.value)


@pytest.mark.parametrize(("change", "words"), [
    (lambda d: d["clients"]["198.19.255.1"].update(system_ip="198.19.255.9"), "not its key"),
    (lambda d: d["clients"]["198.19.255.1"].update(vnis=[1 << 24]), "VNI"),
    (lambda d: d["clients"]["198.19.255.1"].update(vnis=[100, 300]), "VNI 300 is not in subnets"),
    (lambda d: d["clients"]["198.19.255.1"].update(rds=["b1:x"]), "route distinguisher"),
    (lambda d: d["clients"]["198.19.255.2"].update(hosts=["198.19.0.5"]), "198.19.0.5 is also 198.19.255.1's"),
    (lambda d: d["clients"]["198.19.255.2"].update(router_id="198.19.255.1"), "router_id"),
    (lambda d: d["clients"].update({"not-an-ip": {}}), "clients.not-an-ip"),
    (lambda d: d["clients"]["198.19.255.1"].update(colour="red"), "colour"),
    (lambda d: d.pop("asn"), "asn"),
])
def test_a_bad_view_is_refused_naming_the_field(change, words):
    msg = _bad(change)
    assert msg.startswith("owners.json: ") and words in msg, msg


def test_view_from_rendered_configs():
    ent = Enterprise(
        name="acme", subnets=(SubnetDef(name="corp", vni=100, cidr="198.19.0.0/24", gateway="198.19.0.1"),),
        gateways=(
            GatewayDef(name="b1", system_ip="198.19.255.1", ports={"corp": ("lan0",)}, apps=(
                AppDef(name="web", subnet="corp", address="198.19.0.5", image="nginx"),),
                uplinks=(UplinkDef(name="wan0", interface="wan0", mode="static", address="198.18.1.2/24",
                                   gateway="198.18.1.1"),)),
            GatewayDef(name="b2", system_ip="198.19.255.2",
                       uplinks=(UplinkDef(name="wan0", interface="wan0", mode="static", address="198.18.2.2/24",
                                          gateway="198.18.2.1"),)),
            GatewayDef(name="hub", system_ip="198.19.255.254", role="hub",
                       uplinks=(UplinkDef(name="wan0", interface="eth0", mode="static", address="198.18.0.2/24",
                                          gateway="198.18.0.1"),))))
    view = view_from_configs(render(ent))
    assert view.asn == 65000 and set(view.clients) == {IPv4Address("198.19.255.1"), IPv4Address("198.19.255.2")}
    b1 = view.clients[IPv4Address("198.19.255.1")]
    assert (b1.name, b1.vnis, b1.rds, b1.hosts) == ("b1", {100}, {"198.19.255.1:100"}, {IPv4Address("198.19.0.5")})
    assert view.subnets[100].cidr == IPv4Network("198.19.0.0/24")
    with pytest.raises(ViewError, match="several EVPN ASNs"):
        view_from_configs(render(ent), asn=65001)


def test_view_file_is_read_again_only_when_it_changed(tmp_path):
    path = tmp_path / "owners.json"
    path.write_text(json.dumps(DOC))
    src = ViewFile(path)
    assert src.changed()
    assert len(src.load().clients) == 2 and not src.changed()
    doc = json.loads(json.dumps(DOC))
    del doc["clients"]["198.19.255.2"]
    path.write_text(json.dumps(doc))
    os.utime(path, ns=(1, 1))  # a change within the same mtime tick still shows (size, inode too)
    assert src.changed() and len(src.load().clients) == 1
    path.write_text("{")
    with pytest.raises(ViewError, match=str(path)):
        src.load()
    path.unlink()
    with pytest.raises(ViewError, match="No such file"):
        src.load()
