"""QoS with real traffic across the encrypted overlay (two branches, ESP): b1's uplink is shaped to
20 Mbit/s with forwarding classes picked by DSCP. The tenant's DSCP reaches the ESP packets (VXLAN
inherits it, the ESP engine copies it out), so the shaper classifies encrypted traffic.

- one flow that would take more: the wire from b1 carries 20 Mbit/s +- 10% (measured on the WAN
  router's interface, not by our own counters);
- two saturating flows, DSCP AF11 -> class A (70 %) and AF21 -> class B (30 %): the split is 70/30
  +- 10 points;
- a bulk flow saturating the uplink: EF pings (class P, priority 0) keep a low RTT, unmarked pings
  wait behind the bulk queue (both printed, with the idle RTT);
- b1's ingress shaped to 10 Mbit/s through an ifb;
- a rate limiter (policer) on one LAN host added by a reload: its traffic is held to 4 Mbit/s;
- per-class bytes and drops in `nsg status`.
"""

from __future__ import annotations

import json
import re
import signal
import statistics
import subprocess
import time

import pytest

from lab.gateways import Gateways

DST = "198.19.0.21"  # b2-h1
SRC = "198.19.0.11"  # b1-h1
AF11, AF21, EF = 10, 18, 46

QOS = {
    "classes": [{"name": "A", "guaranteed_pct": 63, "ceiling_pct": 100, "priority": 3},
                {"name": "B", "guaranteed_pct": 27, "ceiling_pct": 100, "priority": 3},
                {"name": "C", "guaranteed_pct": 5, "ceiling_pct": 100, "priority": 0},
                {"name": "H", "guaranteed_pct": 5, "ceiling_pct": 100, "priority": 7}],
    "dscp": {str(AF11): "A", str(AF21): "B", str(EF): "C"},
    "default_class": "H",
    "uplinks": [{"uplink": "wan0", "egress_kbit": 20000, "ingress_kbit": 10000}],
}


