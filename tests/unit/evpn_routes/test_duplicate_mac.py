"""Duplicate-MAC detection through the core (RFC 7432 section 15.1, nsg/evpn/mobility.py): 5 moves of
one MAC within 180 s freeze it where it is for 180 s, with an alert; moves meanwhile are ignored and
counted. Each case is a list of (time, step): a peer's UPDATE, the bridge learning M1 on its LAN
port ("here") or losing it ("gone"), or the freeze timer firing ("tick")."""

from __future__ import annotations

import pytest

from nsg.evpn.effects import DuplicateMacAlert, StartFreezeTimer
from nsg.evpn.local import MacEvent
from tests.unit.evpn_routes.builders import HIGH, M1, RR1, VNI, A, B, core, installed, mac, sent

HERE, GONE, TICK = "here", "gone", "tick"


def run(steps, c=None):
    c = c or core()
    effects = []
    for t, step in steps:
        if step in (HERE, GONE):
            effects.append(c.learned(None, [MacEvent(VNI, M1, "lan0", step == HERE)], t))
        elif step == TICK:
            effects.append(c.tick(t))
        else:
            effects.append(c.received(RR1, step, t))
    return c, effects


def where(c) -> str | None:
    """Where M1 goes: a VTEP, "local" (ours, announced), or None."""
    remote = {v for m, v in installed(c) if m == M1}
    assert len(remote) <= 1
    if remote:
        return remote.pop()
    ours = [r for r in c.show()["local"] if r["type"] == 2 and r["mac"] == M1]
    return "local" if ours else None


def alerts(effects):
    return [a for e in effects for a in e.alerts]


def pingpong(n: int, t0: float = 0.0, dt: float = 10.0):
    """M1 at A, then ``n`` moves between A and B, each one above the last (a site and an attacker)."""
    return [(t0, mac(A, 0))] + [(t0 + dt * i, mac(B if i % 2 else A, i)) for i in range(1, n + 1)]


# (steps, where M1 goes, frozen, duplicate_macs, moves_ignored)
CASES = {
    "4 moves in 180 s: not a duplicate": (pingpong(4), A, False, 0, 0),
    # the 5th move completes the count: it is not made, M1 stays at A
    "5 moves in 180 s: frozen where it was": (pingpong(5), A, True, 1, 0),
    # A announcing it again (one above) moves nothing: only B's is a move, ignored
    "frozen: further moves are ignored": (pingpong(7), A, True, 1, 1),
    # the window slides: the first move drops out before the 5th
    "5 moves in 200 s: the first is out of the window": (pingpong(5, dt=45.0), B, False, 0, 0),
    "6 moves, the last 5 within 180 s": (pingpong(6, dt=44.0), A, True, 1, 0),
    # a withdrawal that sends the MAC back to an older path is not a move
    "fallback after withdrawals is not a move": ([(0, mac(A, 0)), (1, mac(B, 1)), (2, mac(HIGH, 2))]
                                                 + [(3 + i, mac(B, 1)) for i in range(6)], HIGH, False, 0, 0),
}


@pytest.mark.parametrize(("steps", "goes", "frozen", "dups", "ignored"), list(CASES.values()), ids=list(CASES))
def test_moves_of_a_remote_mac(steps, goes, frozen, dups, ignored):
    c, effects = run(steps)
    assert where(c) == goes
    assert bool(c.frozen()) == frozen
    assert (c.counters["duplicate_macs"], c.counters["moves_ignored"]) == (dups, ignored)
    assert len(alerts(effects)) == dups


def test_the_alert_and_the_freeze_timer():
    c, effects = run(pingpong(5))
    (alert,) = alerts(effects)
    assert alert == DuplicateMacAlert(VNI, M1, (A, B), 5, 180, A, 180)
    assert alert.kind == "duplicate-mac" and alert.detail() == {
        "vni": VNI, "mac": M1, "sites": [A, B], "moves": 5, "window_s": 180, "frozen_at": A, "hold_s": 180}
    assert effects[-1].timers == (StartFreezeTimer(180),)  # the driver calls tick() when it runs out
    assert c.frozen() == [{"vni": VNI, "mac": M1, "at": A, "sites": [A, B], "moves": 5, "remaining_s": 180.0}]
    assert [r for r in c.show()["received"] if r.get("frozen")]


