"""Refused routes take no room (RFC 4456 section 8, RFC 7606 treat-as-withdraw semantics).

A route reflector ignores a route whose ORIGINATOR_ID is its own router id, or whose CLUSTER_LIST
carries its cluster id: the route has looped. Such a route, like any refused one, must not sit in the
client's Adj-RIB-In nor count against its route limit, and it withdraws the same client's earlier copy
of that NLRI. Pure checks first (controller/rr_check.py), then the reflector without a view, where
nothing but these rules and the limits stand between a client and the others.
"""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address

from bgp.attributes import ClusterList, OriginatorId, UnknownAttribute
from bgp.codec import Update, UpdateResult
from bgp.constants import OPTIONAL_TRANSITIVE, AttrFlag, ErrorAction, MessageType
from bgp.evpn_nlri import MacIpRoute, RouteDistinguisher, encap_vxlan, mac_ip_route, route_target
from controller.route_reflector import RouteReflector
from controller.rr_check import Limits, Reason, TokenBucket, check_update, route_key
from controller.rr_mobility import Mobility
from tests.unit.rr.rawpeer import RawPeer, until
from tests.unit.rr.test_rr_check import B1, MAC, MAC2, RD1, RT, RULES, _holding, ann, client

RR_ID = "198.19.255.254"
OURS = IPv4Address(RR_ID)
ASN = 65000


def _reasons(out) -> list[Reason]:
    return [r for r, _, _ in out.refused]


# --- the check (sans-IO) -----------------------------------------------------------------------------


def test_our_originator_id_is_a_loop_with_and_without_a_view():
    r = mac_ip_route(RD1, MAC, None, 100)
    looped = ann(r, extra=(OriginatorId(OURS),))
    for owned, rules in ((False, None), (True, RULES)):
        out = check_update(looped, client(owned=owned), rules, Mobility(), 0.0, router_id=OURS, cluster_id=OURS)
        assert _reasons(out) == [Reason.ORIGINATOR_ID_OURS] and not out.accepted, owned


def test_our_cluster_id_in_cluster_list_is_a_loop():
    r = mac_ip_route(RD1, MAC, None, 100)
    looped = ann(r, extra=(ClusterList((IPv4Address("192.0.2.7"), OURS)),))
    out = check_update(looped, client(owned=False), None, Mobility(), 0.0, router_id=OURS, cluster_id=OURS)
    assert _reasons(out) == [Reason.CLUSTER_LIST_LOOP] and not out.accepted
    # another reflector's cluster id alone is no loop (without a view such routes are passed on)
    other = ann(r, extra=(ClusterList((IPv4Address("192.0.2.7"),)),))
    out = check_update(other, client(owned=False), None, Mobility(), 0.0, router_id=OURS, cluster_id=OURS)
    assert len(out.accepted) == 1 and not out.refused


def test_a_looped_reannouncement_withdraws_the_earlier_copy():
    r = mac_ip_route(RD1, MAC, None, 100)
    c = _holding(client(owned=False), r)
    out = check_update(ann(r, extra=(OriginatorId(OURS),)), c, None, Mobility(), 0.0, router_id=OURS,
                       cluster_id=OURS)
    assert out.withdrawn == [route_key(r)] and _reasons(out) == [Reason.ORIGINATOR_ID_OURS]


def test_looped_routes_take_no_rate_tokens_and_no_room():
    c = client(owned=False, max_routes=1, rate=TokenBucket(rate=0.001, burst=1))
    looped = Update.for_evpn(tuple(mac_ip_route(RD1, f"02:00:00:00:00:{i:02x}", None, 100) for i in range(5)),
                             B1, RT)
    looped = Update(attributes=(*looped.attributes, OriginatorId(OURS)))
    out = check_update(UpdateResult(ErrorAction.NONE, looped), c, None, Mobility(), 0.0, router_id=OURS,
                       cluster_id=OURS)
    assert _reasons(out) == [Reason.ORIGINATOR_ID_OURS] * 5
    out = check_update(ann(mac_ip_route(RD1, MAC, None, 100)), c, None, Mobility(), 0.0, router_id=OURS,
                       cluster_id=OURS)
    assert len(out.accepted) == 1 and not out.refused  # its one token and its one slot were still free


def test_reannouncing_held_routes_takes_no_new_room():
    """At 1 of 2, the held route again plus a new one: both fit (the held one is no new route)."""
    old = mac_ip_route(RD1, MAC, None, 100)
    c = _holding(client(max_routes=2), old)
    both = Update.for_evpn((old, mac_ip_route(RD1, MAC2, None, 100)), B1, RT)
    out = check_update(UpdateResult(ErrorAction.NONE, both), c, RULES, Mobility(), 0.0)
    assert len(out.accepted) == 2 and not out.refused


def test_a_refused_reannouncement_frees_its_room_within_the_update():
    """At 1 of 1: the held route again with a VNI it does not have (refused, so withdrawn: RFC 7606
    treat-as-withdraw) and a new route in the same UPDATE: the new one takes the freed slot."""
    old = mac_ip_route(RD1, MAC, None, 100)
    c = _holding(client(max_routes=1), old)
    relabelled = mac_ip_route(RD1, MAC, None, 200)  # same route key: labels are not part of it
    new = mac_ip_route(RD1, MAC2, None, 100)
    upd = Update.for_evpn((relabelled, new), B1, RT)
    out = check_update(UpdateResult(ErrorAction.NONE, upd), c, RULES, Mobility(), 0.0)
    assert _reasons(out) == [Reason.FOREIGN_VNI] and out.withdrawn == [route_key(old)]
    assert out.accepted == [(route_key(new), new)]


