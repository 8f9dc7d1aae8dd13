"""A stolen box stays one box (issue 23 section 1): a rooted branch gateway attacks the overlay with what
it legitimately holds, its BGP session to the route reflector and its tunnels.

The attacker runs in b1's own namespace (lab/bgp_attacker.py). Its UPDATEs ride b1's own
session to the reflector, inside b1's ESP tunnel to the hub, exactly where b1's daemon's go (the
daemon keeps running; its session is relayed through the attacker, who adds to it); its VXLAN frames
ride b1's tunnel to b2. b2 and b3 are the victims and the witnesses: every assertion is about their
traffic and their kernel state (bridge FDB, neighbours, routes) or about captures on b1 (what reached
the attacker), plus the attacker's own view of its session.

One lab for the module: three-branch, transport esp, b3 originating 203.0.113.0/24 via b3-h1 (which
holds 203.0.113.1 and .129). Before each test but the first the previous attack is undone: the
attacker's redirect is gone, the route reflector restarts (graceful restart: the gateways forward by
what they hold meanwhile, then take the reflector's fresh view, so whatever the attacker announced
or withdrew disappears) and the hosts talk until every branch again has every other branch's host
where it lives. The MAC mobility storm runs last: a fix may leave b2-h1 frozen at b2.

Each test failed on the code the issue was written against (8cf446a); the symptoms it showed are in
its docstring ("before").
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from scapy.all import rdpcap

from controller.mesh import with_remote_prefixes
from lab import topology
from lab.gateways import Gateways, nsg_argv
from lab.lab import Lab
from lab.stolen_box import (
    Attacker,
    Ping,
    bridge_neighbours,
    bridge_port,
    neighbour,
    ping_loss,
    prefix_routes,
    restart_reflector,
    rr_clients,
    rr_log,
    rr_reasons,
    vxlan_fdb,
)
from lab.topology import CONTROLLER_SYSTEM_IP, Plan
from nsg.dataplane.desired import anycast_mac
from nsg.model import load_config
from nsg.model.config import dump_config
from tests.capture import capture
from tests.conftest import unique_name

BRANCHES = ("b1", "b2", "b3")
VNI = 100
SYS = {b: f"198.19.255.{i}" for i, b in enumerate(BRANCHES, start=1)}  # lab/topology.py
HOST_IP = {b: f"198.19.0.{i}1" for i, b in enumerate(BRANCHES, start=1)}
RD = {b: f"{SYS[b]}:{VNI}" for b in BRANCHES}  # what each gateway uses (nsg/evpn/control.py)
GATEWAY_IP = "198.19.0.1"  # the tenant subnet's gateway, at every branch, with one anycast MAC
PREFIX, INSIDE = "203.0.113.0/24", ("203.0.113.1", "203.0.113.129")  # b3's, via b3-h1
ZERO_MAC = "00:00:00:00:00:00"
ATTACKER_MAC = "02:66:66:66:66:66"
NFT_TABLE = "nsgattack"  # the attacker's redirect in b1 (bgp_attacker.NFT_TABLE)
MAX_LOSS = 10.0  # percent of pings a victim may lose while an attack goes on


# --- the lab ----------------------------------------------------------------------------------------

@dataclass
class Site:
    lab: Lab
    plan: Plan
    gws: Gateways
    macs: dict[str, str]  # branch -> the MAC of its host bN-h1
    dirty: bool = False  # an attack ran since the last restore
    rr_log_at: int = 0  # where the reflector's log stood when the current test began


@pytest.fixture(scope="module")
def site():
    lab = Lab(unique_name())
    try:
        plan = lab.up(topology.load("three-branch"))
        gws = Gateways(lab, plan, transport="esp")
        gws.write_configs()
        cfg_path = gws.config_path("b3")  # b3 originates a prefix of its own (type 5)
        cfg = json.loads(cfg_path.read_text())
        cfg["evpn"]["prefixes"] = [{"prefix": PREFIX, "via": HOST_IP["b3"]}]
        cfg_path.write_text(json.dumps(cfg))
        # the others accept b3's prefix only from b3 (evpn.remote_prefixes, as the controller renders it)
        names = [g.name for g in plan.gateways]
        for name, c in with_remote_prefixes({n: load_config(gws.config_path(n)) for n in names}).items():
            gws.config_path(name).write_text(dump_config(c))
        for addr in INSIDE:
            lab.run("b3-h1", "ip", "addr", "add", f"{addr}/32", "dev", "lo")
        for g in BRANCHES:
            gws.start(g)
        for g in BRANCHES:
            gws.wait_tunnels(g, timeout=60)
        macs = {b: json.loads(lab.run(f"{b}-h1", "ip", "-j", "link", "show", "eth0").stdout)[0]["address"]
                for b in BRANCHES}
        s = Site(lab, plan, gws, macs)
        _converge(s)
        yield s
    finally:
        lab.down()


@pytest.fixture
def box(site):
    """The lab as the previous attack left it, put right first."""
    if site.dirty:
        _restore(site)
    site.dirty = True
    log = rr_log(site.lab)
    site.rr_log_at = log.stat().st_size if log.exists() else 0
    return site


def _restore(s: Site) -> None:
    s.lab.run("b1", "nft", "delete", "table", "ip", NFT_TABLE, check=False)  # if the attacker died early
    restart_reflector(s.lab)
    for b in BRANCHES:
        s.lab.run(f"{b}-h1", "ip", "neigh", "flush", "all")  # what a forged ARP may have left
    # every branch back with the new reflector, and its End-of-RIB taken (no stale route left): until
    # then the gateways forward by what they kept, which the kernel check below cannot tell apart
    deadline = time.monotonic() + 40
    while (clients := rr_clients(s.lab)) != set(SYS.values()) or any(_stale(s, b) for b in BRANCHES):
        assert time.monotonic() < deadline, f"the branches did not come back to the reflector: {clients}"
        time.sleep(0.2)
    _converge(s)


def _refused(s: Site) -> set[str]:
    """What the reflector refused from b1 since the test began: the reasons of controller/rr_check.py."""
    return rr_reasons(rr_log(s.lab), s.rr_log_at, SYS["b1"])


def _stale(s: Site, branch: str) -> bool:
    shown = s.lab.run(branch, *nsg_argv("show", "evpn", "--json", "--state-dir", str(s.gws.state_dir(branch))),
                      check=False)
    return shown.returncode != 0 or any(r.get("stale") for r in json.loads(shown.stdout).get("received", []))


def _converge(s: Site, timeout: float = 40) -> None:
    """Until each branch has a flood entry toward each other branch, each other branch's host MAC
    behind that branch, its MAC+IP neighbour entry, and b2 routes b3's prefix via b3-h1."""
    deadline = time.monotonic() + timeout
    while True:
        problems = _problems(s)
        if not problems:
            return
        assert time.monotonic() < deadline, "the lab did not converge:\n" + "\n".join(problems)
        for b in BRANCHES:  # hosts talk, gateways resolve their own host (its MAC+IP route)
            for o in BRANCHES:
                if o != b:
                    s.lab.run(f"{b}-h1", "ping", "-c1", "-W1", HOST_IP[o], check=False)
            s.lab.run(b, "ping", "-c1", "-W1", HOST_IP[b], check=False)
        time.sleep(0.3)


