"""The gateway with its EVPN control plane against real FRR (advertise-all-vni): BGP comes up, FRR's
type-3 route becomes the gateway's flood list, FRR's MAC and MAC+IP routes become FDB and neighbour
entries, FRR sees our type-3 and the type-2 of the MAC our bridge learned on its LAN port, `nsg show
evpn` lists FRR's routes, a host behind the FRR VTEP pings a host behind nsg over VXLAN, and our
LAN host's ARP for FRR's host is answered by our bridge (ARP suppression): no ARP crosses VXLAN."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from lab import netns
from tests.conftest import sh, unique_name
from tests.interop import frr as frr_mod
from tests.interop.frr import Frr, Neighbor, bgp_pair, make_vtep
from tests.interop.procs import Tcpdump
from tests.netns.daemon_util import NsgProcess
from tests.peers import require_peer, require_root

pytestmark = [
    require_root("network namespaces"),
    require_peer(frr_mod.missing()),
]

ASN, VNI, SYSIP = 65000, 100, "198.19.255.1"


def test_gateway_evpn_with_frr(tmp_path):
    with bgp_pair(host=True) as net:
        frr_ns, gw_ns = net.ns
        make_vtep(frr_ns, net.addr[0], vni=VNI, bridge_address="198.19.0.2/24")  # MAC+IP routes from its SVI
        net.add_host("br100", "198.19.0.50/24")
        sh("ip", "-n", frr_ns, "route", "add", f"{SYSIP}/32", "via", net.addr[1])  # our VTEP, for FRR's next hop
        # a LAN host on the gateway side
        lan_host = unique_name("lh")
        netns.add_namespace(lan_host)
        try:
            sh("ip", "link", "add", "name", "lan0", "netns", gw_ns, "type", "veth", "peer", "name", "eth0", "netns",
               lan_host)
            sh("ip", "-n", lan_host, "addr", "add", "198.19.0.60/24", "dev", "eth0")
            sh("ip", "-n", lan_host, "link", "set", "eth0", "mtu", "1388", "up")
            cfg = {"schema_version": 1, "system_ip": SYSIP,
                   "uplinks": [{"name": "wan0", "interface": net.ifname[1], "mode": "static",
                                "address": f"{net.addr[1]}/24", "gateway": net.addr[0]}],
                   "subnets": [{"name": "corp", "vni": VNI, "cidr": "198.19.0.0/24", "gateway": "198.19.0.1",
                                "ports": ["lan0"]}],
                   "evpn": {"asn": ASN, "peers": [{"address": net.addr[0], "asn": ASN}], "hold_time": 9}}
            (tmp_path / "gw.json").write_text(json.dumps(cfg))
            # the gateway's uplink address is nsg's to set: take the harness's off first
            sh("ip", "-n", gw_ns, "addr", "flush", "dev", net.ifname[1])
            frr = Frr(frr_ns, tmp_path / "frr", net.addr[0], ASN, [Neighbor(net.addr[1], ASN)])
            with frr:
                d = NsgProcess(gw_ns, tmp_path / "gw.json", tmp_path / "state")
                try:
                    frr.wait_established(net.addr[1], timeout=30)
                    frr.wait_route(lambda r: r.get("routeType") == 3 and any(
                        h.get("ip") == SYSIP for h in r.get("nexthops", [])), what="our type-3 route in FRR")
                    st = d.wait(lambda s: any(f == f"vx-{VNI} 00:00:00:00:00:00 dst {net.addr[0]}"
                                              for f in s["fdb"]), what="FRR's VTEP in our flood list")
                    assert st["evpn"]["peers"][net.addr[0]]["state"] == "Established"
                    deadline = time.monotonic() + 20
                    while True:
                        r = sh("ip", "netns", "exec", net.host_ns, "ping", "-c", "1", "-W", "1", "198.19.0.60",
                               check=False)
                        if "1 received" in r:
                            break
                        assert time.monotonic() < deadline, "no ping across EVPN/VXLAN"
                    # FRR learned its host's MAC and told us: a unicast FDB entry toward its VTEP
                    st = d.wait(lambda s: any(f.startswith(f"vx-{VNI} ") and " 00:00:00:00:00:00 " not in f
                                              and f.endswith(f"dst {net.addr[0]}") for f in s["fdb"]),
                                what="FRR's MAC route in our FDB")
                    lan_mac = json.loads(sh("ip", "-n", lan_host, "-j", "link", "show", "eth0"))[0]["address"]
                    host_mac = json.loads(sh("ip", "-n", net.host_ns, "-j", "link", "show", "h0"))[0]["address"]
                    # our bridge learned the LAN host: FRR has our type-2 for it, next hop our VTEP
                    frr.wait_route(lambda r: r.get("routeType") == 2 and r.get("mac") == lan_mac and any(
                        h.get("ip") == SYSIP for h in r.get("nexthops", [])), what="our type-2 route in FRR")
                    # FRR's SVI resolves its host: a MAC+IP route -> our neighbour entry (ARP suppression)
                    sh("ip", "netns", "exec", frr_ns, "ping", "-c", "1", "-W", "1", "198.19.0.50", check=False)
                    d.wait(lambda s: True, timeout=1)
                    deadline = time.monotonic() + 15
                    while f"198.19.0.50 lladdr {host_mac}" not in sh("ip", "-n", gw_ns, "neigh", "show", "dev",
                                                                   f"br-{VNI}"):
                        assert time.monotonic() < deadline, "FRR's MAC+IP route did not become a neighbour entry"
                        time.sleep(0.2)
                    shown = json.loads(subprocess.run(
                        ["ip", "netns", "exec", gw_ns, sys.executable, "-m", "nsg.cli", "show", "evpn", "--json",
                         "--state-dir", str(tmp_path / "state")], capture_output=True, text=True, check=True).stdout)
                    got = {(r["type"], r.get("mac"), r.get("ip"), r["vtep"]) for r in shown["received"]}
                    assert {(3, None, None, net.addr[0]), (2, host_mac, None, net.addr[0]),
                            (2, host_mac, "198.19.0.50", net.addr[0])} <= got, shown
                    assert any(r["type"] == 2 and r["mac"] == lan_mac for r in shown["local"]), shown
                    # ARP suppression: the LAN host asks for FRR's host; our bridge answers, nothing crosses
                    sh("ip", "-n", lan_host, "neigh", "flush", "dev", "eth0")
                    cap = Tcpdump(gw_ns, f"vx-{VNI}", tmp_path / "vx.pcap", ["arp"])
                    try:
                        sh("ip", "netns", "exec", lan_host, "ping", "-c", "1", "-W", "2", "198.19.0.50")
                        time.sleep(0.3)
                    finally:
                        cap.stop()
                    assert host_mac in sh("ip", "-n", lan_host, "neigh", "show", "198.19.0.50")
                    arps = sh("tcpdump", "-nr", str(cap.pcap), check=False)
                    assert "198.19.0.50" not in arps, f"an ARP for FRR's host crossed VXLAN:\n{arps}"
                    print("gateway FDB:", st["fdb"], "EVPN:", st["evpn"], "shown:", shown)
                finally:
                    d.stop()
        finally:
            netns.kill_namespace_processes(lan_host)
            netns.delete_namespace(lan_host)