def iperf_udp(lab, src: str, dst: str, port: int, mbit: float, seconds: float, tos: int = 0) -> subprocess.Popen:
    argv = ["iperf3", "-c", dst, "-p", str(port), "-u", "-b", f"{mbit}M", "-t", str(seconds), "-l", "1200", "-J"]
    if tos:
        argv += ["-S", str(tos << 2)]
    return subprocess.Popen(lab.exec_argv(src, argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def received_mbit(proc: subprocess.Popen) -> float:
    out, _ = proc.communicate(timeout=60)
    doc = json.loads(out)
    return doc["end"]["sum"]["bytes"] * 8 / doc["end"]["sum"]["seconds"] / 1e6 * (
        1 - doc["end"]["sum"]["lost_percent"] / 100)


def rx_bytes(lab, node: str, ifname: str) -> int:
    return int(lab.run(node, "cat", f"/sys/class/net/{ifname}/statistics/rx_bytes").stdout)


def rtts(lab, node: str, dst: str, n: int = 15, tos: int = 0) -> list[float]:
    argv = ["ping", "-c", str(n), "-i", "0.2", "-W", "2", dst] + (["-Q", str(tos << 2)] if tos else [])
    out = lab.run(node, *argv, check=False, timeout=30).stdout
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]


@pytest.fixture
def shaped(make_lab):
    lab, plan = make_lab("two-branch")
    gws = Gateways(lab, plan, transport="esp")
    paths = gws.write_configs()
    cfg = json.loads(paths["b1"].read_text())
    cfg["qos"] = QOS
    paths["b1"].write_text(json.dumps(cfg))
    b1 = gws.start("b1")
    gws.start("b2")
    for g in ("b1", "b2"):
        gws.wait_tunnels(g, timeout=30)
    st = gws.status("b1")
    assert st["qos"]["applied"] == 1 and st["qos"]["shaped"][0] == "wan0", st["qos"]
    servers = [subprocess.Popen(lab.exec_argv(host, ["iperf3", "-s", "-p", str(port)]), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
               for host, port in (("b2-h1", 5201), ("b2-h1", 5202), ("b1-h1", 5203))]
    time.sleep(0.5)
    # the router's side of b1's WAN link: what b1 really puts on the wire
    wan_peer = next(link for link in json.loads(lab.run("inet", "ip", "-j", "addr", "show").stdout)
                    if any(a.get("local") == plan.gateways[0].uplinks[0].gateway for a in link.get("addr_info", [])))
    yield lab, gws, wan_peer["ifname"], (paths["b1"], b1)
    for p in servers:
        p.kill()
        p.wait()


def test_shaping_split_and_priority_on_encrypted_traffic(shaped):
    lab, gws, wan_peer, (b1_config, b1) = shaped

    # 1. one flow offering 40 Mbit/s: the wire carries the shaped 20
    before, t0 = rx_bytes(lab, "inet", wan_peer), time.monotonic()
    got = received_mbit(iperf_udp(lab, "b1-h1", DST, 5201, 40, 5))
    wire = (rx_bytes(lab, "inet", wan_peer) - before) * 8 / (time.monotonic() - t0) / 1e6
    print(f"shaped to 20 Mbit/s: the wire carried {wire:.2f} Mbit/s (ESP-in-UDP frames), the receiver got "
          f"{got:.2f} Mbit/s of UDP payload")
    assert 18.0 <= wire <= 22.0, wire

    # 2. two saturating flows, AF11 (class A, 63 %) and AF21 (class B, 27 %): a 70/30 split of what they get,
    # judged on the WAN router by the ESP packets' DSCP (a counter of its own, not ours)
    judge = {"nftables": [{"add": {"table": {"family": "inet", "name": "judge"}}},
                          {"add": {"chain": {"family": "inet", "table": "judge", "name": "fwd", "type": "filter",
                                             "hook": "forward", "prio": 0, "policy": "accept"}}}]
             + [{"add": {"rule": {"family": "inet", "table": "judge", "chain": "fwd", "comment": name, "expr": [
                 {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": wan_peer}},
                 {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "dscp"}}, "right": dscp}},
                 {"counter": None}]}}} for name, dscp in (("A", AF11), ("B", AF21))]}
    subprocess.run(lab.exec_argv("inet", ["nft", "-j", "-f", "-"]), input=json.dumps(judge), text=True, check=True)
    st0 = gws.status("b1")["qos"]["classes"]["wan0"]
    a = iperf_udp(lab, "b1-h1", DST, 5201, 30, 5, tos=AF11)
    b = iperf_udp(lab, "b1-h1", DST, 5202, 30, 5, tos=AF21)
    got_a, got_b = received_mbit(a), received_mbit(b)
    st1 = gws.status("b1")["qos"]["classes"]["wan0"]
    listed = json.loads(lab.run("inet", "nft", "-j", "list", "table", "inet", "judge").stdout)["nftables"]
    seen = {r["rule"]["comment"]: next(e["counter"]["bytes"] for e in r["rule"]["expr"] if "counter" in e)
            for r in listed if "rule" in r}
    share = seen["A"] / (seen["A"] + seen["B"])
    print(f"contention: the WAN router saw {seen['A']} bytes of AF11 and {seen['B']} of AF21 ESP packets -> "
          f"{share:.1%} / {1 - share:.1%}; receivers got A {got_a:.2f} and B {got_b:.2f} Mbit/s of payload; "
          f"shaper drops A {st1['A']['drops'] - st0['A']['drops']} B {st1['B']['drops'] - st0['B']['drops']}")
    assert 0.60 <= share <= 0.80, share
    assert st1["A"]["drops"] > st0["A"]["drops"] and st1["B"]["drops"] > st0["B"]["drops"]  # both were over

    # 3. priority: EF pings beside a bulk flow saturating the uplink
    idle = statistics.median(rtts(lab, "b1-h1", DST, tos=EF))
    bulk = iperf_udp(lab, "b1-h1", DST, 5201, 40, 8)
    time.sleep(1.5)
    ef = rtts(lab, "b1-h1", DST, tos=EF)
    plain = rtts(lab, "b1-h1", DST)
    received_mbit(bulk)
    ef_med, plain_med = statistics.median(ef), statistics.median(plain) if plain else float("inf")
    print(f"ping RTT: idle {idle:.2f} ms; under a saturating bulk flow: EF (priority class) {ef_med:.2f} ms, "
          f"unmarked (bulk class) {plain_med:.2f} ms ({len(plain)}/15 answered)")
    assert len(ef) >= 14 and ef_med < idle + 10, (idle, ef)
    assert plain_med > ef_med + 20, (ef_med, plain_med)  # the bulk queue is real: priority made the difference

    # 4. ingress: b2 -> b1 shaped to 10 Mbit/s on b1's side (through the ifb)
    got = received_mbit(iperf_udp(lab, "b2-h1", SRC, 5203, 30, 4))
    print(f"ingress shaped to 10 Mbit/s: b1-h1 received {got:.2f} Mbit/s of UDP payload")
    assert 8.0 <= got <= 10.5, got

    # 5. a policer on b1-h1, added by a reload: what it sends is held to 4 Mbit/s (its IP packets)
    cfg = json.loads(b1_config.read_text())
    cfg["qos"]["limiters"] = [{"name": "h1", "target": f"{SRC}/32", "rate_kbit": 4000, "direction": "from"}]
    b1_config.write_text(json.dumps(cfg))
    b1.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while gws.status("b1")["qos"]["applied"] < 2:
        assert time.monotonic() < deadline, "the limiter was not applied"
        time.sleep(0.2)
    flow = iperf_udp(lab, "b1-h1", DST, 5201, 15, 6)
    time.sleep(2)  # past the policer's full bucket at the start
    before, t0 = rx_bytes(lab, "b2-h1", "eth0"), time.monotonic()
    time.sleep(3)
    got = (rx_bytes(lab, "b2-h1", "eth0") - before) * 8 / (time.monotonic() - t0) / 1e6
    received_mbit(flow)
    print(f"limiter of 4 Mbit/s on b1-h1: b2-h1's interface received {got:.2f} Mbit/s (frames, steady state)")
    assert 3.6 <= got <= 4.6, got