def _problems(s: Site) -> list[str]:
    out = []
    for g in BRANCHES:
        fdb = vxlan_fdb(s.lab, g)
        neigh = bridge_neighbours(s.lab, g)
        for o in BRANCHES:
            if o == g:
                continue
            if SYS[o] not in fdb.get(ZERO_MAC, set()):
                out.append(f"{g}: no flood entry toward {o}")
            if fdb.get(s.macs[o]) != {SYS[o]}:
                out.append(f"{g}: {o}-h1's MAC -> {fdb.get(s.macs[o])}")
            if neigh.get(HOST_IP[o]) != s.macs[o]:
                out.append(f"{g}: neighbour {HOST_IP[o]} -> {neigh.get(HOST_IP[o])}")
    if prefix_routes(s.lab, "b2") != {PREFIX: HOST_IP["b3"]}:
        out.append(f"b2: prefix routes {prefix_routes(s.lab, 'b2')}")
    return out


def _frames(pcap: Path) -> int:
    return len(rdpcap(str(pcap))) if pcap.exists() and pcap.stat().st_size else 0


def _established(att: Attacker) -> None:
    """A route attack proves something only over an established session."""
    if not att.wait("established", 20):
        pytest.fail(f"the attacker got no session over b1's own: {att.finish()}")


