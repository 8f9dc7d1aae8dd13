"""A MAC known through more than one route (issue 13 section 5): the RIB keeps every received path,
keyed by the advertising peer and the route's NLRI identity (RD, Ethernet tag, MAC, IP), installs
the best by RFC 7432 section 15, and falls back to the next one when the best is withdrawn.

Each case is a sequence of announcements ("+") and withdrawals ("-"); after it the FDB entry of M1,
the neighbour entries and the sequence number a local learn of M1 would use are checked."""

from __future__ import annotations

import pytest

from nsg.dataplane.types import Fdb
from nsg.evpn.rib import EvpnRib, ImetRoute, MacRoute, Neighbor

VNI = 100
A, B, C = "198.19.255.2", "198.19.255.3", "198.19.255.4"  # remote VTEPs, A lowest
RR1, RR2 = "198.18.0.1", "198.18.0.5"  # two BGP peers of the gateway (route reflectors)
M1, M2 = "02:00:00:00:00:01", "02:00:00:00:00:02"
X = "198.19.0.9"


def p(vtep: str, seq: int = 0, *, rd: str | None = None, peer: str = RR1, ip: str | None = None,
      sticky: bool = False, mac: str = M1, vni: int = VNI) -> MacRoute:
    """A path as received: RD type 1 "<vtep>:<vni>" unless told otherwise."""
    return MacRoute(vni, mac, vtep, ip, seq, sticky, rd=rd if rd is not None else f"{vtep}:{vni}", peer=peer)


def run(ops) -> EvpnRib:
    rib = EvpnRib(frozenset({"198.19.255.1"}))
    for op, route in ops:
        if op == "+":
            rib.add(route)
        else:
            rib.withdraw(route)
    return rib


def fdb_of(rib: EvpnRib, mac: str = M1) -> str | None:
    dsts = {f.dst for f in rib.fdb() if f.mac == mac and not f.master}
    assert len(dsts) <= 1, f"{mac} installed toward several VTEPs: {dsts}"
    return next(iter(dsts), None)


# (ops, where M1 goes, next_local_seq for M1)
CASES = {
    # the host moved from A to B (B outbids A); A's withdrawal arrives afterwards
    "remote->remote, older withdrawn first": ([("+", p(A, 0)), ("+", p(B, 1)), ("-", p(A, 0))], B, 2),
    # the same move, then B's route goes first (the host left B, or B's withdrawal overtook A's)
    "remote->remote, newer withdrawn first": ([("+", p(A, 0)), ("+", p(B, 1)), ("-", p(B, 1))], A, 1),
    "move seen in reverse order (new route first)": ([("+", p(B, 1)), ("+", p(A, 0))], B, 2),
    # a move across three sites; the intermediate route is withdrawn last
    "A->B->C, withdrawals A then B": ([("+", p(A, 0)), ("+", p(B, 1)), ("+", p(C, 2)), ("-", p(A, 0)),
                                      ("-", p(B, 1))], C, 3),
    # RFC 7432 15.1: equal sequence numbers: the lowest VTEP address, whatever the arrival order
    "equal seq: lowest VTEP wins": ([("+", p(C, 3)), ("+", p(A, 3)), ("+", p(B, 3))], A, 4),
    "equal seq: fallback to the next lowest": ([("+", p(C, 3)), ("+", p(A, 3)), ("+", p(B, 3)), ("-", p(A, 3))],
                                               B, 4),
    # RFC 7432 15.2: a static (sticky) MAC does not move, whatever the sequence numbers say
    "sticky beats a higher seq": ([("+", p(C, 0, sticky=True)), ("+", p(A, 5))], C, 6),
    "sticky beats a higher seq, either order": ([("+", p(A, 5)), ("+", p(C, 0, sticky=True))], C, 6),
    "sticky withdrawn: fallback to the mobile path": ([("+", p(C, 0, sticky=True)), ("+", p(A, 5)),
                                                       ("-", p(C, 0, sticky=True))], A, 6),
    "two sticky paths: seq, then lowest VTEP": ([("+", p(C, 0, sticky=True)), ("+", p(B, 0, sticky=True))], B, 1),
    # one VTEP advertising the MAC under two RDs (e.g. its RD changed): one withdrawn, the other stays
    "same VTEP, two RDs": ([("+", p(A, 0, rd=f"{A}:1")), ("+", p(A, 0, rd=f"{A}:2")), ("-", p(A, 0, rd=f"{A}:1"))],
                           A, 1),
    # the same route reflected by two peers: one peer's withdrawal leaves the other's path
    "same route from two peers": ([("+", p(A, 2, peer=RR1)), ("+", p(A, 2, peer=RR2)), ("-", p(A, 2, peer=RR1))],
                                  A, 3),
    "same route from two peers, both withdrawn": ([("+", p(A, 2, peer=RR1)), ("+", p(A, 2, peer=RR2)),
                                                   ("-", p(A, 2, peer=RR1)), ("-", p(A, 2, peer=RR2))], None, 0),
    # a withdrawal names the NLRI only (no next hop, no attributes): that is enough to find the path
    "withdrawal by NLRI identity": ([("+", p(A, 0)), ("+", p(B, 1)),
                                     ("-", MacRoute(VNI, M1, "0.0.0.0", rd=f"{B}:{VNI}", peer=RR1))], A, 1),
    # the same NLRI announced again by its peer: an implicit withdraw of the previous path
    "re-announcement replaces": ([("+", p(A, 0)), ("+", p(B, 1)), ("+", p(A, 4))], A, 5),
    "re-announcement with a lower seq": ([("+", p(A, 4)), ("+", p(B, 1)), ("+", p(A, 0))], B, 2),
    # a remote route of ours reflected back is never a path
    "own route reflected back": ([("+", p("198.19.255.1", 7)), ("+", p(A, 0))], A, 1),
    "withdrawal of an unknown path": ([("+", p(A, 0)), ("-", p(B, 1))], A, 1),
}


