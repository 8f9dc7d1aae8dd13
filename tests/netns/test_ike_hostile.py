"""Hostile traffic at a running gateway: hypothesis-generated IKE datagrams on UDP 500 and 4500,
forgeries that carry the real SPIs of the live IKE SA, and replayed, tampered, unknown-SPI and
truncated ESP. All are dropped and counted; the daemon keeps running and its tunnel keeps its
keys and carries traffic."""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import UDP, rdpcap

from lab.gateways import Gateways
from tests.capture import capture
from tests.unit.ike.test_hostile_logging import bad_init, spoofed

EXCHANGES = st.sampled_from([34, 35, 36, 37, 0, 255])


@st.composite
def ike_datagram(draw, spis=None):
    """A plausible IKE header (sometimes with the live SPIs) in front of arbitrary payload bytes."""
    if spis and draw(st.booleans()):
        spi_i, spi_r = spis
    else:
        spi_i = draw(st.binary(min_size=8, max_size=8))
        spi_r = draw(st.sampled_from([bytes(8), draw(st.binary(min_size=8, max_size=8))]))
    body = draw(st.binary(max_size=300))
    nxt = draw(st.sampled_from([0, 33, 34, 40, 41, 46, 200]))
    version = draw(st.sampled_from([0x20, 0x20, 0x10, 0x30]))
    flags = draw(st.sampled_from([0x08, 0x20, 0x28, 0x00, 0xFF]))
    length = draw(st.sampled_from([28 + len(body), 28 + len(body), draw(st.integers(0, 0xFFFFFFFF))]))
    head = spi_i + spi_r + struct.pack("!BBBBII", nxt, version, draw(EXCHANGES), flags,
                                       draw(st.integers(0, 3)), length)
    return head + body if draw(st.integers(0, 9)) else draw(st.binary(max_size=60))


SENDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for line in open(sys.argv[1]):
    kind, _, hexdata = line.strip().partition(" ")
    data = bytes.fromhex(hexdata)
    if kind == "4500":  # IKE on the NAT-T port carries the non-ESP marker (RFC 3948 2.2)
        data = b"\\x00\\x00\\x00\\x00" + data
    s.sendto(data, (sys.argv[2], 4500 if kind == "esp" else int(kind)))
