"""Received routes through the core: a peer's UPDATEs in, the RIB (as the kernel would get it) and
the peer's Adj-RIB-In out. Each case is a list of (peer, UPDATE) steps."""

from __future__ import annotations

import pytest

from nsg.evpn.effects import Effects
from tests.unit.evpn_routes.builders import (
    M1,
    M2,
    RR1,
    RR2,
    SYSIP,
    A,
    B,
    broken,
    core,
    eor,
    imet,
    installed,
    mac,
    unmac,
)

X = "198.19.0.9"

# (steps, the kernel's remote entries afterwards, routes held in RR1's Adj-RIB-In, routes refused)
CASES = {
    "announced: installed": ([(RR1, mac(A))], {(M1, A)}, 1, 0),
    "withdrawn by its NLRI alone": ([(RR1, mac(A)), (RR1, unmac(A))], set(), 0, 0),
    "withdrawal of a route never announced": ([(RR1, mac(A)), (RR1, unmac(B))], {(M1, A)}, 1, 0),
    "withdrawal from another peer leaves ours": ([(RR1, mac(A)), (RR2, unmac(A))], {(M1, A)}, 1, 0),
    # RFC 4271 9.1.4: the same NLRI (A's RD, M1) again with another next hop replaces the old path
    "implicit withdraw: new next hop": ([(RR1, mac(A)), (RR1, mac(B, rd_of=A))], {(M1, B)}, 1, 0),
    "implicit withdraw: new sequence number": ([(RR1, mac(A, 5)), (RR1, mac(B, 1)), (RR1, mac(A, 0))],
                                               {(M1, B)}, 2, 0),
    "announced twice: one path": ([(RR1, mac(A)), (RR1, mac(A)), (RR1, unmac(A))], set(), 0, 0),
    "two MACs, one withdrawn": ([(RR1, mac(A)), (RR1, mac(A, m=M2)), (RR1, unmac(A))], {(M2, A)}, 1, 0),
    # RFC 7606 treat-as-withdraw: what the broken UPDATE carried goes, not only what it announced
    "treat-as-withdraw": ([(RR1, mac(A)), (RR1, broken(A))], set(), 0, 0),
    "type-3: flood entry": ([(RR1, imet(A))], {("flood", A)}, 1, 0),
    "type-3 without PMSI: VNI unknown, ignored": ([(RR1, imet(A, pmsi=False))], set(), 0, 0),
    "own route reflected back: no entry": ([(RR1, mac(SYSIP))], set(), 1, 0),
    "End-of-RIB without a restart: nothing goes": ([(RR1, mac(A)), (RR1, eor())], {(M1, A)}, 1, 0),
    # routes the kernel would refuse, or that would become flood entries, never reach the RIB
    "next hop 0.0.0.0 refused": ([(RR1, mac("0.0.0.0"))], set(), 0, 1),
    "multicast next hop refused": ([(RR1, mac("224.0.0.9"))], set(), 0, 1),
    "loopback next hop refused": ([(RR1, mac("127.0.0.1"))], set(), 0, 1),
    "broadcast next hop refused": ([(RR1, mac("255.255.255.255"))], set(), 0, 1),
    "all-zero MAC refused": ([(RR1, mac(A, m="00:00:00:00:00:00"))], set(), 0, 1),
    "multicast MAC refused": ([(RR1, mac(A, m="01:00:5e:00:00:01"))], set(), 0, 1),
    "refused replacement: the old path goes too": ([(RR1, mac(A)), (RR1, mac("0.0.0.0", rd_of=A))], set(), 0, 1),
    "refused route, good one in the same stream": ([(RR1, mac("0.0.0.0", m=M2)), (RR1, mac(A))], {(M1, A)}, 1, 1),
}


@pytest.mark.parametrize(("steps", "entries", "held", "refused"), list(CASES.values()), ids=list(CASES))
def test_received_routes(steps, entries, held, refused):
    c = core()
    for peer, result in steps:
        c.received(peer, result, 0.0)
    assert installed(c) == entries
    assert (len(c.peers[RR1].routes) if RR1 in c.peers else 0) == held
    assert c.counters["routes_refused"] == refused


def test_mac_ip_route_becomes_a_neighbour_entry_and_goes_with_its_withdrawal():
    c = core()
    c.received(RR1, mac(A, ip=X), 0.0)
    assert {(n.ip, n.mac) for n in c.neighbors()} == {(X, M1)}
    c.received(RR1, unmac(A, ip=X), 0.0)
    assert c.neighbors() == frozenset()


def test_effects_of_received_routes():
    """Remote routes for MACs that are not ours: nothing to send, the kernel view changed."""
    c = core()
    eff = c.received(RR1, mac(A), 0.0)
    assert eff == Effects(changed=True)
    assert c.received(RR1, eor(), 0.0) == Effects()


def test_show_lists_each_peers_routes_and_marks_the_best():
    c = core()
    c.received(RR1, mac(A, 0), 0.0)
    c.received(RR2, mac(B, 1), 0.0)
    got = [(r["peer"], r["vtep"], r["seq"], r["best"]) for r in c.show()["received"]]
    assert got == [(RR1, A, 0, False), (RR2, B, 1, True)]


def test_a_route_whose_label_changes_moves_to_the_new_vni():
    """The same NLRI (RD, tag, MAC) announced again with another VNI in its label: the path leaves
    the old VNI (a BGP route is replaced by its new version, RFC 4271 section 9.1.4; the Adj-RIB-In
    finds the old path by the route's identity)."""
    from bgp.codec import Update, UpdateResult
    from bgp.constants import ErrorAction
    from bgp.evpn_nlri import encap_vxlan, mac_ip_route, route_target
    from tests.unit.evpn_routes.builders import rd

    c = core(vnis=(100, 200))
    for vni in (100, 200):
        upd = Update.for_evpn((mac_ip_route(rd(A), M1, None, vni),), A, (route_target(65000, vni), encap_vxlan()))
        c.received(RR1, UpdateResult(ErrorAction.NONE, update=upd), 0.0)
    assert {(f.ifname, f.dst) for f in c.fdb() if not f.master} == {("vx-200", A)}
    assert c.rib.best(100, M1) is None and len(c.peers[RR1].routes) == 1
