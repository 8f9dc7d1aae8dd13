"""MAC mobility against GoBGP (issue 13 section 5): a host's MAC known through several type-2 routes.

Two gobgpd share one namespace: ``go`` is the gateway's BGP peer and a route reflector; ``pe`` is a
client of it that plays another site's PE (it only connects out, from its own address on lo). Routes
added with the gobgp CLI get their MAC Mobility sequence numbers from GoBGP itself (RFC 7432 15.1 as
GoBGP does it: a MAC added while another speaker's route for it is known gets that route's sequence
number plus one, a route without the community counting as -1), and a gobgpd that receives a route
outbidding one it originated withdraws its own (RFC 7432 15.1, the old site's side of a move). So
every move below is numbered, and every old route withdrawn, by GoBGP, not by this test:

  B (no community) -> C (seq 0; B withdrawn by GoBGP after C's route went out) -> D (seq 1; C
  withdrawn) -> the host shows up on the gateway's LAN (we announce seq 2; D withdrawn) -> E (seq 3;
  we withdraw ours: the MAC moved away from us again).

After every withdrawal of an older route the gateway's kernel FDB still points at the newest VTEP."""

from __future__ import annotations

import json
import sys
import time

from tests.conftest import sh
from tests.interop import gobgp as gobgp_mod
from tests.interop.frr import bgp_pair
from tests.interop.gobgp import GoBgp, GoNeighbor, mac_mobility, next_hop
from tests.netns.daemon_util import NsgProcess
from tests.peers import require_peer, require_root

pytestmark = [
    require_root("network namespaces"),
    require_peer(gobgp_mod.missing()),
]

ASN, VNI, SYSIP = 65000, 100, "198.19.255.1"
PE = "198.18.71.1"  # the second gobgpd's address (on lo of the GoBGP namespace)
VTEP_B, VTEP_C, VTEP_D, VTEP_E = "198.18.70.77", "198.18.70.66", "198.18.70.88", "198.18.70.55"
HOST = "02:00:5e:00:53:42"

SEND_FRAME = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
s.send(b"\\xff" * 6 + bytes.fromhex(sys.argv[2].replace(":", "")) + b"\\x88\\xb5" + bytes(46))
"""


def kernel_fdb(ns: str) -> set[tuple[str, str]]:
    out = json.loads(sh("ip", "netns", "exec", ns, "bridge", "-j", "fdb", "show", "dev", f"vx-{VNI}") or "[]")
    return {(f["mac"], f["dst"]) for f in out if f.get("dst")}


def host_at(ns: str) -> set[str]:
    return {dst for mac, dst in kernel_fdb(ns) if mac == HOST}


def host_paths(go: GoBgp) -> dict[str, tuple[int, bool] | None]:
    """GoBGP's view of HOST: next hop -> MAC Mobility (sequence, sticky) of that path."""
    return {next_hop(p): mac_mobility(p) for p in go.evpn_rib()
            if p.get("nlri", {}).get("type") == 2 and p["nlri"]["value"].get("mac") == HOST}


def rd(vtep: str) -> str:
    return f"{vtep}:{VNI}"


