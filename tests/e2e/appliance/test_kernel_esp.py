"""Issue 15 section 3: the kernel ESP data path, with gateways that are the image booted in qemu.

The appliance lab (lab/appliance_lab.py): the controller, its hub and the route reflector as in every
zero-touch lab; b1 (SeaBIOS) and b2 (OVMF, behind a NAT router) are disks from `nsg-image factory`
booted in qemu (TCG) on their branches' cables; b3 is a namespace gateway (the userspace ESP engine).
Nobody types on the boxes: DHCP option 143, SZTP, EST, the channel, then IKE with kernel XFRM states.

The lab is tests/e2e/appliance/conftest.py's, shared by the package's modules (the boxes take ~75 s to boot
under TCG); the tests run in file order on it.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from lab.lab import Lab
from tests.e2e.appliance.conftest import BOXES, HOSTS, pytestmark  # noqa: F401 - the package's marks

SETTLE_S = 60

def ping(lab: Lab, src: str, dst: str, count: int = 5, *extra: str) -> str:
    r = lab.run(f"{src}-h1", "ping", "-c", str(count), "-i", "0.2", "-W", "2", *extra, HOSTS[dst], check=False)
    assert r.returncode == 0, f"{src}-h1 -> {dst}-h1:\n{r.stdout}"
    return r.stdout


def test_zero_touch_to_first_ping_over_kernel_xfrm(apl):
    for gw, firmware in BOXES.items():
        ready = apl.timings[f"{gw}_ready"]
        assert (ready["slot"], ready["start"], ready["wan"], ready["kernel_esp"], ready["idevid"]) == (
            "a", "first", "eno1", "true", f"LAB-{gw.upper()}"), (gw, firmware, ready)
        st = apl.status(gw)
        assert st["bootstrap"]["state"] == "done" and st["channel"]["connected"], gw
        assert (st["tunnels"]["backend"], st["tunnels"]["kernel_esp"]) == ("xfrm", True), gw
        assert {p["peer"] for p in st["tunnels"]["ike"]} == {"b1", "b2", "b3", "hub"} - {gw}
    assert apl.status("b3")["tunnels"]["backend"] == "userspace"  # this kernel has no ESP
    # guest <-> guest (through b2's NAT), guest <-> host-side gateway, both directions
    for src, dst in (("b1", "b2"), ("b2", "b1"), ("b1", "b3"), ("b3", "b1"), ("b2", "b3"), ("b3", "b2")):
        ping(apl.lab, src, dst, 3)
    # the controller knows them as appliances (A/B boxes) running the image's release from slot a
    doc = json.loads(apl.zt.controller("upgrade", "status", "acme", "--json").stdout)
    seen = {g["name"]: g.get("state") or {} for g in doc["gateways"]}
    for gw in BOXES:
        assert seen[gw].get("appliance") and (seen[gw]["running_version"], seen[gw]["booted_slot"]) == ("0.1.0", "a")
    assert not seen["b3"].get("appliance")
    # the data partition grew to the box's 8 GiB disk at the first boot (the image has 512 MiB of it)
    size = int(apl.boxes["b1"].run("df", "-B1", "--output=size", "/var/lib/nsg").stdout.split()[-1])
    assert size > 4 << 30, size
    # the box resolves names with the server its WAN lease named (option 6: the branch router)
    for gw in BOXES:
        router = next(g for g in apl.plan.gateways if g.name == gw).uplinks[0].gateway
        resolv = apl.boxes[gw].run("cat", "/etc/resolv.conf").stdout
        assert f"nameserver {router}" in resolv.splitlines() and "written by nsg" in resolv, (gw, resolv)


def capture(lab: Lab, node: str, ifname: str, out: Path) -> subprocess.Popen:
    proc = subprocess.Popen(lab.exec_argv(node, ["tcpdump", "-n", "-i", ifname, "-w", str(out), "-U"]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(10)


def test_the_wan_carries_only_ike_and_esp_in_udp(apl, tmp_path):
    """On both boxes' WAN links (inet's side, and so outside b2's NAT too): while the LAN hosts talk
    across every pair, each IPv4 packet between the sites is UDP to or from 500/4500; the only other
    traffic is the box's management channel to the controller (TLS to its device site, 8444); and no
    packet carries the tenant's addresses in the clear."""
    from scapy.all import IP, TCP, UDP, rdpcap

    caps = {gw: tmp_path / f"{gw}.pcap" for gw in BOXES}
    procs = [capture(apl.lab, "inet", f"{gw}-w0", path) for gw, path in caps.items()]
    try:
        for src, dst in (("b1", "b2"), ("b2", "b1"), ("b1", "b3"), ("b2", "b3")):
            ping(apl.lab, src, dst, 5)
    finally:
        for p in procs:
            stop(p)
    controller = apl.plan.controller

    def ike_or_esp(p) -> bool:
        return UDP in p and bool({p[UDP].sport, p[UDP].dport} & {500, 4500})

    def channel(p) -> bool:
        return TCP in p and controller in (p[IP].src, p[IP].dst) and 8444 in (p[TCP].sport, p[TCP].dport)

    for gw, path in caps.items():
        pkts = [p for p in rdpcap(str(path)) if IP in p]
        esp = [p for p in pkts if ike_or_esp(p) and controller not in (p[IP].src, p[IP].dst)]
        other = [p.summary() for p in pkts if not ike_or_esp(p) and not channel(p)]
        print(f"{gw}: {len(pkts)} IPv4 packets on its WAN, {len(esp)} IKE/ESP-in-UDP between sites, "
              f"{sum(map(channel, pkts))} of the controller channel, others {other[:5]}")
        assert len(esp) >= 20 and not other, (gw, other)
        clear = [p.summary() for p in pkts if p[IP].src.startswith("198.19.") or p[IP].dst.startswith("198.19.")]
        assert not clear, clear


