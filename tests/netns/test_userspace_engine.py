"""The userspace ESP engine between two namespaces: real TUN, real UDP 4500, real traffic.

Manually keyed SAs; IKEv2 keys them in the gateway. A capture between the sites
must show only UDP 4500 carrying ESP, and hostile packets are dropped and counted.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from scapy.all import IP, UDP, rdpcap

from lab import netns
from tests.conftest import sh, unique_name

K1, S1, K2, S2 = "11" * 16, "a1a2a3a4", "22" * 16, "b1b2b3b4"


@pytest.fixture
def two_sites(tmp_path):
    a, b = unique_name("ea"), unique_name("eb")
    procs = []
    for ns in (a, b):
        netns.add_namespace(ns)
    try:
        sh("ip", "link", "add", "name", "wan0", "netns", a, "type", "veth", "peer", "name", "wan0", "netns", b)
        for ns, wan, inner in ((a, "198.18.60.1/24", "198.19.250.1"), (b, "198.18.60.2/24", "198.19.250.2")):
            sh("ip", "-n", ns, "addr", "add", wan, "dev", "wan0")
            sh("ip", "-n", ns, "link", "set", "wan0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{inner}/32", "dev", "lo")

        def start(ns, me, peer, endpoint, out_k, out_s, in_k, in_s, out_spi, in_spi, listen):
            spec = {"tun": "esp0", "listen": [listen], "counters": str(tmp_path / f"{ns}.json"),
                    "sas": [{"peer": peer, "endpoint": endpoint, "out_spi": out_spi, "in_spi": in_spi,
                             "out_key": out_k, "out_salt": out_s, "in_key": in_k, "in_salt": in_s}]}
            (tmp_path / f"{ns}.spec").write_text(json.dumps(spec))
            p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "ipsec.engine.manual",
                                  str(tmp_path / f"{ns}.spec")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)
            procs.append(p)
            assert p.stdout.readline().strip() == "engine up"
            sh("ip", "-n", ns, "link", "set", "esp0", "mtu", "1438", "up")
            sh("ip", "-n", ns, "route", "add", f"{peer}/32", "dev", "esp0", "src", me)
            return p

        pa = start(a, "198.19.250.1", "198.19.250.2", "198.18.60.2", K1, S1, K2, S2, 0x1001, 0x2001, "198.18.60.1")
        pb = start(b, "198.19.250.2", "198.19.250.1", "198.18.60.1", K2, S2, K1, S1, 0x2001, 0x1001, "198.18.60.2")
        yield a, b, pa, pb, tmp_path
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
        for ns in (a, b):
            netns.kill_namespace_processes(ns)
            netns.delete_namespace(ns)


def counters(proc, path):
    proc.send_signal(signal.SIGUSR1)
    for _ in range(50):
        if path.exists():
            data = json.loads(path.read_text())
            path.unlink()
            return data
        time.sleep(0.05)
    raise AssertionError("engine did not write its counters")


def test_ping_and_tcp_over_esp_only_udp_4500_on_the_wire(two_sites):
    a, b, pa, _pb, tmp = two_sites
    pcap = tmp / "wan.pcap"
    cap = subprocess.Popen(["ip", "netns", "exec", a, "tcpdump", "-i", "wan0", "-n", "-U", "-w", str(pcap)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert "listening" in cap.stderr.readline()
    ping = subprocess.run(["ip", "netns", "exec", a, "ping", "-c", "5", "-i", "0.1", "-W", "2", "198.19.250.2"],
                          capture_output=True, text=True, check=False)
    # a TCP transfer (the kernel's TCP over the engine) of 2 MB
    srv = subprocess.Popen(["ip", "netns", "exec", b, sys.executable, "-c",
                            "import socket;s=socket.socket();s.setsockopt(1,2,1);s.bind(('198.19.250.2',5001));"
                            "s.listen(1);c,_=s.accept();n=0\nwhile (d:=c.recv(65536)):n+=len(d)\nprint(n)"],
                           stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    subprocess.run(["ip", "netns", "exec", a, sys.executable, "-c",
                    "import socket;s=socket.create_connection(('198.19.250.2',5001));s.sendall(b'z'*2_000_000);"
                    "s.close()"], check=True, timeout=30)
    assert srv.communicate(timeout=30)[0].strip() == "2000000"
    time.sleep(0.2)
    cap.send_signal(signal.SIGINT)
    cap.wait(5)
    assert ping.returncode == 0, ping.stdout
    pkts = [p for p in rdpcap(str(pcap)) if p.haslayer(IP)]
    assert pkts
    assert all(p.haslayer(UDP) and 4500 in (p[UDP].sport, p[UDP].dport) for p in pkts)
    for p in pkts:
        payload = bytes(p[UDP].payload)
        assert payload[:4] in (bytes.fromhex("00001001"), bytes.fromhex("00002001"))
        assert b"198.19.250" not in payload and b"z" * 16 not in payload
    ca = counters(pa, tmp / f"{a}.json")
    assert ca["engine"]["no_sa"] == 0 and ca["engine"]["esp_drops"] == 0
    assert ca["outbound"]["0x00001001"]["packets"] >= 5


def test_hostile_packets_dropped_and_counted(two_sites):
    a, b, _pa, pb, tmp = two_sites
    pcap = tmp / "wan.pcap"
    cap = subprocess.Popen(["ip", "netns", "exec", b, "tcpdump", "-i", "wan0", "-n", "-U", "-w", str(pcap),
                            "udp", "and", "dst", "port", "4500"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert "listening" in cap.stderr.readline()
    sh("ip", "netns", "exec", a, "ping", "-c", "2", "-W", "2", "198.19.250.2")
    time.sleep(0.2)
    cap.send_signal(signal.SIGINT)
    cap.wait(5)
    esp = [bytes(p[UDP].payload) for p in rdpcap(str(pcap)) if p.haslayer(UDP) and p[UDP].dport == 4500]
    assert len(esp) >= 2
    good = esp[0]
    tampered = bytearray(good)
    tampered[4:8] = (1000).to_bytes(4, "big")  # a fresh sequence number, so the window lets it reach the ICV
    hostile = [good, bytes(tampered), b"\x00\x00\x99\x99" + good[4:], good[:11], b"\x00\x01", b"\xff"]
    # fire them at b from a's WAN address (a UDP socket in namespace a)
    script = ("import socket,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
              "s.bind(('198.18.60.1',0));[s.sendto(bytes.fromhex(h),('198.18.60.2',4500)) for h in sys.argv[1:]]")
    before = counters(pb, tmp / f"{b}.json")
    subprocess.run(["ip", "netns", "exec", a, sys.executable, "-c", script, *[h.hex() for h in hostile]], check=True)
    time.sleep(0.3)
    after = counters(pb, tmp / f"{b}.json")
    eng_b, eng_a = before["engine"], after["engine"]
    inb_b, inb_a = before["inbound"]["0x00001001"], after["inbound"]["0x00001001"]
    assert inb_a["replay_drops"] - inb_b["replay_drops"] == 1
    assert inb_a["auth_failures"] - inb_b["auth_failures"] == 1
    assert eng_a["unknown_spi"] - eng_b["unknown_spi"] == 1
    assert eng_a["truncated"] - eng_b["truncated"] == 1  # the 2-octet one
    assert inb_a["truncated"] - inb_b["truncated"] == 1  # the 11-octet ESP
    assert eng_a["keepalives_in"] - eng_b["keepalives_in"] == 1
    # and the engine still forwards
    assert pb.poll() is None
    sh("ip", "netns", "exec", a, "ping", "-c", "2", "-W", "2", "198.19.250.2")
