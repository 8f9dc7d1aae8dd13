"""MAC+IP routes -> neighbour entries (ARP suppression), and what a received one may never do
(nsg/evpn/install.py): (a) bind an IP our own LAN has to another MAC, (b) bind an address of this
box's own LAN side (a subnet gateway, an app's or VM's address), (c) move a binding to another MAC
without a higher sequence number. Refused paths are counted per reason, shown, and never reach
neighbors(). Each case: steps, then the neighbour entries (IP -> MAC) and the counters."""

from __future__ import annotations

import pytest

from nsg.evpn.local import IpEvent, MacEvent
from tests.unit.evpn_routes.builders import HIGH, M1, M2, RR1, RR2, VNI, A, B, core, mac, unmac

X = "198.19.0.9"  # a host of the subnet 198.19.0.0/24
GW, APP = "198.19.0.1", "198.19.0.50"
M3 = "02:00:00:00:00:03"


def here_ip(ip: str, m: str, present: bool = True):
    return ("local", [MacEvent(VNI, m, "lan0", present), IpEvent(VNI, ip, m, present)])


def bindings(c) -> dict[str, str]:
    return {n.ip: n.mac for n in c.neighbors()}


def refusals(c) -> tuple[int, int, int]:
    k = c.counters
    return (k["ip_refused_own_address"], k["ip_refused_local_neighbor"], k["ip_refused_lower_sequence"])


# (steps, neighbour entries, (own address, local neighbour, lower sequence))
CASES = {
    "a binding from another site": ([(RR1, mac(A, ip=X))], {X: M1}, (0, 0, 0)),
    # (b) this box's own addresses: the subnet gateway, an app's address
    "(b) our subnet gateway's address": ([(RR1, mac(A, ip=GW))], {}, (1, 0, 0)),
    "(b) an address the config gives an app": ([(RR1, mac(A, m=M2, ip=APP))], {}, (1, 0, 0)),
    "(b) counted once per path": ([(RR1, mac(A, ip=GW)), (RR1, mac(A, ip=GW))], {}, (1, 0, 0)),
    # (a) an IP our LAN has: another MAC for it is refused, the host's own MAC is not
    "(a) our LAN host's IP with a foreign MAC": ([here_ip(X, M1), (RR1, mac(A, m=M2, ip=X))], {}, (0, 1, 0)),
    "(a) ... whatever its sequence number": ([here_ip(X, M1), (RR1, mac(A, 9, m=M2, ip=X, sticky=True))], {},
                                             (0, 1, 0)),
    "(a) the host left our LAN: the binding goes in": ([here_ip(X, M1), (RR1, mac(A, m=M2, ip=X)),
                                                        here_ip(X, M1, False)], {X: M2}, (0, 1, 0)),
    "(a) the same MAC as our LAN's: ours, no entry, not refused": ([here_ip(X, M1), (RR1, mac(HIGH, ip=X))], {},
                                                                   (0, 0, 0)),
    # (c) a binding moves to another MAC only one above
    "(c) another MAC, equal sequence number: refused": ([(RR1, mac(B, ip=X)), (RR1, mac(A, m=M2, ip=X))], {X: M1},
                                                        (0, 0, 1)),
    "(c) another MAC, lower sequence number": ([(RR1, mac(B, 3, ip=X)), (RR1, mac(A, 2, m=M2, ip=X))], {X: M1},
                                               (0, 0, 1)),
    "(c) sticky does not make an IP move": ([(RR1, mac(B, 3, ip=X)), (RR1, mac(A, 0, m=M2, ip=X, sticky=True))],
                                            {X: M1}, (0, 0, 1)),
    "(c) one above: the binding moves": ([(RR1, mac(B, 3, ip=X)), (RR1, mac(A, 4, m=M2, ip=X))], {X: M2}, (0, 0, 0)),
    "(c) the binding's path withdrawn: the next one": ([(RR1, mac(B, ip=X)), (RR1, mac(A, m=M2, ip=X)),
                                                       (RR1, unmac(B, ip=X))], {X: M2}, (0, 0, 1)),
    "(c) the same MAC from another peer changes nothing": ([(RR1, mac(B, ip=X)), (RR2, mac(B, ip=X))], {X: M1},
                                                           (0, 0, 0)),
    "(c) three MACs: the highest above the binding wins": ([(RR1, mac(B, 1, ip=X)), (RR1, mac(A, 1, m=M2, ip=X)),
                                                           (RR1, mac(A, 5, m=M3, ip=X, rd_of=B))], {X: M3},
                                                          (0, 0, 1)),  # M1's path: the binding M3 replaced
}


@pytest.mark.parametrize(("steps", "entries", "counts"), list(CASES.values()), ids=list(CASES))
def test_mac_ip_rules(steps, entries, counts):
    c = core(apps=[("web", APP)])
    for who, what in steps:
        if who == "local":
            c.learned(None, what, 0.0)
        else:
            c.received(who, what, 0.0)
    assert bindings(c) == entries
    assert refusals(c) == counts


def test_refused_paths_are_shown_with_the_reason():
    c = core(apps=[("web", APP)])
    c.learned(None, here_ip(X, M1)[1], 0.0)
    c.received(RR1, mac(A, m=M2, ip=X), 0.0)
    c.received(RR1, mac(A, m=M3, ip=GW), 0.0)
    shown = {(r["mac"], r["ip"]): (r.get("refused"), r["best"]) for r in c.show()["received"]}
    assert shown == {(M2, X): ("local-neighbor", False), (M3, GW): ("own-address", False)}


def test_the_attack_on_a_local_host_leaves_the_kernel_alone():
    """The finding: a MAC+IP route for our own LAN host's IP with a foreign MAC made us install a
    permanent neighbour entry for it pointing at the attacker. Now: no entry, no change reported."""
    c = core()
    c.learned(None, here_ip(X, M1)[1], 0.0)
    before = (c.fdb(), c.neighbors())
    eff = c.received(RR1, mac(A, 7, m=M2, ip=X), 0.0)
    assert c.neighbors() == before[1] == frozenset()
    assert c.counters["ip_refused_local_neighbor"] == 1
    assert eff.changed  # M2 itself is a remote MAC behind A (its FDB entry): only the binding is refused
    assert {f.mac for f in c.fdb() if not f.master} == {M2}
