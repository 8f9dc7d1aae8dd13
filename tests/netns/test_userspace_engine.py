"""The userspace ESP engine between two namespaces: real TUN, real UDP 4500, real traffic.

Manually keyed SAs (lab/esp_pair.py); IKEv2 keys them in the gateway. A capture
between the sites must show only UDP 4500 carrying ESP, and hostile packets are
dropped and counted while the engine keeps forwarding.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from scapy.all import IP, UDP, rdpcap

from lab.esp_pair import INNER, SPIS, WAN, EspPair
from tests.capture import capture
from tests.conftest import sh, unique_name


@pytest.fixture
def pair(tmp_path):
    p = EspPair(unique_name("e"), tmp_path)
    try:
        p.up()
        yield p
    finally:
        p.down()


def test_ping_and_tcp_over_esp_only_udp_4500_on_the_wire(pair, tmp_path):
    a, b = pair.ns
    with capture(a, "wan0", tmp_path / "wan.pcap"):
        ping = subprocess.run(["ip", "netns", "exec", a, "ping", "-c", "5", "-i", "0.1", "-W", "2", INNER[1]],
                              capture_output=True, text=True, check=False)
        # a TCP transfer (the kernel's TCP over the engine) of 2 MB, counted at the far end
        srv = subprocess.Popen(["ip", "netns", "exec", b, sys.executable, "-c",
                                f"import socket;s=socket.socket();s.setsockopt(1,2,1);s.bind(('{INNER[1]}',5001));"
                                "s.listen(1);c,_=s.accept();n=0\nwhile (d:=c.recv(65536)):n+=len(d)\nprint(n)"],
                               stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)
        subprocess.run(["ip", "netns", "exec", a, sys.executable, "-c",
                        f"import socket;s=socket.create_connection(('{INNER[1]}',5001));s.sendall(b'z'*2_000_000);"
                        "s.close()"], check=True, timeout=30)
        assert srv.communicate(timeout=30)[0].strip() == "2000000"
    assert ping.returncode == 0, ping.stdout
    pkts = [p for p in rdpcap(str(tmp_path / "wan.pcap")) if p.haslayer(IP)]
    assert len(pkts) > 100
    assert all(p.haslayer(UDP) and 4500 in (p[UDP].sport, p[UDP].dport) for p in pkts)
    spis = {s.to_bytes(4, "big") for s in SPIS}
    for p in pkts:
        payload = bytes(p[UDP].payload)
        assert payload[:4] in spis
        assert b"z" * 16 not in payload
    ca = pair.counters(0)
    assert ca["engine"]["no_sa"] == 0 and ca["engine"]["esp_drops"] == 0
    assert ca["outbound"][f"{SPIS[0]:#010x}"]["packets"] >= 5


def test_hostile_packets_dropped_and_counted(pair, tmp_path):
    a, b = pair.ns
    with capture(b, "wan0", tmp_path / "wan.pcap", "udp", "and", "dst", "port", "4500"):
        sh("ip", "netns", "exec", a, "ping", "-c", "2", "-W", "2", INNER[1])
    esp = [bytes(p[UDP].payload) for p in rdpcap(str(tmp_path / "wan.pcap")) if p.haslayer(UDP)]
    assert len(esp) >= 2
    good = esp[0]
    tampered = bytearray(good)
    tampered[4:8] = (1000).to_bytes(4, "big")  # a fresh sequence number: passes the window, fails the ICV
    hostile = [good, bytes(tampered), b"\x00\x00\x99\x99" + good[4:], good[:11], b"\x00\x01", b"\xff"]
    script = ("import socket,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
              f"s.bind(('{WAN[0]}',0));[s.sendto(bytes.fromhex(h),('{WAN[1]}',4500)) for h in sys.argv[1:]]")
    before = pair.counters(1)
    subprocess.run(["ip", "netns", "exec", a, sys.executable, "-c", script, *[h.hex() for h in hostile]], check=True)
    time.sleep(0.3)
    after = pair.counters(1)
    spi = f"{SPIS[0]:#010x}"

    def delta(section, key):
        if section == "engine":
            return after["engine"][key] - before["engine"][key]
        return after["inbound"][spi][key] - before["inbound"][spi][key]

    assert delta("sa", "replay_drops") == 1  # the captured packet sent again
    assert delta("sa", "auth_failures") == 1  # the tampered one
    assert delta("engine", "unknown_spi") == 1
    assert delta("engine", "truncated") == 1  # 2 octets: not even an ESP header
    assert delta("sa", "truncated") == 1  # 11 octets of ESP
    assert delta("engine", "keepalives_in") == 1
    assert delta("sa", "packets") == 0  # nothing hostile was delivered
    assert pair.procs[1].poll() is None
    sh("ip", "netns", "exec", a, "ping", "-c", "2", "-W", "2", INNER[1])
