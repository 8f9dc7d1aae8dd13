"""EVPN type-5 (IP prefix, RFC 9136) between the gateway and GoBGP: a prefix injected with the gobgp
CLI, with a gateway IP on our subnet as its overlay index, becomes a kernel route via that IP on the
subnet's bridge, and goes again when withdrawn; a prefix in the gateway's config shows as a type-5
route in `gobgp global rib -a evpn` with our system IP as next hop and its gateway IP."""

from __future__ import annotations

import json

from tests.conftest import sh
from tests.interop import gobgp as gobgp_mod
from tests.interop.frr import bgp_pair
from tests.interop.gobgp import GoBgp, GoNeighbor
from tests.netns.daemon_util import NsgProcess
from tests.peers import require_peer, require_root

pytestmark = [
    require_root("network namespaces"),
    require_peer(gobgp_mod.missing()),
]

ASN, VNI, SYSIP = 65000, 100, "198.19.255.1"
VTEP_B = "198.18.70.77"


def kernel_routes(ns: str) -> set[tuple[str, str, str]]:
    out = json.loads(sh("ip", "-n", ns, "-j", "route", "show", "proto", "250") or "[]")
    return {(r["dst"], r.get("gateway", ""), r.get("dev", "")) for r in out}


def test_type5_prefixes_with_gobgp(tmp_path):
    with bgp_pair() as net:
        go_ns, gw_ns = net.ns
        sh("ip", "-n", gw_ns, "addr", "flush", "dev", net.ifname[1])
        cfg = {"schema_version": 1, "system_ip": SYSIP,
               "uplinks": [{"name": "wan0", "interface": net.ifname[1], "mode": "static",
                            "address": f"{net.addr[1]}/24", "gateway": net.addr[0]}],
               "subnets": [{"name": "corp", "vni": VNI, "cidr": "198.19.0.0/24", "gateway": "198.19.0.1"}],
               "evpn": {"asn": ASN, "peers": [{"address": net.addr[0], "asn": ASN}],
                        "prefixes": [{"prefix": "192.0.2.0/24", "via": "198.19.0.42"}],
                        # what the controller renders from the other sites' prefixes: GoBGP's VTEP_B may
                        # advertise 203.0.113.0/24 (type-5 routes no config lists are refused)
                        "remote_prefixes": [{"system_ip": VTEP_B, "prefix": "203.0.113.0/24"}]}}
        (tmp_path / "gw.json").write_text(json.dumps(cfg))
        with GoBgp(go_ns, tmp_path / "gobgp", net.addr[0], ASN, [GoNeighbor(net.addr[1], ASN)]) as go:
            d = NsgProcess(gw_ns, tmp_path / "gw.json", tmp_path / "state")
            try:
                go.wait_established(net.addr[1], timeout=30)
                ours = go.wait_route(lambda r: r.get("nlri", {}).get("type") == 5, what="our type-5 in GoBGP")
                print("our type-5 in GoBGP:", ours["prefix"])
                assert ours["nlri"]["value"]["prefix"] == "192.0.2.0/24", ours
                assert ours["nlri"]["value"]["gateway"] == "198.19.0.42", ours
                assert any(a.get("nexthop") == SYSIP for a in ours["attrs"] if a.get("type") == 14)
                # our own configured prefix is routed here too
                d.wait(lambda s: True, timeout=1)
                assert ("192.0.2.0/24", "198.19.0.42", "br-100") in kernel_routes(gw_ns)
                rd = f"{VTEP_B}:5"
                go.cli("global", "rib", "-a", "evpn", "add", "prefix", "203.0.113.0/24", "gw", "198.19.0.77",
                       "etag", "0", "label", str(VNI), "rd", rd, "rt", f"{ASN}:{VNI}", "encap", "vxlan",
                       "nexthop", VTEP_B)
                d.wait(lambda s: ("203.0.113.0/24", "198.19.0.77", "br-100") in kernel_routes(gw_ns),
                       what="GoBGP's type-5 as a kernel route")
                shown = json.loads(sh("ip", "netns", "exec", gw_ns, *NsgProcess.cli_argv(), "show", "evpn", "--json",
                                      "--state-dir", str(tmp_path / "state")))
                assert {"type": 5, "prefix": "203.0.113.0/24", "gateway_ip": "198.19.0.77", "vtep": VTEP_B,
                        "peer": net.addr[0], "best": True} in shown["received"]
                # a prefix that would shadow our subnet is not installed
                go.cli("global", "rib", "-a", "evpn", "add", "prefix", "198.19.0.0/25", "gw", "198.19.0.77",
                       "etag", "0", "label", str(VNI), "rd", rd, "rt", f"{ASN}:{VNI}", "nexthop", VTEP_B)
                go.cli("global", "rib", "-a", "evpn", "del", "prefix", "203.0.113.0/24", "gw", "198.19.0.77",
                       "etag", "0", "label", str(VNI), "rd", rd)
                d.wait(lambda s: "203.0.113.0/24" not in {r[0] for r in kernel_routes(gw_ns)},
                       what="the withdrawal applied")
                st = d.status()
                assert st["evpn"]["routes"]["prefix"] == 1  # the shadowing one, held but not installed
                assert "198.19.0.0/25" not in {r[0] for r in kernel_routes(gw_ns)}
            finally:
                d.stop()