# --- the findings ---------------------------------------------------------------------------------------

def test_b_a_copy_of_another_sites_mac_does_not_move_it_at_a_third_site(box):
    """(b) b1 announces copies of b2's routes for b2-h1 (MAC and MAC+IP, b2's RD, sequence number 0,
    next hop b1) every 500 ms: b3 must keep b2-h1 behind b2 and b3-h1's pings to b2-h1 keep arriving;
    b2 keeps b2-h1 home.

    Before: the first copy tied with b2's routes and won on the lower next hop (RFC 7432 15.1), so b2
    gave b2-h1 up and came back with sequence number 1; from then on each copy silently replaced b2's
    route at b3 (the same NLRI from the same reflector: no comparison at all) while b2, its own number
    being higher, saw nothing to contest: b3 sent b2-h1's traffic to b1 (FDB -> 198.19.255.1 in 3 of 4
    samples, b2 itself pointing b2-h1 at b1 in 2), 57-92% of b3-h1's 60 pings lost."""
    m2 = box.macs["b2"]
    copy = {"type": 2, "mac": m2, "rd": RD["b2"]}
    sc = {"steps": [{"announce": [copy, {**copy, "ip": HOST_IP["b2"]}], "every_ms": 500, "for_s": 6}],
          "linger_s": 0.3}
    with Attacker(box.lab, sc) as att:
        _established(att)
        with Ping(box.lab, "b3-h1", HOST_IP["b2"], count=60) as ping:
            samples = []
            for _ in range(4):
                time.sleep(1.3)
                samples.append((vxlan_fdb(box.lab, "b3").get(m2), bridge_port(box.lab, "b2", m2)))
            loss, line = ping.loss()
        res = att.finish()
    print(f"b3 -> b2-h1 while b1 announces copies: {line}; (b3 FDB, b2 port) samples {samples}; attacker {res}")
    assert all(b3 == {SYS["b2"]} and b2 == "lan0" for b3, b2 in samples), samples
    assert loss <= MAX_LOSS, line
    assert {"foreign-rd"} <= _refused(box)  # the reflector refused it


def test_c1_withdrawals_of_another_sites_routes_change_nothing(box):
    """(c) b1 withdraws b3's type-3 route and b3-h1's MAC and MAC+IP routes (b3's RD): b2 keeps its
    flood entry toward b3 and b3-h1's MAC entry, and b2-h1 keeps reaching b3-h1.

    Before: the reflector passed the withdrawals on to everyone: b2 lost its flood entry toward b3
    and b3-h1's MAC entry (its vx-100 FDB held only b1's), b2-h1 -> b3-h1 lost 100%, and stayed so
    after the attacker left (until the reflector restarted)."""
    m3 = box.macs["b3"]
    routes = [{"type": 3, "rd": RD["b3"], "originator": SYS["b3"]}, {"type": 2, "rd": RD["b3"], "mac": m3},
              {"type": 2, "rd": RD["b3"], "mac": m3, "ip": HOST_IP["b3"]}]
    with Attacker(box.lab, {"steps": [{"withdraw": routes}], "linger_s": 4}) as att:
        _established(att)
        assert att.wait("steps_done")
        time.sleep(1)
        fdb = vxlan_fdb(box.lab, "b2")
        loss = ping_loss(box.lab, "b2-h1", HOST_IP["b3"])
        res = att.finish()
    print(f"after b1 withdrew b3's routes: b2 vx-100 FDB {fdb}; b2-h1 -> b3-h1 loss {loss}%; attacker {res}")
    assert SYS["b3"] in fdb.get(ZERO_MAC, set()) and fdb.get(m3) == {SYS["b3"]}, fdb
    assert loss <= 20, f"b2-h1 -> b3-h1 lost {loss}%"
    assert {"withdraw-not-announced"} <= _refused(box)  # the reflector refused it