def test_the_freeze_ends_after_its_hold():
    c, _ = run(pingpong(5))  # frozen at t=50 until t=230
    run([(229, TICK)], c)
    assert c.frozen() and where(c) == A
    _, effects = run([(230, TICK)], c)
    assert not c.frozen() and where(c) == B  # where its routes say: B's sequence number is the highest
    assert effects[-1].changed
    # the history starts again with that move: 3 more make 4, not a duplicate; a 5th is
    run([(240 + i, mac(A if i % 2 else B, 6 + i)) for i in range(1, 4)], c)
    assert not c.frozen() and c.counters["duplicate_macs"] == 1
    run([(250, mac(B, 10))], c)
    assert c.frozen() and c.counters["duplicate_macs"] == 2


def test_a_hold_also_ends_with_the_next_input():
    c, _ = run(pingpong(5))
    run([(300, mac(A, 9))], c)  # no tick came: the next UPDATE ends the hold first, then moves it
    assert not c.frozen() and where(c) == A


# --- a MAC on our own LAN -------------------------------------------------------------------------

def test_a_local_mac_is_frozen_here_and_not_moved_away():
    """b2-h1 is ours; another site announces it one above, again and again (an attacker's
    outbidding): ours is withdrawn, learned again, announced one above... the 5th move freezes it
    here: it stays announced as ours, the remote route moves it nowhere."""
    steps = [(0, HERE)]
    seq = 0
    for i in range(1, 3):  # moves 1..4: away (a remote one above ours), back (learned again, one above)
        seq += 1
        steps += [(i * 10, mac(B, seq)), (i * 10 + 1, HERE)]
        seq += 1
    c, effects = run(steps)
    assert where(c) == "local" and not c.frozen() and c.counters["moved_away"] == 2
    _, effects = run([(60, mac(B, seq + 1))], c)  # the 5th move
    assert where(c) == "local" and c.frozen()[0]["at"] == "local"
    assert sent(effects[-1]) == []  # not withdrawn, nothing announced anew
    assert alerts(effects)[0].frozen_at == "local" and alerts(effects)[0].sites == (B, "local")
    run([(70, mac(B, seq + 5)), (80, mac(B, seq + 9))], c)
    assert where(c) == "local" and c.counters["moved_away"] == 2 and c.counters["moves_ignored"] == 2


def test_the_fifth_move_toward_our_lan_freezes_it_here_too():
    steps = [(0, mac(B, 0)), (10, HERE), (11, mac(B, 2)), (20, HERE), (21, mac(B, 4))]  # 4 moves
    c, _ = run(steps)
    assert not c.frozen() and where(c) == B
    _, effects = run([(30, HERE)], c)  # the 5th: toward our LAN, where the host is
    assert c.frozen()[0]["at"] == "local" and where(c) == "local" and sent(effects[-1]) == [("+", M1, 5)]


def test_a_mac_frozen_at_another_site_is_not_announced_here():
    c, _ = run(pingpong(5))  # frozen at A
    _, effects = run([(60, HERE)], c)
    assert where(c) == A and sent(effects[-1]) == []  # not ours while the hold lasts
    _, effects = run([(300, TICK)], c)  # the hold is over: it is ours, one above every claim
    assert where(c) == "local" and sent(effects[-1]) == [("+", M1, 6)]


def test_a_frozen_site_that_withdraws_leaves_the_mac_where_it_is():
    from tests.unit.evpn_routes.builders import unmac

    c, _ = run(pingpong(5))  # frozen at A (seq 4), B holds seq 5
    run([(60, unmac(A))], c)
    assert where(c) == B  # A's path is gone: the MAC goes where a path still is
    c, _ = run(pingpong(5))
    run([(60, HERE)], c)
    run([(61, unmac(A))], c)
    assert where(c) == "local"  # frozen at A, A withdrew, the host is on our LAN: it is held here


def test_configured_thresholds():
    c = core(duplicate_mac={"max_moves": 3, "window_s": 60, "freeze_s": 30})
    run(pingpong(3), c)
    assert c.frozen() and c.frozen()[0]["remaining_s"] == 30.0
