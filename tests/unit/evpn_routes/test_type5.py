"""Type-5 routes (RFC 9136) a gateway takes: only a prefix its config lists for the advertising site
(``evpn.remote_prefixes``: system IP and prefix, exactly), never another site's, a more-specific or a
covering one, nor a default (whole or in pieces). Refused routes stay in the Adj-RIB-In, out of the
RIB and the kernel, are counted once (``prefixes_refused``) and shown with the reason."""

from __future__ import annotations

import pytest

from nsg.dataplane.types import Route
from tests.unit.evpn_routes.builders import RR1, RR2, A, B, config, core, prefix, unprefix

NET_B, NET_A = "203.0.113.0/24", "192.0.2.0/24"
ALLOWED = [{"system_ip": B, "prefix": NET_B}, {"system_ip": A, "prefix": NET_A}]
GW = "198.19.0.77"


def kernel(c) -> set[str]:
    return {r.dst for r in c.routes()}


# (announcements (peer, next hop, prefix), prefixes in the kernel, refused)
CASES = {
    "listed for its site: installed": ([(RR1, B, NET_B)], {NET_B}, 0),
    "two sites, each its own": ([(RR1, B, NET_B), (RR1, A, NET_A)], {NET_B, NET_A}, 0),
    "another site's prefix: refused": ([(RR1, A, NET_B)], set(), 1),
    # before: the lowest next hop won, so A took B's prefix
    "another site's prefix beside the owner's: the owner's": ([(RR1, B, NET_B), (RR1, A, NET_B)], {NET_B}, 1),
    "a more-specific of a listed prefix": ([(RR1, B, "203.0.113.128/25")], set(), 1),
    "a prefix covering a listed one": ([(RR1, B, "203.0.112.0/23")], set(), 1),
    "a default route": ([(RR1, B, "0.0.0.0/0")], set(), 1),
    "a default in pieces": ([(RR1, A, "0.0.0.0/1"), (RR1, A, "128.0.0.0/2"), (RR1, A, "192.0.0.0/2")], set(), 3),
    "the same refused route again: counted once": ([(RR1, A, NET_B), (RR1, A, NET_B)], set(), 1),
    "from two reflectors: one path each, both installed": ([(RR1, B, NET_B), (RR2, B, NET_B)], {NET_B}, 0),
}


@pytest.mark.parametrize(("steps", "installed", "refused"), list(CASES.values()), ids=list(CASES))
def test_type5_allow_list(steps, installed, refused):
    c = core(remote_prefixes=ALLOWED)
    for peer, vtep, net in steps:
        c.received(peer, prefix(vtep, net), 0.0)
    assert kernel(c) == installed
    assert c.counters["prefixes_refused"] == refused
    assert c.route_counts().prefix == len({(p, v, n) for p, v, n in steps})  # received: refused ones too


def test_the_route_goes_via_its_gateway_ip_on_the_subnets_bridge():
    c = core(remote_prefixes=ALLOWED)
    eff = c.received(RR1, prefix(B, NET_B, GW), 0.0)
    assert eff.changed and c.routes() == {Route(NET_B, "br-100", GW, None, 50)}
    eff = c.received(RR1, unprefix(B, NET_B, GW), 0.0)
    assert eff.changed and c.routes() == frozenset()
    assert not c.received(RR1, prefix(A, NET_B), 0.0).changed  # refused: nothing for the kernel


def test_refused_routes_are_shown_with_the_reason():
    c = core(remote_prefixes=ALLOWED)
    c.received(RR1, prefix(A, NET_B), 0.0)
    c.received(RR1, prefix(B, NET_B), 0.0)
    shown = {(r["vtep"], r["prefix"]): (r["best"], r.get("refused")) for r in c.show()["received"]}
    assert shown == {(A, NET_B): (False, "not in evpn.remote_prefixes for this next hop"), (B, NET_B): (True, None)}


def test_a_config_change_checks_the_received_routes_again():
    c = core()  # nothing allowed yet
    c.received(RR1, prefix(B, NET_B), 0.0)
    assert kernel(c) == set() and c.counters["prefixes_refused"] == 1
    eff = c.configure(config(remote_prefixes=ALLOWED), 1.0)  # the controller renders B's prefix now
    assert eff.changed and kernel(c) == {NET_B}
    eff = c.configure(config(), 2.0)  # and takes it away again
    assert eff.changed and kernel(c) == set() and c.counters["prefixes_refused"] == 2
    c.received(RR1, unprefix(B, NET_B), 3.0)  # the withdrawal of a refused route finds it
    assert c.route_counts().prefix == 0


def test_a_listed_prefix_that_would_capture_the_overlay_is_still_not_installed():
    """The allow-list is not the only guard: a listed prefix covering the BGP peer, our uplink's
    network or a system IP never becomes a kernel route (it would cut the tunnels)."""
    c = core(remote_prefixes=[{"system_ip": B, "prefix": "198.18.0.0/24"}])
    c.received(RR1, prefix(B, "198.18.0.0/24"), 0.0)
    assert kernel(c) == set() and c.counters["prefixes_refused"] == 1
    shown = [r for r in c.show()["received"] if r["type"] == 5]
    assert shown[0]["refused"] == "covers the overlay's own addresses or a subnet"