def test_c2_announce_then_withdraw_does_not_flood_a_hosts_traffic_to_the_attacker(box, tmp_path):
    """(c) b1 announces copies of b2's routes for b2-h1 (MAC and MAC+IP, b2's RD) and withdraws them:
    b3 still sends b2-h1's traffic to b2 alone; nothing for b2-h1 reaches b1 (capture on b1's vx-100).

    Before: the withdrawal of the copies took b2's own routes away at b3 (the same NLRI): b3 had no
    entry for b2-h1 and flooded b3-h1's pings to it to every VTEP, b1 included (all 5 echo requests
    captured on b1's vx-100)."""
    m2 = box.macs["b2"]
    copy = {"type": 2, "rd": RD["b2"], "mac": m2}
    both = [copy, {**copy, "ip": HOST_IP["b2"]}]
    sc = {"steps": [{"announce": both}, {"sleep": 0.3}, {"withdraw": both}], "linger_s": 4}
    pcap = tmp_path / "b1-vx.pcap"
    with Attacker(box.lab, sc) as att:
        _established(att)
        assert att.wait("steps_done")
        time.sleep(0.5)
        with capture(box.lab.ns("b1"), f"vx-{VNI}", pcap, "ether", "dst", m2):
            loss = ping_loss(box.lab, "b3-h1", HOST_IP["b2"])
        b3 = vxlan_fdb(box.lab, "b3").get(m2)
        res = att.finish()
    seen = _frames(pcap)
    print(f"after announce+withdraw of copies: b3 FDB for b2-h1 {b3}; frames for b2-h1 at b1: {seen}; "
          f"b3-h1 -> b2-h1 loss {loss}%; attacker {res}")
    assert seen == 0, f"b1 received {seen} frames addressed to b2-h1"
    assert b3 == {SYS["b2"]}, b3
    assert loss <= 20
    assert {"foreign-rd"} <= _refused(box)  # the reflector refused it


def test_d_mac_ip_route_for_another_sites_host_changes_no_neighbour(box):
    """(d) b1 announces a MAC+IP route binding b2-h1's IP to a MAC of its own (sequence 1000): b2's
    neighbour entry for its own host is unchanged, b3's bridge does not answer ARP for b2-h1 with the
    attacker's MAC, and b3-h1 still reaches b2-h1.

    Before: b2 installed 198.19.0.21 -> the attacker's MAC as a PERMANENT neighbour over its own
    host's entry; b3 too, and answered b3-h1's ARP with it (ARP suppression): b3-h1's ping went to b1
    (100% lost)."""
    foreign = "02:66:66:00:00:21"
    sc = {"steps": [{"announce": [{"type": 2, "mac": foreign, "ip": HOST_IP["b2"], "seq": 1000}]}], "linger_s": 5}
    with Attacker(box.lab, sc) as att:
        _established(att)
        assert att.wait("steps_done")
        time.sleep(1)
        at_b2 = neighbour(box.lab, "b2", HOST_IP["b2"], f"br-{VNI}")
        at_b3 = neighbour(box.lab, "b3", HOST_IP["b2"], f"br-{VNI}")
        box.lab.run("b3-h1", "ip", "neigh", "flush", HOST_IP["b2"])
        loss = ping_loss(box.lab, "b3-h1", HOST_IP["b2"], count=3)
        answered = neighbour(box.lab, "b3-h1", HOST_IP["b2"], "eth0")
        res = att.finish()
    print(f"b2-h1's IP: at b2 -> {at_b2}, at b3 -> {at_b3}, b3-h1 learned {answered}, loss {loss}%; "
          f"real MAC {box.macs['b2']}; attacker {res}")
    assert at_b2 == box.macs["b2"]
    assert at_b3 in (box.macs["b2"], None)
    assert answered == box.macs["b2"]
    assert loss <= 34  # one of three
    assert {"ip-in-use-elsewhere"} <= _refused(box)  # the reflector refused it