"""


def test_hostile_ike_is_dropped_and_counted(make_lab, tmp_path):
    lab, plan = make_lab("two-branch")
    gws = Gateways(lab, plan, transport="esp")
    gws.write_configs()
    for g in ("b1", "b2"):
        gws.start(g)
    before = {g: gws.wait_tunnels(g) for g in ("b1", "b2")}
    ike = before["b2"]["tunnels"]["ike"][0]["ike_sa"]
    # b1 (lower system IP) initiated: on the wire SPIi is b1's, SPIr is b2's
    live = (bytes.fromhex(ike["remote_spi"]), bytes.fromhex(ike["local_spi"]))
    target = plan.gateways[1].uplinks[0].address.split("/")[0]
    sent = {"n": 0}

    @settings(max_examples=4, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(st.lists(st.tuples(st.sampled_from([500, 4500]), ike_datagram(live)), min_size=150, max_size=150))
    def fire(batch):
        f = tmp_path / "batch.txt"
        f.write_text("".join(f"{port} {data.hex()}\n" for port, data in batch))
        subprocess.run(lab.exec_argv("inet", [sys.executable, "-c", SENDER, str(f), target]), check=True)
        sent["n"] += len(batch)

    fire()
    after = gws.wait_tunnels("b2")
    t = after["tunnels"]
    sa = t["ike"][0]["ike_sa"]
    print(f"sent {sent['n']} hostile datagrams; manager {t['ike_manager']}; SA counters {sa['counters']}; "
          f"engine ike_in {t['engine']['ike_in']}")
    # same IKE SA, same child SA: nothing hostile changed state
    assert sa["local_spi"] == ike["local_spi"] and sa["children"] == ike["children"]
    dropped = sum(t["ike_manager"].values()) + sa["counters"]["malformed"] + sa["counters"]["integrity_failures"] \
        + sa["counters"]["stale"]
    assert dropped >= sent["n"] // 2, (dropped, sent["n"])
    assert sa["counters"]["integrity_failures"] + sa["counters"]["stale"] > 0  # forgeries with the live SPIs
    # the overlay still works both ways
    for src, dst in (("b1-h1", "198.19.0.21"), ("b2-h1", "198.19.0.11")):
        assert lab.run(src, "ping", "-c", "2", "-W", "2", dst, check=False).returncode == 0


def test_hostile_esp_at_the_gateway(make_lab, tmp_path):
    lab, plan = make_lab("two-branch")
    gws = Gateways(lab, plan, transport="esp")
    gws.write_configs()
    for g in ("b1", "b2"):
        gws.start(g)
    for g in ("b1", "b2"):
        gws.wait_tunnels(g)
    target = plan.gateways[1].uplinks[0].address.split("/")[0]
    # b1's ESP to b2 only: b2's own traffic to the hub (BGP inside ESP) crosses the same link
    source = plan.gateways[0].uplinks[0].address.split("/")[0]
    with capture(lab.ns("inet"), "b2-w0", tmp_path / "esp.pcap", "udp", "dst", "port", "4500", "and",
                 "greater", "60", "and", "src", "host", source, "and", "dst", "host", target):
        lab.run("b1-h1", "ping", "-c", "3", "-i", "0.2", "-W", "2", "198.19.0.21")
    esp = [bytes(p[UDP].payload) for p in rdpcap(str(tmp_path / "esp.pcap")) if p.haslayer(UDP)]
    esp = [e for e in esp if e[:4] != bytes(4)]
    assert esp
    good = esp[0]
    tampered = bytearray(good)
    tampered[4:8] = (99999).to_bytes(4, "big")  # fresh sequence number: reaches the ICV check, fails it
    hostile = [good, bytes(tampered), b"\x00\x00\x99\x99" + good[4:], good[:12], b"\x01\x02\x03"]
    before = gws.status("b2")["tunnels"]
    f = tmp_path / "esp.txt"
    f.write_text("".join(f"esp {h.hex()}\n" for h in hostile))  # to 4500 as ESP: no marker
    subprocess.run(lab.exec_argv("inet", [sys.executable, "-c", SENDER, str(f), target]), check=True)
    time.sleep(0.5)
    after = gws.status("b2")["tunnels"]

    def sa_sum(t, key):
        return sum(c[key] for c in t["child_sas"] if c["dir"] == "in")

    eng = {k: after["engine"][k] - before["engine"][k] for k in ("unknown_spi", "truncated", "esp_drops")}
    print(f"hostile ESP at b2: engine {eng}, replay +{sa_sum(after, 'replay_drops') - sa_sum(before, 'replay_drops')},"
          f" auth +{sa_sum(after, 'auth_failures') - sa_sum(before, 'auth_failures')}")
    assert sa_sum(after, "replay_drops") - sa_sum(before, "replay_drops") == 1
    assert sa_sum(after, "auth_failures") - sa_sum(before, "auth_failures") == 1
    assert eng["unknown_spi"] == 1 and eng["truncated"] == 1 and eng["esp_drops"] == 3
    assert lab.run("b1-h1", "ping", "-c", "2", "-W", "2", "198.19.0.21", check=False).returncode == 0


SPOOFER = """
import sys, time
from scapy.all import IP, UDP, Raw, conf, send
conf.verb = 0
pkts = []
for line in open(sys.argv[1]):
    src, sport, hexdata = line.split()
    pkts.append(IP(src=src, dst=sys.argv[2]) / UDP(sport=int(sport), dport=500) / Raw(bytes.fromhex(hexdata)))
