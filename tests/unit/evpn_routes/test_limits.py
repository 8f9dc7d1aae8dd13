"""Bounds on what one BGP peer may make us hold: at most ``evpn.max_routes_per_peer`` paths from it,
and through it at most ``evpn.max_routes_per_site`` with one next hop. New paths past either are
refused and counted (``routes_over_limit``) and never reach the kernel; routes already held may be
sent again; an alert once at 80 % and once at the limit, again only after falling below 70 %."""

from __future__ import annotations

from nsg.evpn.effects import RouteLimitAlert
from tests.unit.evpn_routes.builders import RR1, RR2, A, B, core, installed, macs

LIMITS = {"max_routes_per_peer": 10, "max_routes_per_site": 6}


def alerts(effects):
    return [a for e in effects for a in e.alerts]


def held(c, peer=RR1) -> int:
    return len(c.peers[peer].routes) if peer in c.peers else 0


def test_a_site_past_its_limit_is_refused_and_others_keep_their_room():
    c = core(**LIMITS)
    effects = [c.received(RR1, macs(A, 1, start=i), 0.0) for i in range(8)]  # A: 8 routes, one at a time
    assert held(c) == 6 and c.counters["routes_over_limit"] == 2
    assert len({m for m, v in installed(c) if v == A}) == 6
    assert alerts(effects) == [RouteLimitAlert(RR1, A, 5, 6, False), RouteLimitAlert(RR1, A, 6, 6, True)]
    effects = [c.received(RR1, macs(B, 5, start=100), 0.0)]  # B still has room: 4 fit under the peer's 10
    assert held(c) == 10 and c.counters["routes_over_limit"] == 3
    assert alerts(effects) == [RouteLimitAlert(RR1, None, 8, 10, False), RouteLimitAlert(RR1, None, 10, 10, True)]
    assert held(c, RR2) == 0
    c.received(RR2, macs(B, 5, start=100), 0.0)  # another peer has its own limit
    assert held(c, RR2) == 5


def test_routes_held_may_be_sent_again_and_withdrawals_make_room():
    from tests.unit.evpn_routes.builders import unmac

    c = core(**LIMITS)
    c.received(RR1, macs(A, 6), 0.0)
    c.received(RR1, macs(A, 6), 0.0)  # the same routes again: no new room needed
    assert held(c) == 6 and c.counters["routes_over_limit"] == 0
    c.received(RR1, macs(A, 1, start=50), 0.0)
    assert c.counters["routes_over_limit"] == 1
    for i in range(3):
        c.received(RR1, unmac(A, m=f"02:66:00:00:00:{i:02x}"), 0.0)
    effects = [c.received(RR1, macs(A, 1, start=50), 0.0)]
    assert held(c) == 4 and not alerts(effects)  # below 70 %: the next approach is alerted again
    effects = [c.received(RR1, macs(A, 1, start=60 + i), 0.0) for i in range(2)]
    assert [a.refusing for a in alerts(effects)] == [False]


def test_a_flood_is_cut_at_the_default_limits():
    c = core()
    for i in range(0, 12_000, 100):
        c.received(RR1, macs(A, 100, start=i), 0.0)
    assert held(c) == 10_000 and c.counters["routes_over_limit"] == 2_000  # the site's default
    assert c.route_counts().mac == 10_000


def test_a_site_with_its_own_limit_is_cut_there_and_the_others_keep_the_default():
    """``evpn.remote_limits`` (rendered by the controller from each site's LAN: controller/route_budget.py)
    bounds that site alone; a site not listed keeps ``max_routes_per_site``."""
    c = core(remote_limits=[{"system_ip": A, "max_routes": 3}], max_routes_per_site=6)
    c.received(RR1, macs(A, 5), 0.0)
    c.received(RR1, macs(B, 5, start=100), 0.0)
    assert len({m for m, v in installed(c) if v == A}) == 3
    assert len({m for m, v in installed(c) if v == B}) == 5
    assert c.counters["routes_over_limit"] == 2