def test_e_third_party_next_hops_and_originator_ids_are_installed_nowhere(box):
    """(e) b1 announces MACs with another gateway's next hop (b3's system IP), the hub's, and with
    ORIGINATOR_ID / CLUSTER_LIST of its choosing: no branch installs any of them.

    Before: b2 sent :01 and :03 to b3 and :02 to the hub (FDB entries); b3 sent :02 to the hub and
    :04 (ORIGINATOR_ID = b2's) to b1 — the reflector kept the client's ORIGINATOR_ID and so hid :04
    from b2, the owner of that id."""
    macs = {f"02:66:66:00:0e:0{i}": spec for i, spec in enumerate([
        {"next_hop": SYS["b3"]},
        {"next_hop": CONTROLLER_SYSTEM_IP},
        {"next_hop": SYS["b3"], "originator_id": SYS["b3"], "cluster_list": [SYS["b3"]]},
        {"originator_id": SYS["b2"]},
    ], start=1)}
    sc = {"steps": [{"announce": [{"type": 2, "mac": m, **spec} for m, spec in macs.items()]}], "linger_s": 3}
    with Attacker(box.lab, sc) as att:
        _established(att)
        assert att.wait("steps_done")
        time.sleep(1)
        installed = {g: {m: d for m, d in vxlan_fdb(box.lab, g).items() if m in macs} for g in ("b2", "b3")}
        res = att.finish()
    print(f"installed: {installed}; attacker {res}")
    assert installed == {"b2": {}, "b3": {}}
    assert {"foreign-next-hop", "originator-id-supplied"} <= _refused(box)  # the reflector refused it


def test_f_type5_prefixes_not_owned_are_not_installed(box, tmp_path):
    """(f) b1 announces type-5 routes via b1-h1: b3's prefix 203.0.113.0/24, a more-specific
    203.0.113.128/25, and 0.0.0.0/1 + 128.0.0.0/2 (the default route in two halves): b2 installs none
    of them and b2-h1's traffic to 203.0.113.1 and .129 reaches b3-h1 without passing b1.

    Before: b2 routed all four via 198.19.0.11 (the lower next hop won b3's own prefix too); b2-h1's
    pings to 203.0.113.x went to b1-h1 (captured on b1's vx-100; they still arrived only because the
    lab hosts forward)."""
    via = HOST_IP["b1"]
    prefixes = [PREFIX, "203.0.113.128/25", "0.0.0.0/1", "128.0.0.0/2"]
    sc = {"steps": [{"announce": [{"type": 5, "prefix": p, "gateway": via} for p in prefixes]}], "linger_s": 4}
    pcap = tmp_path / "b1-vx.pcap"
    with Attacker(box.lab, sc) as att:
        _established(att)
        assert att.wait("steps_done")
        time.sleep(1)
        routes = prefix_routes(box.lab, "b2")
        with capture(box.lab.ns("b1"), f"vx-{VNI}", pcap, "ip", "net", "203.0.113.0/24"):
            loss = [ping_loss(box.lab, "b2-h1", a, count=2) for a in INSIDE]
        res = att.finish()
    seen = _frames(pcap)
    print(f"b2's prefix routes {routes}; packets for 203.0.113.0/24 at b1: {seen}; loss {loss}; attacker {res}")
    assert routes == {PREFIX: HOST_IP["b3"]}
    assert seen == 0
    assert loss == [0.0, 0.0]
    assert {"default-or-covering-prefix", "foreign-prefix"} <= _refused(box)