def test_status_shows_the_kernels_sas_with_counters(apl):
    ping(apl.lab, "b1", "b2", 10)
    st = apl.status("b1")
    sas = [s for s in st["tunnels"]["child_sas"] if s["peer"] == "b2"]
    assert {s["dir"] for s in sas} == {"in", "out"}, sas
    assert all(s["packets"] >= 10 and s["bytes"] > 0 for s in sas), sas
    # the same states, read independently: iproute2's view of the kernel
    text = apl.boxes["b1"].run("ip", "-s", "xfrm", "state").stdout
    for s in sas:
        block = text.split(f"spi {s['spi']}(")[1].split("\nsrc ")[0]
        kernel_packets = int(re.search(r"lifetime current:\s*\n\s*\d+\(bytes\), (\d+)\(packets\)", block)[1])
        assert kernel_packets >= s["packets"], (s, kernel_packets)  # read later: only more
    shown = apl.boxes["b1"].nsg("status", "--state-dir", "/var/lib/nsg").stdout
    print(shown)
    assert re.search(r"in\s+spi 0x[0-9a-f]{8} packets [1-9]\d* bytes [1-9]\d* replay 0 auth 0", shown), shown


def test_dscp_is_copied_to_the_esp_outer_header(apl, tmp_path):
    """An EF-marked (DSCP 46) ping and an unmarked one from b1's LAN to b2's: on b1's WAN the ESP-in-UDP
    packets that carry them have the same DSCP outside (the VXLAN device inherits the tenant's TOS,
    the kernel's tunnel mode copies it to the ESP outer header)."""
    from scapy.all import IP, UDP, rdpcap

    path = tmp_path / "dscp.pcap"
    proc = capture(apl.lab, "inet", "b1-w0", path)
    try:
        ping(apl.lab, "b1", "b2", 5, "-s", "400", "-Q", "0xb8")
        ping(apl.lab, "b1", "b2", 5, "-s", "300")
    finally:
        stop(proc)
    out = [p for p in rdpcap(str(path)) if IP in p and UDP in p and p[IP].src == "198.18.1.2"
           and p[UDP].dport == 4500]
    by_len: dict[int, set[int]] = {}
    for p in out:
        by_len.setdefault(p[IP].len, set()).add(p[IP].tos)
    big = [tos for n, tos in by_len.items() if n > 450 for tos in tos]
    mid = [tos for n, tos in by_len.items() if 350 < n <= 450 for tos in tos]
    print({n: sorted(t) for n, t in sorted(by_len.items())})
    assert big and set(big) == {0xB8}, by_len
    assert mid and set(mid) == {0}, by_len


