"""The kernel view (nsg/evpn/install.py) is kept up to date input by input: it must always say what a
derivation from scratch would, and hand out the same objects while nothing changes (so compose and
the engine see "no changes" without comparing every entry)."""

from __future__ import annotations

import random

from nsg.compose import EvpnView, compose
from nsg.dataplane.types import Fdb
from nsg.evpn.local import MacEvent
from tests.unit.evpn_routes.builders import HIGH, M1, RR1, RR2, VNI, A, B, config, core, eor, imet, mac, macs, unmac


def view(c) -> EvpnView:
    return EvpnView(c.fdb(), c.neighbors(), c.routes(), devices=c.devices)


def test_the_same_objects_while_nothing_changes():
    c = core()
    c.received(RR1, macs(A, 50), 0.0)
    c.received(RR1, imet(A), 0.0)
    first = view(c)
    assert c.devices == {"br-100", "vx-100"}
    for eff in (c.received(RR1, eor(), 1.0), c.received(RR1, macs(A, 50), 2.0),  # End-of-RIB, the same again
                c.learned(None, [MacEvent(VNI, "02:00:00:00:00:aa", "lan0", True)], 3.0)):  # a new local host
        assert not eff.changed
        assert c.fdb() is first.fdb and c.neighbors() is first.neighbors and c.routes() is first.routes
    c.received(RR1, mac(B, 1), 4.0)
    assert c.fdb() is not first.fdb and Fdb(f"vx-{VNI}", M1, B) in c.fdb()


def test_compose_takes_the_views_entries_as_they_are():
    cfg = config()
    c = core()
    c.received(RR1, macs(A, 20), 0.0)
    v = view(c)
    a, b = compose(cfg, evpn_view=v), compose(cfg, evpn_view=view(c))
    assert a.dataplane.fdb is v.fdb and a.dataplane.neighbors is v.neighbors
    assert a.dataplane == b.dataplane and b.dataplane.fdb is a.dataplane.fdb
    # entries made for another config (a subnet it has, this one has not) are filtered one by one
    other = EvpnView(v.fdb | {Fdb("vx-200", M1, A)}, v.neighbors, v.routes, devices=frozenset({"vx-200"}))
    assert compose(cfg, evpn_view=other).dataplane.fdb == v.fdb


def reference_fdb(c) -> set[tuple[str, str]]:
    """What the RIB alone says (plain transport, no local MACs, no freezes): the best path per MAC."""
    return {(f.mac, f.dst) for f in c.rib.fdb({VNI}) if not f.master}


def test_incremental_equals_a_derivation_from_scratch():
    rnd = random.Random(23)
    c = core(duplicate_mac={"max_moves": 1000})  # moves as they come: no freeze
    vteps, peers = (A, B, HIGH), (RR1, RR2)
    names = [f"02:00:00:00:01:{i:02x}" for i in range(12)]
    before: set = set()
    for step in range(600):
        m, vtep, peer = rnd.choice(names), rnd.choice(vteps), rnd.choice(peers)
        r = rnd.random()
        if r < 0.6:
            eff = c.received(peer, mac(vtep, rnd.randrange(4), m=m, sticky=rnd.random() < 0.05), float(step))
        elif r < 0.95:
            eff = c.received(peer, unmac(vtep, m=m), float(step))
        else:
            eff = c.peer_down(peer, None)
        got = {(f.mac, f.dst) for f in c.fdb() if not f.master}
        assert got == reference_fdb(c), step
        assert eff.changed == (got != before), step  # "changed" exactly when the kernel view changed
        before = got