def test_g_a_session_with_another_gateways_router_id_is_refused(box):
    """(g) b1's session opens with b2's router id (its OPEN changed on the way) and announces b2-h1's
    MAC one sequence number up: the reflector refuses the session; b3 keeps b2-h1 behind b2 and b3-h1
    keeps reaching it; b2 and b3 keep each other's routes.

    Before: the session was Established with router id 198.19.255.2; the reflector, trusting it as the
    originator, hid b1's routes from b2, so b2 never contested: b3 sent b2-h1's traffic to b1 (56-58%
    of b3-h1's 50 pings lost, b3's FDB -> 198.19.255.1) while b2 kept b2-h1 at home."""
    m2, m3 = box.macs["b2"], box.macs["b3"]
    sc = {"open": {"router_id": SYS["b2"]}, "wait_s": 5,
          "steps": [{"announce": [{"type": 2, "mac": m2, "seq": 1}]}], "linger_s": 3}
    with Attacker(box.lab, sc) as att, Ping(box.lab, "b3-h1", HOST_IP["b2"], count=50) as ping:
        att.wait("established", 6)
        time.sleep(2.5)
        at_b3 = vxlan_fdb(box.lab, "b3").get(m2)
        res = att.finish()
        loss, line = ping.loss()
    both = (vxlan_fdb(box.lab, "b2").get(m3), vxlan_fdb(box.lab, "b3").get(m2))
    print(f"b3 FDB for b2-h1 during: {at_b3}; b3-h1 -> b2-h1: {line}; b2/b3 see each other: {both}; attacker {res}")
    assert at_b3 == {SYS["b2"]}, at_b3
    assert loss <= MAX_LOSS, line
    assert both == ({SYS["b3"]}, {SYS["b2"]})
    assert not res["established"], f"the reflector took b1's session with b2's router id: {res}"
    assert {"bad-bgp-identifier"} <= _refused(box)  # the reflector refused it


def test_h_hold_time_zero_is_refused(box):
    """(h) b1 opens a session of its own with hold time 0 (a session that never times out): refused.

    Before: Established (hold time 0 accepted, no keepalives either way) until b1's daemon took the
    address's slot back a second later (Cease 6/2 to the attacker)."""
    with Attacker(box.lab, {"mode": "session", "hold_time": 0, "wait_s": 5, "steps": [], "linger_s": 2}) as att:
        res = att.finish()
    print(f"attacker {res}")
    assert not res["established"], f"the reflector took a session with hold time 0: {res}"
    assert {"hold-time-refused"} <= _refused(box)  # the reflector refused it


ARP_SCRIPT = """
import socket, sys
from scapy.all import ARP, Ether, raw
src, dst, claim, gateway, target_ip, target_mac, vtep, vni = sys.argv[1:9]
inner = raw(Ether(src=src, dst=dst) / ARP(op=2, hwsrc=claim, psrc=gateway, hwdst=target_mac, pdst=target_ip))
header = bytes((0x08, 0, 0, 0)) + int(vni).to_bytes(3, "big") + b"\\0"  # RFC 7348 section 5: I flag, VNI
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[9], 0))  # b1's system IP: the route to b2's leads into b1's tunnel
for _ in range(3):
    s.sendto(header + inner, (vtep, 4789))
"""


