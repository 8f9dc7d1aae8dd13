"""Encrypted overlay across a NAT: b2 sits behind a masquerading router and starts IKE;
LAN hosts ping and run iperf3 across; the core router sees nothing but IKE and ESP-in-UDP.
(How fast it goes is bench/esp.py's question, against strongSwan in the same run.)"""

from __future__ import annotations

import json
import subprocess
import time

from scapy.all import IP, UDP, PcapReader

from lab.gateways import Gateways
from tests.capture import capture
from tests.poll import until

PATTERN = "6e73672d7365637265742d7061747465"  # "nsg-secret-patte": must never show on the WAN
IPERF_PORT = 5201
TCP_LISTEN = "0A"  # include/net/tcp_states.h TCP_LISTEN, as /proc/net/tcp prints the state


def tcp_listening(lab, node: str, port: int) -> bool:
    """Does a socket in ``node`` listen on TCP ``port``? (/proc/net/tcp{,6}: local_address is hex
    addr:port, st the state; the kernel's table, not a tool's human-readable output)"""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in lab.run(node, "cat", table).stdout.splitlines()[1:]:
            f = row.split()
            if int(f[1].rsplit(":", 1)[1], 16) == port and f[3] == TCP_LISTEN:
                return True
    return False


def test_esp_through_nat(make_lab, tmp_path):
    lab, plan = make_lab("two-branch-nat")
    gws = Gateways(lab, plan, transport="esp")
    gws.write_configs()
    for g in ("b1", "b2"):
        gws.start(g)
    t0 = time.monotonic()
    st = {g: gws.wait_tunnels(g) for g in ("b1", "b2")}
    print(f"tunnels up after {time.monotonic() - t0:.2f}s")
    b1_ike = st["b1"]["tunnels"]["ike"][0]["ike_sa"]
    assert b1_ike["nat_remote"] and not b1_ike["initiator"]  # b2 called in through its NAT
    assert b1_ike["peer"].startswith("198.18.2.2:")  # ... from the NAT's outside address

    pcap = tmp_path / "inet.pcap"
    with capture(lab.ns("inet"), "any", pcap, "not", "arp"):
        for src, dst in (("b1-h1", "198.19.0.21"), ("b2-h1", "198.19.0.11")):
            ping = lab.run(src, "ping", "-c", "5", "-i", "0.1", "-W", "2", "-p", PATTERN, dst, check=False)
            assert ping.returncode == 0 and " 0% packet loss" in ping.stdout, ping.stdout
        srv = subprocess.Popen(lab.exec_argv("b1-h1", ["iperf3", "-s", "-1", "-B", "198.19.0.11",
                                                       "-p", str(IPERF_PORT)]),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            def listening() -> bool:
                assert srv.poll() is None, f"iperf3 server exited with {srv.returncode}"
                return tcp_listening(lab, "b1-h1", IPERF_PORT)

            until("iperf3 listening in b1-h1", listening, timeout=10, every=0.05)  # not a guessed sleep
            res = lab.run("b2-h1", "iperf3", "-c", "198.19.0.11", "-p", str(IPERF_PORT), "-t", "3", "-J", timeout=30)
            srv.wait(10)
        finally:
            if srv.poll() is None:
                srv.kill()
                srv.wait()
    received = json.loads(res.stdout)["end"]["sum_received"]
    print(f"iperf3 b2-h1 -> b1-h1 through NAT and ESP: {received['bits_per_second'] / 1e6:.1f} Mbit/s "
          "(while tcpdump records; bench/esp.py measures throughput)")
    assert received["bytes"] > 0  # the flow crossed the tunnel

    def count(*filt: str) -> int:
        out = subprocess.run(["tcpdump", "-r", str(pcap), "-n", *filt], capture_output=True, text=True, check=True)
        return len(out.stdout.splitlines())

    total = count()
    assert total > 1000
    # IKE and NAT-T only: no VXLAN (4789), nothing else, over the whole capture
    assert count("not", "(udp", "port", "500", "or", "udp", "port", "4500)") == 0
    # and the pings' packets, in detail (scapy reads the first few thousand)
    pkts = []
    with PcapReader(str(pcap)) as reader:
        for i, p in enumerate(reader):
            if i >= 3000:
                break
            if p.haslayer(IP):
                pkts.append(p)
    for p in pkts:
        for addr in (p[IP].src, p[IP].dst):
            assert not addr.startswith(("198.19.0.", "198.19.255.")), p.summary()  # no inner or system IPs
        assert bytes.fromhex(PATTERN) not in bytes(p[UDP].payload)

    # both ends count the traffic, and nothing was dropped as hostile
    for g in ("b1", "b2"):
        t = gws.status(g)["tunnels"]
        assert t["engine"]["esp_drops"] == 0 and t["engine"]["unknown_spi"] == 0
        assert sum(c["packets"] for c in t["child_sas"] if c["dir"] == "in") > 1000