# --- the reflector, without a view -------------------------------------------------------------------

A, W = "127.0.0.2", "127.0.0.3"  # the client under test, a watcher
A_ID = "198.19.255.1"
RD_A = RouteDistinguisher.ipv4(A_ID, 100)


def _t2(mac: str, extra=()) -> bytes:
    upd = Update.for_evpn((mac_ip_route(RD_A, mac, None, 100),), A_ID, (route_target(ASN, 100), encap_vxlan()))
    return Update(attributes=(*upd.attributes, *extra)).encode()


def _seen(peer: RawPeer, field: str) -> list[str]:
    out = []
    for u in peer.updates():
        attr = getattr(u, field)
        out += [n.mac for n in (attr.nlri if attr else ()) if isinstance(n, MacIpRoute)]
    return out


async def _pair(rr: RouteReflector) -> tuple[RawPeer, RawPeer]:
    port = await rr.start("127.0.0.1", 0)
    w = await RawPeer(port, W, "198.19.255.3").connect()
    a = await RawPeer(port, A, A_ID).connect()
    for p in (w, a):
        await asyncio.wait_for(p.opened.wait(), 5)
    return a, w


def test_routes_with_our_originator_id_are_not_held_nor_counted():
    """At a limit of 2, two routes that name the reflector as their originator, then two real ones: the
    looped ones are neither held nor reflected, the real ones fit, and nobody is torn down."""
    async def main():
        rr = RouteReflector(ASN, RR_ID, limits=Limits(max_routes=2, over_excess=1))
        a, w = await _pair(rr)
        for i in range(2):
            a.send(_t2(f"02:00:00:00:0e:{i:02x}", (OriginatorId(OURS),)))
        a.send(_t2("02:00:00:00:01:01"))
        a.send(_t2("02:00:00:00:01:02"))
        await until(lambda: len(_seen(w, "mp_reach")) == 2, what="the two real routes at the watcher")
        await asyncio.sleep(0.1)
        st = rr.status()["clients"][A]
        assert st["routes"] == 2 and st["counters"] == {"originator-id-ours": 2, "accepted": 2}, st
        assert sorted(_seen(w, "mp_reach")) == ["02:00:00:00:01:01", "02:00:00:00:01:02"]
        assert not a.notifications and rr.status()["loops_dropped"] == 2
        for p in (a, w):
            await p.close()
        await rr.stop()

    asyncio.run(main())


def test_a_looped_reannouncement_withdraws_the_reflected_route():
    async def main():
        rr = RouteReflector(ASN, RR_ID)
        a, w = await _pair(rr)
        a.send(_t2(MAC))
        await until(lambda: _seen(w, "mp_reach") == [MAC])
        a.send(_t2(MAC, (ClusterList((OURS,)),)))
        await until(lambda: _seen(w, "mp_unreach") == [MAC], what="the earlier copy withdrawn")
        st = rr.status()["clients"][A]
        assert st["routes"] == 0 and st["counters"]["cluster-list-loop"] == 1, st
        # its later withdrawal of that route is no news (no withdraw-not-announced event)
        a.send(Update.withdraw_evpn((mac_ip_route(RD_A, MAC, None, 100),)).encode())
        a.send(_t2(MAC2))
        await until(lambda: MAC2 in _seen(w, "mp_reach"))
        assert "withdraw-not-announced" not in rr.status()["clients"][A]["counters"]
        for p in (a, w):
            await p.close()
        await rr.stop()

    asyncio.run(main())


def test_a_reannouncement_too_big_to_reflect_withdraws_the_earlier_copy():
    """Our ORIGINATOR_ID and CLUSTER_LIST (14 octets) push a client's 4,096-octet UPDATE over the
    limit: it cannot be reflected, so the copy the others hold from before must go too."""
    async def main():
        rr = RouteReflector(ASN, RR_ID)
        a, w = await _pair(rr)
        a.send(_t2(MAC))
        await until(lambda: _seen(w, "mp_reach") == [MAC])
        flags = OPTIONAL_TRANSITIVE | AttrFlag.EXTENDED_LENGTH
        base = len(_t2(MAC, (UnknownAttribute(99, b"", flags),)))
        big = _t2(MAC, (UnknownAttribute(99, bytes(4096 - base), flags),))
        assert len(big) == 4096
        a.send(big)
        await until(lambda: _seen(w, "mp_unreach") == [MAC], what="the earlier copy withdrawn")
        st = rr.status()
        assert st["clients"][A]["routes"] == 0 and st["too_big_dropped"] == 1
        assert st["clients"][A]["counters"]["too-big-to-reflect"] == 1
        assert not [f for _, f in a.frames if f[18] == MessageType.NOTIFICATION]
        for p in (a, w):
            await p.close()
        await rr.stop()

    asyncio.run(main())