def test_i_forged_gateway_arp_through_the_tunnel_changes_no_host(box):
    """(i) b1 sends VXLAN frames inside its own tunnel to b2 (VNI 100, from b1's system IP) carrying an
    ARP reply "198.19.0.1 is-at <attacker>": once from b2-h1's own MAC to broadcast, once from the
    attacker's MAC to b2-h1. b2-h1's entry for its gateway keeps the anycast gateway MAC and b2 keeps
    b2-h1 on its LAN port.

    Before: b2 passed both to b2-h1, which took the attacker's MAC for its gateway (02:66:66:66:66:66,
    STALE after the broadcast, REACHABLE after the unicast one): its off-subnet traffic would go to an
    unknown MAC, flooded to every VTEP. Only an ARP exchange with the real gateway (b2's probe of
    b2-h1) puts the entry right again, by chance."""
    m2 = box.macs["b2"]
    # b2-h1 talks to its gateway: b2's neighbour entry for b2-h1, used for the replies, goes DELAY and
    # the kernel probes b2-h1 5 s later, an ARP request that would put b2-h1's entry right again by
    # chance. Wait for that probe: b2's entry then stays REACHABLE for the rest of the test.
    assert ping_loss(box.lab, "b2-h1", GATEWAY_IP, count=1) == 0
    time.sleep(6)
    seen = {}
    for name, (src, dst) in {"from b2-h1's MAC, broadcast": (m2, "ff:ff:ff:ff:ff:ff"),
                             "from the attacker's MAC, to b2-h1": (ATTACKER_MAC, m2)}.items():
        box.lab.run("b2-h1", "ip", "neigh", "flush", GATEWAY_IP)
        assert ping_loss(box.lab, "b2-h1", GATEWAY_IP, count=1) == 0
        time.sleep(1.2)  # past the ARP locktime (1 s): from now on a reply may replace the entry
        box.lab.run("b1", sys.executable, "-c", ARP_SCRIPT, src, dst, ATTACKER_MAC, GATEWAY_IP, HOST_IP["b2"],
                    m2, SYS["b2"], str(VNI), SYS["b1"])
        time.sleep(0.3)
        seen[name] = (neighbour(box.lab, "b2-h1", GATEWAY_IP, "eth0"), bridge_port(box.lab, "b2", m2))
    print(f"b2-h1's gateway entry and b2's port for b2-h1 after each frame: {seen}")
    assert all(v == (anycast_mac(VNI), "lan0") for v in seen.values()), seen
    # the reflector cannot see a frame inside VXLAN: b2's port guard dropped both (table bridge nsg_port)
    dropped = box.gws.status("b2")["port_guard"]["ports"]["vx-100"]["dropped"]
    assert dropped["gateway_arp"]["packets"] >= 2, dropped


def test_a_mac_mobility_storm_does_not_take_a_host_away(box):
    """(a) b1 announces b2-h1's MAC under its own RD with an ever higher sequence number (one above
    what b2 last said), every 100 ms for 20 s, while b3-h1 pings b2-h1: in the second half of the storm
    b3 has b2-h1 behind b2 and b2 has it on its LAN port, and b3-h1 loses few pings. (Last in the
    module: a fix may freeze b2-h1 at b2, which the next restore would not undo.)

    Before: each announcement won (RFC 7432 15.1): b2 gave b2-h1 up ("moved_away" 2-6) and pointed it
    at b1 itself; in every sample b3 had b2-h1 behind b1 and b2 had it on vx-100; b3-h1 lost 97.5-99.5%
    of its 200 pings."""
    m2 = box.macs["b2"]
    sc = {"steps": [{"announce": [{"type": 2, "mac": m2, "seq": 1}], "every_ms": 100, "for_s": 20, "seq_step": 1,
                     "outbid": True}], "linger_s": 0.3}
    with Attacker(box.lab, sc) as att:
        _established(att)
        t0 = time.monotonic()
        with Ping(box.lab, "b3-h1", HOST_IP["b2"], count=200) as ping:
            samples = []
            for at in (10, 13, 16, 19):
                time.sleep(max(0.0, t0 + at - time.monotonic()))
                samples.append((vxlan_fdb(box.lab, "b3").get(m2), bridge_port(box.lab, "b2", m2)))
            loss, line = ping.loss()
        res = att.finish()
    counters = (box.gws.status("b2").get("evpn") or {}).get("counters")
    print(f"b3-h1 -> b2-h1 during the storm: {line}; (b3 FDB, b2 port) samples {samples}; b2 EVPN counters "
          f"{counters}; attacker sent {res['sent']}, saw {res['received']}")
    assert all(b3 == {SYS["b2"]} and b2 == "lan0" for b3, b2 in samples), samples
    assert loss <= MAX_LOSS, line
    assert {"mobility-sequence-jump"} <= _refused(box)  # the reflector refused it