def wait_for(pred, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def barrier(go: GoBgp, d: NsgProcess, ns: str, n: int) -> None:
    """Make sure the gateway has handled (and applied) everything GoBGP sent so far: one more route,
    for a MAC of its own, sent after them on the same session; once it is in the kernel FDB, so is
    the effect of every UPDATE before it."""
    mac = f"02:00:5e:00:54:{n:02x}"
    go.add_macadv(mac, rd=rd(VTEP_B), rt=f"{ASN}:{VNI}", label=VNI, nexthop=VTEP_B)
    d.wait(lambda s: (mac, VTEP_B) in kernel_fdb(ns), what=f"barrier route {n}")


def test_mac_moves_between_sites_and_the_gateway(tmp_path):
    with bgp_pair() as net:
        go_ns, gw_ns = net.ns
        sh("ip", "-n", go_ns, "addr", "add", f"{PE}/32", "dev", "lo")
        sh("ip", "-n", gw_ns, "link", "add", "name", "lan0", "type", "veth", "peer", "name", "lan0p")
        sh("ip", "-n", gw_ns, "link", "set", "lan0p", "up")
        sh("ip", "-n", gw_ns, "addr", "flush", "dev", net.ifname[1])
        cfg = {"schema_version": 1, "system_ip": SYSIP,
               "uplinks": [{"name": "wan0", "interface": net.ifname[1], "mode": "static",
                            "address": f"{net.addr[1]}/24", "gateway": net.addr[0]}],
               "subnets": [{"name": "corp", "vni": VNI, "cidr": "198.19.0.0/24", "gateway": "198.19.0.1",
                            "ports": ["lan0"]}],
               "evpn": {"asn": ASN, "peers": [{"address": net.addr[0], "asn": ASN}]}}
        (tmp_path / "gw.json").write_text(json.dumps(cfg))
        rr = [GoNeighbor(net.addr[1], ASN, rr_client=True), GoNeighbor(PE, ASN, rr_client=True, passive=True)]
        with GoBgp(go_ns, tmp_path / "go", net.addr[0], ASN, rr) as go, \
                GoBgp(go_ns, tmp_path / "pe", PE, ASN, [GoNeighbor(net.addr[0], ASN, local_address=PE)],
                      api_port=50052, listen_port=-1, name="gobgp-pe") as pe:
            d = NsgProcess(gw_ns, tmp_path / "gw.json", tmp_path / "state")
            try:
                go.wait_established(net.addr[1], timeout=30)
                go.wait_established(PE, timeout=30)
                d.wait(lambda s: any(x["name"] == "lan0" and x["master"] == f"br-{VNI}" for x in s["devices"]),
                       what="lan0 in the bridge")

                # the host behind B (GoBGP adds no MAC Mobility community: sequence number 0)
                go.add_macadv(HOST, rd=rd(VTEP_B), rt=f"{ASN}:{VNI}", label=VNI, nexthop=VTEP_B)
                d.wait(lambda s: host_at(gw_ns) == {VTEP_B}, what="HOST -> B")

                # remote -> remote: the host shows up behind C. GoBGP numbers C's route 0, and the
                # reflector, which originated B's route, withdraws it on seeing C's (RFC 7432 15.1; in
                # which order the two reach the gateway is GoBGP's choice); the MAC must end up at C
                pe.add_macadv(HOST, rd=rd(VTEP_C), rt=f"{ASN}:{VNI}", label=VNI, nexthop=VTEP_C)
                wait_for(lambda: host_paths(go) == {VTEP_C: (0, False)}, "C's route in, B's withdrawn at GoBGP")
                barrier(go, d, gw_ns, 1)
                assert host_at(gw_ns) == {VTEP_C}, "B's withdrawal took the MAC away although C's route stays"

                # and on to D: seq 1 (D's address is higher than C's: only the sequence number makes it
                # win); the PE that had C withdraws its route when D's reaches it, so the gateway gets
                # D's route first and C's withdrawal afterwards: the case of issue 13 section 5
                go.add_macadv(HOST, rd=rd(VTEP_D), rt=f"{ASN}:{VNI}", label=VNI, nexthop=VTEP_D)
                wait_for(lambda: host_paths(go) == {VTEP_D: (1, False)}, "D's route in, C's withdrawn at GoBGP")
                barrier(go, d, gw_ns, 2)
                assert host_at(gw_ns) == {VTEP_D}, "C's withdrawal took the MAC away although D's route stays"

                # remote -> local: a frame from the host on our LAN port; we announce the MAC one above
                # D's route, and GoBGP (D's originator) withdraws D's
                sh("ip", "netns", "exec", gw_ns, sys.executable, "-c", SEND_FRAME, "lan0p", HOST)
                wait_for(lambda: host_paths(go) == {SYSIP: (2, False)}, "our type-2 (seq 2) in, D's withdrawn")
                barrier(go, d, gw_ns, 3)
                assert host_at(gw_ns) == set(), "the MAC is ours, yet still sent toward a remote VTEP"

                # local -> remote: the host moves on to E, which GoBGP numbers above ours: we withdraw
                pe.add_macadv(HOST, rd=rd(VTEP_E), rt=f"{ASN}:{VNI}", label=VNI, nexthop=VTEP_E)
                d.wait(lambda s: host_at(gw_ns) == {VTEP_E}, what="HOST -> E")
                wait_for(lambda: host_paths(go) == {VTEP_E: (3, False)}, "our type-2 withdrawn")
                st = d.status()
                assert st["evpn"]["counters"]["moved_away"] == 1, st["evpn"]
            finally:
                d.stop()