def _children(apl, gw: str, peer: str) -> list[dict]:
    for p in apl.status(gw)["tunnels"]["ike"]:
        if p["peer"] == peer:
            return p["ike_sa"]["children"] if p["ike_sa"] and p["ike_sa"]["state"] == "established" else []
    return []


def _spis(apl, gw: str, peer: str) -> tuple[str, tuple]:
    for p in apl.status(gw)["tunnels"]["ike"]:
        if p["peer"] == peer:
            sa = p["ike_sa"]
            return sa["local_spi"], tuple(c["in_spi"] for c in sa["children"])
    raise AssertionError(f"{gw} has no peering with {peer}")


def _settle(apl, pair: tuple[str, str]) -> None:
    deadline = time.monotonic() + SETTLE_S
    a, b = pair
    while not (len(_children(apl, a, b)) == 1 and len(_children(apl, b, a)) == 1):
        assert time.monotonic() < deadline, f"{a}/{b} did not settle to one child SA"
        time.sleep(1)


def _rekey(apl, gw: str, peer: str, ike: bool) -> None:
    argv = ("ipsec", "rekey", peer, *(["--ike"] if ike else []), "--state-dir")
    if gw in apl.boxes:
        apl.boxes[gw].nsg(*argv, "/var/lib/nsg")
    else:
        from lab.gateways import nsg_argv

        apl.lab.run(gw, *nsg_argv(*argv, str(apl.zt.state_dir(gw))))


@pytest.mark.parametrize("pair", [("b1", "b2"), ("b1", "b3")], ids=["guest-guest", "guest-host"])
def test_rekeys_under_a_10ms_ping_lose_nothing(apl, pair):
    """Child and IKE SA rekeys, each started once by either side, while b1's host pings the other's every
    10 ms: every request up to the last answered one is answered (kernel states replaced under load,
    make-before-break; with the host-side gateway, both engines interoperating in both roles)."""
    a, b = pair
    _settle(apl, pair)
    ping_proc = subprocess.Popen(apl.lab.exec_argv(f"{a}-h1", ["ping", "-i", "0.01", "-W", "1", HOSTS[b]]),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done = []
    try:
        time.sleep(1)
        for gw, ike in ((a, False), (b, False), (a, True), (b, True)):
            peer = b if gw == a else a
            before = _spis(apl, gw, peer)
            _rekey(apl, gw, peer, ike)
            _settle(apl, pair)
            after = _spis(apl, gw, peer)
            assert after[0 if ike else 1] != before[0 if ike else 1], (gw, ike, before, after)
            done.append(f"{gw}:{'ike' if ike else 'child'}")
            time.sleep(0.5)
    finally:
        ping_proc.send_signal(signal.SIGINT)
        out = ping_proc.communicate(timeout=15)[0]
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out[-500:]
    sent, got = int(m[1]), int(m[2])
    seqs = sorted(int(x) for x in re.findall(r"icmp_seq=(\d+) ", out))
    print(f"{pair}: rekeys {done}: ping -i 0.01 {sent} transmitted, {got} received")
    assert sent > 500 and seqs == list(range(1, seqs[-1] + 1)) and sent - got <= 1 and seqs[-1] >= sent - 1, \
        (sent, got, sorted(set(range(1, sent + 1)) - set(seqs))[:20])
