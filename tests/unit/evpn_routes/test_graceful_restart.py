"""Session losses through the core: with graceful restart (RFC 4724 4.2, receiving side) a peer's
routes stay, stale, until its End-of-RIB or until its restart time runs out (a timer the core asks
its driver for); without it, or after a NOTIFICATION, they go at once."""

from __future__ import annotations

from nsg.evpn.effects import CancelStaleTimer, Effects, StartStaleTimer
from nsg.evpn.local import MacEvent
from tests.unit.evpn_routes.builders import M1, M2, RR1, RR2, VNI, A, B, core, eor, imet, installed, mac, sent


def stale(c) -> set[tuple[str, str | None]]:
    return {(r["peer"], r.get("mac")) for r in c.show()["received"] if r.get("stale")}


def test_kept_stale_then_end_of_rib_removes_what_was_not_sent_again():
    c = core()
    for upd in (mac(A, m=M1), mac(A, m=M2), imet(A)):
        c.received(RR1, upd, 0.0)
    eff = c.peer_down(RR1, restart_time=120)
    assert eff == Effects(timers=(StartStaleTimer(RR1, 120),))  # forwarding goes on: no change
    assert installed(c) == {(M1, A), (M2, A), ("flood", A)}
    assert stale(c) == {(RR1, M1), (RR1, M2), (RR1, None)} and c.counters["stale_kept"] == 3
    c.received(RR1, mac(A, m=M1), 0.0)  # the session is back: M1 again, then the End-of-RIB
    assert stale(c) == {(RR1, M2), (RR1, None)}
    eff = c.received(RR1, eor(), 0.0)
    assert eff.timers == (CancelStaleTimer(RR1),) and eff.changed
    assert installed(c) == {(M1, A)} and stale(c) == set() and c.counters["stale_purged"] == 2


def test_restart_time_runs_out():
    c = core()
    c.received(RR1, mac(A), 0.0)
    c.peer_down(RR1, restart_time=5)
    eff = c.stale_expired(RR1)
    assert eff.changed and eff.timers == ()  # the timer that fired needs no cancel
    assert installed(c) == set() and c.counters["stale_purged"] == 1
    assert c.received(RR1, eor(), 0.0) == Effects()  # a late End-of-RIB finds nothing left to do


def test_down_again_while_restarting_restarts_the_timer_and_keeps_everything():
    c = core()
    c.received(RR1, mac(A, m=M1), 0.0)
    c.peer_down(RR1, restart_time=120)
    c.received(RR1, mac(A, m=M2), 0.0)  # back, sends M2, breaks again before its End-of-RIB
    eff = c.peer_down(RR1, restart_time=90)
    assert eff.timers == (StartStaleTimer(RR1, 90),)
    assert stale(c) == {(RR1, M1), (RR1, M2)}
    c.received(RR1, eor(), 0.0)
    assert installed(c) == set()


def test_without_graceful_restart_routes_go_at_once():
    c = core()
    c.received(RR1, mac(A), 0.0)
    eff = c.peer_down(RR1, restart_time=None)
    assert eff.changed and eff.timers == () and installed(c) == set() and RR1 not in c.peers


def test_a_notification_while_restarting_ends_the_wait():
    """Stale routes, then the peer's next session ends with a NOTIFICATION (the driver passes no
    restart time): everything goes and the running timer is cancelled."""
    c = core()
    c.received(RR1, mac(A), 0.0)
    c.peer_down(RR1, restart_time=120)
    eff = c.peer_down(RR1, restart_time=None)
    assert eff.timers == (CancelStaleTimer(RR1),) and installed(c) == set()


def test_a_peer_with_no_routes_starts_no_timer():
    c = core()
    assert c.peer_down(RR1, restart_time=120).timers == ()


def test_the_other_peers_copy_stays():
    c = core()
    c.received(RR1, mac(A), 0.0)
    c.received(RR2, mac(A), 0.0)
    c.peer_down(RR1, restart_time=None)
    assert installed(c) == {(M1, A)}


def test_stale_path_loses_to_a_move_and_its_purge_leaves_the_new_site():
    c = core()
    c.received(RR1, mac(A, 0), 0.0)
    c.peer_down(RR1, restart_time=120)
    c.received(RR2, mac(B, 1), 0.0)
    assert installed(c) == {(M1, B)}
    c.stale_expired(RR1)
    assert installed(c) == {(M1, B)}


def test_purged_stale_route_gives_a_held_back_mac_back_to_us():
    """A MAC static at another site is not announced by us; when that (stale) route is purged, the MAC
    is ours and announced."""
    c = core()
    c.received(RR1, mac(B, 0, sticky=True), 0.0)
    c.learned(None, [MacEvent(VNI, M1, "lan0", True)], 0.0)
    c.peer_down(RR1, restart_time=120)
    eff = c.received(RR1, eor(), 0.0)
    assert sent(eff) == [("+", M1, 0)] and installed(c) == set()
