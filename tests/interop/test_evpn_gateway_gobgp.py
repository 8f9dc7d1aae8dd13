"""The gateway's EVPN control plane against GoBGP: routes injected with the gobgp CLI land in the
gateway's kernel FDB (type 3 -> flood list, type 2 -> MAC entry, withdrawal -> gone), and the
gateway's routes show in `gobgp global rib -a evpn`: its type-3, and the type-2 of a MAC its bridge
learned on the LAN port (withdrawn again when the port leaves the subnet's bridge)."""

from __future__ import annotations

import json
import sys

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
VTEP_B, MAC = "198.18.70.77", "02:00:5e:00:53:42"


# one Ethernet frame (local experimental EtherType 0x88b5) from the given port and source MAC
SEND_FRAME = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
s.send(b"\\xff" * 6 + bytes.fromhex(sys.argv[2].replace(":", "")) + b"\\x88\\xb5" + bytes(46))
"""


def kernel_fdb(ns: str) -> set[tuple[str, str]]:
    out = json.loads(sh("ip", "netns", "exec", ns, "bridge", "-j", "fdb", "show", "dev", f"vx-{VNI}") or "[]")
    return {(f["mac"], f["dst"]) for f in out if f.get("dst")}


def test_gateway_evpn_with_gobgp(tmp_path):
    with bgp_pair() as net:
        go_ns, gw_ns = net.ns
        sh("ip", "-n", gw_ns, "link", "add", "name", "lan0", "type", "veth", "peer", "name", "lan0p")
        sh("ip", "-n", gw_ns, "link", "set", "lan0p", "up")
        lan_mac = json.loads(sh("ip", "-n", gw_ns, "-j", "link", "show", "lan0p"))[0]["address"]
        sh("ip", "-n", gw_ns, "addr", "flush", "dev", net.ifname[1])
        cfg = {"schema_version": 1, "system_ip": SYSIP,
               "uplinks": [{"name": "wan0", "interface": net.ifname[1], "mode": "static",
                            "address": f"{net.addr[1]}/24", "gateway": net.addr[0]}],
               "subnets": [{"name": "corp", "vni": VNI, "cidr": "198.19.0.0/24", "gateway": "198.19.0.1",
                            "ports": ["lan0"]}],
               "evpn": {"asn": ASN, "peers": [{"address": net.addr[0], "asn": ASN}]}}
        (tmp_path / "gw.json").write_text(json.dumps(cfg))
        with GoBgp(go_ns, tmp_path / "gobgp", net.addr[0], ASN, [GoNeighbor(net.addr[1], ASN)]) as go:
            d = NsgProcess(gw_ns, tmp_path / "gw.json", tmp_path / "state")
            try:
                go.wait_established(net.addr[1], timeout=30)
                go.wait_route(lambda r: r.get("nlri", {}).get("type") == 3
                              and r["nlri"]["value"].get("ip") == SYSIP, what="our type-3 in GoBGP")
                # a frame from a host on the LAN port: the bridge learns its MAC, nsg announces it
                d.wait(lambda s: any(x["name"] == "lan0" and x["master"] == f"br-{VNI}" for x in s["devices"]),
                       what="lan0 in the bridge")
                sh("ip", "netns", "exec", gw_ns, sys.executable, "-c", SEND_FRAME, "lan0p", lan_mac)
                got = go.wait_route(lambda r: r.get("nlri", {}).get("type") == 2
                                    and r["nlri"]["value"].get("mac") == lan_mac, what="our type-2 in GoBGP")
                print("our type-2 in GoBGP:", got)
                rd = f"{VTEP_B}:{VNI}"
                go.add_multicast(VTEP_B, rd=rd, rt=f"{ASN}:{VNI}", vni=VNI)
                go.add_macadv(MAC, "198.19.0.42", rd=rd, rt=f"{ASN}:{VNI}", label=VNI, nexthop=VTEP_B)
                d.wait(lambda s: {("00:00:00:00:00:00", VTEP_B), (MAC, VTEP_B)} <= kernel_fdb(gw_ns),
                       what="GoBGP's routes in the kernel FDB")
                go.del_macadv(MAC, "198.19.0.42", rd=rd, label=VNI)
                d.wait(lambda s: (MAC, VTEP_B) not in kernel_fdb(gw_ns), what="the withdrawal applied")
                assert ("00:00:00:00:00:00", VTEP_B) in kernel_fdb(gw_ns)
            finally:
                d.stop()
