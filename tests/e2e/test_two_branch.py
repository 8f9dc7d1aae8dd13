"""The foundation's whole story: two branches, static configs, LAN hosts ping over VXLAN.

The flood lists and MAC entries come from BGP EVPN through the route reflector beside the hub on
the controller node (nothing static). A capture on the core router is judged by scapy: the hosts'
packets cross the WAN only as VXLAN with the subnet's VNI.
"""

from __future__ import annotations

import json
import os
import signal
import time

from scapy.all import ICMP, IP, UDP, VXLAN, rdpcap

from lab.gateways import HUB_NODE, Gateways, nsg_argv
from lab.topology import CONTROLLER_SYSTEM_IP
from tests.capture import capture


def test_lan_hosts_ping_across_vxlan(make_lab, tmp_path):
    lab, plan = make_lab("two-branch")
    gws = Gateways(lab, plan)
    gws.write_configs()
    for g in ("b1", "b2"):
        gws.start(g)
    for g in ("b1", "b2"):
        st = gws.wait_applied(g)  # with EVPN: also until the other branch's type-3 arrived
        assert st["last_apply"]["waiting"] == []
        assert st["evpn"]["peers"]["198.19.255.254"]["state"] == "Established"
        assert st["evpn"]["routes"]["imet"] == 1  # the other branch's, reflected

    pcap = tmp_path / "inet.pcap"
    with capture(lab.ns("inet"), "b1-w0", pcap):
        ping = lab.run("b1-h1", "ping", "-c", "5", "-i", "0.2", "-W", "2", "198.19.0.21", check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert " 0% packet loss" in ping.stdout

    pkts = rdpcap(str(pcap))
    vxlan = [p for p in pkts if p.haslayer(UDP) and p[UDP].dport == 4789]
    echo = [p for p in vxlan if p.haslayer(VXLAN) and p[VXLAN].payload.haslayer(ICMP)]
    assert {p[VXLAN].vni for p in vxlan} == {100}
    outer = {(p[IP].src, p[IP].dst) for p in echo}
    assert outer == {("198.19.255.1", "198.19.255.2"), ("198.19.255.2", "198.19.255.1")}
    inner = [(p[VXLAN][IP].src, p[VXLAN][IP].dst, p[VXLAN][ICMP].type) for p in echo]
    assert inner.count(("198.19.0.11", "198.19.0.21", 8)) == 5
    assert inner.count(("198.19.0.21", "198.19.0.11", 0)) == 5
    # The hosts' MACs were learned locally and announced: each gateway has the other's host as an
    # EVPN MAC entry (the bridge's, toward the VXLAN port, and the VXLAN device's, toward the VTEP).
    for g, other in (("b1", "198.19.255.2"), ("b2", "198.19.255.1")):
        fdb = gws.status(g)["fdb"]
        unicast = [f for f in fdb if " 00:00:00:00:00:00 " not in f]
        assert any(f.endswith(f"dst {other}") for f in unicast) and any(f.endswith(" master") for f in unicast), fdb
    # Nothing of the tenant crossed the WAN outside VXLAN.
    bare = [p for p in pkts if p.haslayer(IP) and p[IP].src.startswith("198.19.0.")]
    assert bare == []

    # Both daemons report zero changes on a resync of the same config.
    for g in ("b1", "b2"):
        pid = int((lab.dir / "logs" / f"{g}-nsg.pid").read_text())
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while gws.status(g)["last_apply"]["reason"] != "reload" and time.monotonic() < deadline:
            time.sleep(0.1)
        la = gws.status(g)["last_apply"]
        assert la["reason"] == "reload" and la["changes_made"] == 0, la


def test_route_reflector_restart_keeps_the_overlay_forwarding(make_lab):
    """Graceful restart (RFC 4724): the reflector is killed; the gateways keep what it had told them
    (stale) and the hosts keep pinging; it comes back, the sessions return, its End-of-RIB leaves
    nothing stale behind."""
    lab, plan = make_lab("two-branch")
    gws = Gateways(lab, plan)
    gws.write_configs()
    for g in ("b1", "b2"):
        gws.start(g)
    for g in ("b1", "b2"):
        gws.wait_applied(g)
    assert lab.run("b1-h1", "ping", "-c", "2", "-W", "2", "198.19.0.21", check=False).returncode == 0
    rr_pid = int((lab.dir / "logs" / f"{HUB_NODE}-rr.pid").read_text())
    os.kill(rr_pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while gws.status("b1")["evpn"]["peers"][CONTROLLER_SYSTEM_IP]["state"] == "Established":
        assert time.monotonic() < deadline, "b1 did not notice the reflector was gone"
        time.sleep(0.2)
    ping = lab.run("b1-h1", "ping", "-c", "20", "-i", "0.2", "-W", "1", "198.19.0.21", check=False)
    print("while the reflector is down:", ping.stdout.strip().splitlines()[-2])
    assert " 0% packet loss" in ping.stdout
    st = gws.status("b1")
    assert st["evpn"]["counters"]["stale_kept"] >= 1 and st["evpn"]["routes"]["imet"] == 1
    lab.spawn(HUB_NODE, "rr", gws.reflector_argv())
    for g in ("b1", "b2"):
        gws.wait_applied(g, timeout=30)  # sessions up again, the other branch's type-3 in place
    deadline = time.monotonic() + 10
    while True:
        shown = json.loads(lab.run("b1", *nsg_argv("show", "evpn", "--json", "--state-dir",
                                                  str(gws.state_dir("b1")))).stdout)
        if shown["received"] and not any(r.get("stale") for r in shown["received"]):
            break
        assert time.monotonic() < deadline, f"stale routes left after the End-of-RIB: {shown}"
        time.sleep(0.2)
    assert lab.run("b1-h1", "ping", "-c", "2", "-W", "2", "198.19.0.21", check=False).returncode == 0