t0 = time.monotonic()
send(pkts, inter=0.001)
print(f"{len(pkts)} {time.monotonic() - t0:.2f}")
"""


def test_spoofed_ike_sa_init_flood_is_summarised(make_lab, tmp_path):
    """1,000 IKE_SA_INITs from random spoofed TEST-NET sources with proposals b2 must refuse: b2's
    log gets at most 5 lines in any 10 s (the first few refusals, named by their real source
    ip:port, then one summary), every refusal is counted by reason, and the tunnel stays up."""
    lab, plan = make_lab("two-branch")
    gws = Gateways(lab, plan, transport="esp")
    gws.write_configs()
    for g in ("b1", "b2"):
        gws.start(g)
    before = gws.wait_tunnels("b2")
    live = {p["peer"]: p["ike_sa"] for p in before["tunnels"]["ike"]}
    target = plan.gateways[1].uplinks[0].address.split("/")[0]
    rnd = random.Random(13)
    flood = [(spoofed(rnd), bad_init(i % 4, rnd)) for i in range(1000)]
    f = tmp_path / "flood.txt"
    f.write_text("".join(f"{ip} {port} {data.hex()}\n" for (ip, port), data in flood))
    log = lab.log_path("b2", "nsg")
    offset = log.stat().st_size
    t0 = time.time()
    out = subprocess.run(lab.exec_argv("inet", [sys.executable, "-c", SPOOFER, str(f), target]), check=True,
                         capture_output=True, text=True).stdout.split()
    took = float(out[1])
    # the summary comes when the first 10 s window since the first refusal is over
    lines: list[dict] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        lines = [json.loads(x) for x in log.read_text()[offset:].splitlines() if x.strip()]
        if any(x.get("summary") == "refused IKE_SA_INIT" for x in lines):
            break
        time.sleep(0.5)
    time.sleep(1.0)
    lines = [json.loads(x) for x in log.read_text()[offset:].splitlines() if x.strip()]
    span = time.time() - t0
    worst = max((sum(1 for y in lines if x["ts"] <= y["ts"] < x["ts"] + 10) for x in lines), default=0)
    after = gws.status("b2")["tunnels"]
    refused = {k: v for k, v in after["ike_manager"].items() if k.startswith("refused.")}
    print(f"flood: {len(flood)} spoofed IKE_SA_INITs sent in {took:.2f}s; b2 logged {len(lines)} lines in "
          f"{span:.1f}s (at most {worst} in any 10 s); refused {refused}")
    for x in lines:
        print("   ", json.dumps(x))
    assert worst <= 5, [x["msg"] for x in lines]
    summaries = [x for x in lines if x.get("summary") == "refused IKE_SA_INIT"]
    assert len(summaries) == 1, "no summary of the refusals"
    assert summaries[0]["msg"].startswith(f"{sum(refused.values()):,} refused IKE_SA_INIT from "), summaries[0]
    assert sum(refused.values()) >= 950, refused  # all of them reached the responder (a few may drop)
    assert refused.get("refused.IKE_SA_INIT.NO_PROPOSAL_CHOSEN", 0) >= 450
    sources = {f"{ip}:{port}" for (ip, port), _ in flood}
    for x in lines:
        if x["logger"].startswith("ipsec") and "summary" not in x:
            assert x.get("src") in sources and x.get("peer") is None, x  # the real source, no guessed peer
    # the live IKE SAs and their children are the same ones, and the overlay still works
    now = {p["peer"]: p["ike_sa"] for p in after["ike"]}
    for peer, sa in live.items():
        assert now[peer]["local_spi"] == sa["local_spi"] and now[peer]["state"] == "established", peer
        assert now[peer]["children"] == sa["children"], peer
    for src, dst in (("b1-h1", "198.19.0.21"), ("b2-h1", "198.19.0.11")):
        assert lab.run(src, "ping", "-c", "2", "-W", "2", dst, check=False).returncode == 0