@pytest.mark.parametrize(("ops", "where", "next_seq"), list(CASES.values()), ids=list(CASES))
def test_best_path_and_fallback(ops, where, next_seq):
    rib = run(ops)
    assert fdb_of(rib) == where
    assert (Fdb(f"vx-{VNI}", M1, "", master=True) in rib.fdb()) == (where is not None)
    assert rib.next_local_seq(VNI, M1) == next_seq
    best = rib.best(VNI, M1)
    assert (best.vtep if best else None) == where


# MAC+IP paths: (ops, expected neighbour entries, where M1 goes)
NEIGH_CASES = {
    # the host (MAC and IP) moved A -> B; A's MAC and MAC+IP routes are withdrawn afterwards
    "MAC+IP move, older withdrawn": (
        [("+", p(A, 0)), ("+", p(A, 0, ip=X)), ("+", p(B, 1)), ("+", p(B, 1, ip=X)),
         ("-", p(A, 0, ip=X)), ("-", p(A, 0))], {Neighbor("br-100", X, M1)}, B),
    "MAC+IP move, newer withdrawn": (
        [("+", p(A, 0)), ("+", p(A, 0, ip=X)), ("+", p(B, 1)), ("+", p(B, 1, ip=X)),
         ("-", p(B, 1, ip=X)), ("-", p(B, 1))], {Neighbor("br-100", X, M1)}, A),
    # B's MAC route arrived, its MAC+IP not yet: the IP binding from A still says which MAC it has
    "MAC+IP not yet re-advertised by the new site": (
        [("+", p(A, 0)), ("+", p(A, 0, ip=X)), ("+", p(B, 1))], {Neighbor("br-100", X, M1)}, B),
    # one IP claimed for two MACs (a VM re-created with a new MAC elsewhere): one neighbour entry,
    # the winning path's MAC; when that path goes, the other MAC's
    "IP on two MACs: the winner's MAC": (
        [("+", p(A, 0, ip=X)), ("+", p(B, 1, ip=X, mac=M2))], {Neighbor("br-100", X, M2)}, A),
    "IP on two MACs: fallback": (
        [("+", p(A, 0, ip=X)), ("+", p(B, 1, ip=X, mac=M2)), ("-", p(B, 1, ip=X, mac=M2))],
        {Neighbor("br-100", X, M1)}, A),
    "IP on two MACs, equal seq: lowest VTEP": (
        [("+", p(B, 0, ip=X, mac=M2)), ("+", p(A, 0, ip=X))], {Neighbor("br-100", X, M1)}, A),
    "MAC+IP from two peers, one withdraws": (
        [("+", p(A, 0, ip=X, peer=RR1)), ("+", p(A, 0, ip=X, peer=RR2)), ("-", p(A, 0, ip=X, peer=RR2))],
        {Neighbor("br-100", X, M1)}, A),
}


@pytest.mark.parametrize(("ops", "neighbors", "where"), list(NEIGH_CASES.values()), ids=list(NEIGH_CASES))
def test_neighbour_follows_the_winning_path(ops, neighbors, where):
    rib = run(ops)
    assert rib.neighbors() == neighbors
    assert fdb_of(rib) == where


def test_flood_list_entries_from_two_peers_and_two_vnis():
    """Type-3 routes: one per VNI per VTEP, each peer's copy a path of its own."""
    rib = EvpnRib()
    for r in (ImetRoute(100, A, rd=f"{A}:100", peer=RR1), ImetRoute(200, A, rd=f"{A}:200", peer=RR1),
              ImetRoute(100, A, rd=f"{A}:100", peer=RR2)):
        rib.add(r)
    rib.withdraw(ImetRoute(100, A, rd=f"{A}:100", peer=RR1))
    zero = {(f.ifname, f.dst) for f in rib.fdb() if f.mac == "00:00:00:00:00:00"}
    assert zero == {("vx-100", A), ("vx-200", A)}
