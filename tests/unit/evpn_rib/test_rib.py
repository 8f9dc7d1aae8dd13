"""EVPN RIB tables: routes in -> FDB, flood list and neighbour entries out; best path; MAC mobility."""

from nsg.dataplane.types import ZERO_MAC, Fdb
from nsg.evpn.rib import EvpnRib, ImetRoute, MacRoute, Neighbor

A, B, C = "198.19.255.2", "198.19.255.3", "198.19.255.4"
M1, M2 = "02:00:00:00:00:01", "02:00:00:00:00:02"


def test_routes_to_kernel_objects():
    rib = EvpnRib(frozenset({"198.19.255.1"}))
    rib.add(ImetRoute(100, A))
    rib.add(ImetRoute(100, B))
    rib.add(MacRoute(100, M1, A))
    rib.add(MacRoute(100, M1, A, ip="198.19.0.21"))
    rib.add(MacRoute(200, M2, B, ip="198.19.1.5"))
    # each remote MAC twice: the VXLAN device's entry (-> VTEP) and the bridge's (-> the VXLAN port)
    assert rib.fdb() == {Fdb("vx-100", ZERO_MAC, A), Fdb("vx-100", ZERO_MAC, B), Fdb("vx-100", M1, A),
                         Fdb("vx-100", M1, "", master=True), Fdb("vx-200", M2, B), Fdb("vx-200", M2, "", master=True)}
    assert rib.neighbors() == {Neighbor("br-100", "198.19.0.21", M1), Neighbor("br-200", "198.19.1.5", M2)}
    assert rib.fdb({200}) == {Fdb("vx-200", M2, B), Fdb("vx-200", M2, "", master=True)}


def test_own_routes_reflected_back_are_ignored():
    rib = EvpnRib(frozenset({"198.19.255.1"}))
    assert not rib.add(MacRoute(100, M1, "198.19.255.1"))
    assert not rib.add(ImetRoute(100, "198.19.255.1"))
    assert rib.fdb() == frozenset()


def test_mac_mobility_highest_sequence_wins_then_lowest_vtep():
    rib = EvpnRib()
    rib.add(MacRoute(100, M1, B, ip="198.19.0.9", seq=0))
    rib.add(MacRoute(100, M1, A, ip="198.19.0.9", seq=0))
    assert rib.best(100, M1).vtep == A  # tie: lowest address
    rib.add(MacRoute(100, M1, C, ip="198.19.0.9", seq=1))  # the host moved behind C
    assert rib.best(100, M1).vtep == C
    assert Fdb("vx-100", M1, C) in rib.fdb() and Fdb("vx-100", M1, A) not in rib.fdb()
    assert rib.neighbors() == {Neighbor("br-100", "198.19.0.9", M1)}
    assert rib.next_local_seq(100, M1) == 2  # moving it here must outbid seq 1
    assert rib.next_local_seq(100, M2) == 0
    rib.withdraw(MacRoute(100, M1, C, ip="198.19.0.9", seq=1))
    assert rib.best(100, M1).vtep == A


def test_peer_loss_removes_everything_behind_it():
    rib = EvpnRib()
    rib.add(ImetRoute(100, A))
    rib.add(MacRoute(100, M1, A))
    rib.add(MacRoute(100, M2, B))
    rib.withdraw_vtep(A)
    assert rib.fdb() == {Fdb("vx-100", M2, B), Fdb("vx-100", M2, "", master=True)}
    rib.withdraw(MacRoute(100, M2, B))
    rib.withdraw(MacRoute(100, M2, B))  # twice is harmless
    assert rib.fdb() == frozenset() and rib.macs == {}
