"""The overlay is reachable only through the tunnel: a WAN-side attacker (scapy in `inet`) sends raw VXLAN
to a gateway's uplink address and to its system IP, spoofing a real peer's WAN address and system IP,
and opens BGP to the gateways and to the hub. Nothing reaches the LAN, nothing is answered, every
packet is dropped and counted by the gateway's input guard, and the tunnels keep carrying traffic.

Issue 13 section 1. Before the guard, the LAN host answered the injected ARP request."""

from __future__ import annotations

import subprocess
import sys
import time

from lab.gateways import HUB, Gateways
from lab.topology import CONTROLLER_SYSTEM_IP
from tests.capture import capture

ATTACKER_MAC = "02:66:66:66:66:66"
VNI = 100  # the lab tenant's VNI (lab/topology.py)
B1_WAN, B2_WAN, CTL_WAN = "198.18.1.2", "198.18.2.2", "198.18.0.2"
B1_SYS, B2_SYS = "198.19.255.1", "198.19.255.2"
B1_H1 = "198.19.0.11"

# VXLAN frames carrying an ARP request for b1-h1 and a broadcast ping, from the attacker's MAC; to
# b1's WAN address and to its system IP (inet routes system IPs in this topology), with the source
# of nobody, of b2's WAN address, and of b2's system IP.
INJECT = f"""
import sys
from scapy.all import ARP, ICMP, IP, UDP, Ether, conf, send
from scapy.layers.vxlan import VXLAN
conf.verb = 0
frames = [Ether(src="{ATTACKER_MAC}", dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc="{ATTACKER_MAC}",
                psrc="198.19.0.99", pdst="{B1_H1}"),
          Ether(src="{ATTACKER_MAC}", dst="ff:ff:ff:ff:ff:ff") / IP(src="198.19.0.99", dst="198.19.0.255") / ICMP()]
n = 0
for dst in ("{B1_WAN}", "{B1_SYS}"):
    for src in ("198.18.0.1", "{B2_WAN}", "{B2_SYS}"):
        for f in frames:
            send(IP(src=src, dst=dst) / UDP(sport=40000, dport=4789) / VXLAN(vni={VNI}, flags=0x08) / f, count=5)
            n += 5
print(n)
"""


def _connect(lab, node: str, addr: str, port: int) -> str:
    """Try TCP from a lab node: 'open', 'refused' or 'timeout'."""
    probe = (f"import socket\ns=socket.socket(); s.settimeout(2)\ntry:\n s.connect(('{addr}', {port})); print('open')\n"
             "except ConnectionRefusedError: print('refused')\nexcept OSError: print('timeout')")
    return lab.run(node, sys.executable, "-c", probe).stdout.strip()


def _dropped(gws: Gateways, gw: str, name: str) -> int:
    return gws.status(gw)["guard"]["dropped"][name]["packets"]


def test_overlay_only_through_the_tunnel(make_lab, tmp_path):
    lab, plan = make_lab("two-branch")
    gws = Gateways(lab, plan, transport="esp")
    gws.write_configs()
    for g in ("b1", "b2"):
        gws.start(g)
    for g in ("b1", "b2"):
        gws.wait_tunnels(g, timeout=40)
    st = gws.status("b1")
    assert st["guard"]["overlay_protected"] is True and st["guard"]["uplinks"] == ["wan0"]
    before = {k: _dropped(gws, "b1", k) for k in ("guard.overlay", "guard.uplink")}

    # 1. raw VXLAN from the WAN: the LAN host sees nothing of it
    pcap = tmp_path / "b1-h1.pcap"
    with capture(lab.ns("b1-h1"), "eth0", pcap, "ether", "host", ATTACKER_MAC):
        sent = int(subprocess.run(lab.exec_argv("inet", [sys.executable, "-c", INJECT]), check=True,
                                  capture_output=True, text=True).stdout)
        time.sleep(0.5)
    seen = subprocess.run(["tcpdump", "-r", str(pcap), "-n"], capture_output=True, text=True, check=True).stdout
    assert seen.strip() == "", f"the LAN host received injected frames:\n{seen}"
    neigh = lab.run("b1-h1", "ip", "neigh", "show").stdout
    assert ATTACKER_MAC not in neigh
    assert _dropped(gws, "b1", "guard.overlay") - before["guard.overlay"] >= sent

    # 2. BGP from the WAN: to the branches and to the hub (which runs the route reflector); silence
    for node_addr in (B1_WAN, B1_SYS, CTL_WAN, CONTROLLER_SYSTEM_IP):
        assert _connect(lab, "inet", node_addr, 179) == "timeout", node_addr
    # 3. anything else at the uplink: dropped and counted
    assert _connect(lab, "inet", B1_WAN, 22) == "timeout"
    after_uplink = _dropped(gws, "b1", "guard.uplink")
    assert after_uplink > before["guard.uplink"]
    assert _dropped(gws, HUB, "guard.overlay") >= 2  # the two BGP SYNs to the hub (at least one try each)

    # 4. the tunnels still carry the overlay, BGP EVPN included
    for src, dst in (("b1-h1", "198.19.0.21"), ("b2-h1", B1_H1)):
        ping = lab.run(src, "ping", "-c", "3", "-i", "0.2", "-W", "2", dst, check=False)
        assert ping.returncode == 0, ping.stdout
    evpn = gws.status("b1")["evpn"]
    assert all(p["state"] == "Established" for p in evpn["peers"].values())
    # the reflector listens on the hub's system IP only (never on the WAN address)
    ss = lab.run("ctl", "ss", "-Htln", "sport", "= :179").stdout
    assert f"{CONTROLLER_SYSTEM_IP}:179" in ss and "0.0.0.0:179" not in ss, ss


def test_plain_transport_says_the_overlay_is_unprotected(make_lab):
    lab, plan = make_lab("two-branch")
    gws = Gateways(lab, plan, transport="plain")
    gws.write_configs()
    for g in ("b1", "b2"):
        gws.start(g)
    gws.wait_applied("b1", timeout=30)
    guard = gws.status("b1")["guard"]
    assert guard["overlay_protected"] is False
    assert guard["overlay_peers"] == sorted([B2_SYS, CONTROLLER_SYSTEM_IP])
