"""MAC mobility of local MACs through the core (RFC 7432 15.1, 15.2): the bridge learns M1 on a LAN
port ("here") or loses it ("gone"), peers announce or withdraw remote routes of it. After the steps:
our type-2 for M1 (its sequence number, or None when we do not announce it), the kernel's remote
entries for it, the counters, and what the last step sent to the peers."""

from __future__ import annotations

import pytest

from nsg.evpn.local import MacEvent
from tests.unit.evpn_routes.builders import HIGH, M1, RR1, RR2, VNI, A, B, core, installed, mac, sent, unmac

HERE, GONE = "here", "gone"

# (steps, our seq for M1 or None, remote entries, moved_away, sticky_conflicts, sent by the last step)
CASES = {
    "learned here: announced, seq 0": ([HERE], 0, set(), 0, 0, [("+", M1, 0)]),
    "was remote: we outbid it (seq 1)": ([(RR1, mac(A, 0)), HERE], 1, set(), 0, 0, [("+", M1, 1)]),
    "ours, then a higher seq elsewhere: withdrawn": ([HERE, (RR1, mac(B, 1))], None, {(M1, B)}, 1, 0,
                                                     [("-", M1, 0)]),
    "ours, equal seq from a lower address: withdrawn": ([HERE, (RR1, mac(A, 0))], None, {(M1, A)}, 1, 0,
                                                        [("-", M1, 0)]),
    "ours, equal seq from a higher address: stays": ([HERE, (RR1, mac(HIGH, 0))], 0, set(), 0, 0, []),
    "ours (seq 1), a lower seq elsewhere: stays": ([(RR1, mac(A, 0)), HERE, (RR2, mac(B, 0))], 1, set(), 0, 0, []),
    "moved away and back: one above": ([HERE, (RR1, mac(B, 1)), HERE], 2, set(), 1, 0, [("+", M1, 2)]),
    "remote withdrawn after we outbid it: still ours": ([(RR1, mac(A, 0)), HERE, (RR1, unmac(A))], 1, set(), 0, 0,
                                                        []),
    "aged out here: the remote entry is back": ([(RR1, mac(A, 0)), HERE, GONE], None, {(M1, A)}, 0, 0,
                                                [("-", M1, 0)]),
    # RFC 7432 15.2: a MAC static (sticky) at another PE is not ours to announce; the operator is told
    "sticky elsewhere: a local learn is not announced": ([(RR1, mac(B, 0, sticky=True)), HERE], None, {(M1, B)},
                                                         0, 1, []),
    "sticky elsewhere for a MAC we announce: withdrawn": ([HERE, (RR1, mac(HIGH, 0, sticky=True))], None,
                                                          {(M1, HIGH)}, 0, 1, [("-", M1, 0)]),
    "sticky route withdrawn: ours, above what is left": ([(RR1, mac(A, 3)), (RR1, mac(B, 0, sticky=True)), HERE,
                                                          (RR1, unmac(B))], 4, set(), 0, 1, [("+", M1, 4)]),
}


@pytest.mark.parametrize(("steps", "seq", "entries", "moved", "sticky", "last"), list(CASES.values()), ids=list(CASES))
def test_local_mac_against_remote_routes(steps, seq, entries, moved, sticky, last):
    c = core()
    for step in steps:
        eff = c.learned(None, [MacEvent(VNI, M1, "lan0", step == HERE)], 0.0) if step in (HERE, GONE) \
            else c.received(*step, 0.0)
    ours = [r["seq"] for r in c.show()["local"] if r["type"] == 2 and r["mac"] == M1]
    assert ours == ([] if seq is None else [seq])
    assert {e for e in installed(c) if e[0] == M1} == entries
    assert (c.counters["moved_away"], c.counters["sticky_conflicts"]) == (moved, sticky)
    assert sent(eff) == last


def test_what_a_session_coming_up_gets():
    """Our type-3 and our type-2 routes; a route withdrawn is gone from the set too."""
    c = core()
    eff = c.learned(None, [MacEvent(VNI, M1, "lan0", True)], 0.0)
    assert eff.announce is not None and len(eff.announce) == 2 and list(eff.announce) == c.announcements()
    assert not eff.changed  # a host appearing on our LAN changes nothing in the kernel
    eff = c.received(RR1, mac(B, 1), 0.0)
    assert eff.announce is not None and len(eff.announce) == 1
    assert eff.changed


def test_a_new_vni_reaches_sessions_that_are_up_and_a_removed_one_is_withdrawn():
    from nsg.evpn.rib import EvpnRib
    from nsg.evpn.routes import EvpnRoutes
    from tests.unit.evpn_routes.builders import config

    c = EvpnRoutes(EvpnRib())
    first = c.configure(config((VNI,)))
    assert len(first.send) == 1 and first.announce == first.send  # our type-3
    c.learned(None, [MacEvent(200, M1, "lan1", True)], 0.0)  # VNI 200 not configured: ignored
    assert c.local.routes() == set()
    grown = c.configure(config((VNI, 200)))
    assert len(grown.send) == 1 and grown.send[0].mp_reach is not None and len(grown.announce or ()) == 2
    c.learned(None, [MacEvent(200, M1, "lan1", True)], 0.0)
    shrunk = c.configure(config((VNI,)))
    assert sent(shrunk) == [("-", M1, 0)] and len(shrunk.announce or ()) == 1
    assert [u.mp_unreach is not None for u in shrunk.send] == [True, True]  # the type-3, then the type-2
