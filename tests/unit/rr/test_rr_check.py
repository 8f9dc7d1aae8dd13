"""The reflector's route check (controller/rr_check.py), pure: one table row per reason, then the
Adj-RIB-In rules (treat-as-withdraw, withdrawals of what was never announced), limits, mobility, and
the security event log. The view: b1 and b2 share VNI 100, only b2 has VNI 200."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from bgp.attributes import ClusterList, Ipv4Prefix, OriginatorId
from bgp.codec import Update, UpdateResult
from bgp.constants import ErrorAction
from bgp.evpn_nlri import (
    IpPrefixRoute,
    MacMobility,
    PmsiTunnel,
    RouteDistinguisher,
    RouteTarget,
    UnknownEvpnRoute,
    encap_vxlan,
    inclusive_multicast_route,
    mac_ip_route,
    route_target,
)
from controller.rr_check import (
    ClientState,
    Limits,
    Reason,
    Rules,
    TokenBucket,
    check_update,
    route_key,
    single,
)
from controller.rr_events import SecurityLog
from controller.rr_mobility import Mobility
from controller.rr_policy import parse_view

ASN = 65000
B1, B2 = "198.19.255.1", "198.19.255.2"
VIEW = parse_view(f"""{{"asn": {ASN},
  "subnets": {{"100": {{"cidr": "198.19.0.0/24", "gateway": "198.19.0.1"}},
              "200": {{"cidr": "198.19.1.0/24", "gateway": "198.19.1.1"}}}},
  "clients": {{
    "{B1}": {{"name": "b1", "vnis": [100], "rds": ["{B1}:100"], "prefixes": ["203.0.113.0/24"],
             "hosts": ["198.19.0.5"]}},
    "{B2}": {{"name": "b2", "vnis": [100, 200], "prefixes": ["198.51.100.0/24"], "hosts": ["198.19.0.6"]}}}}}}""",
                  "test view")
RULES = Rules.of(VIEW)
RD1, RD2 = RouteDistinguisher.ipv4(B1, 100), RouteDistinguisher.ipv4(B2, 100)
RT = (route_target(ASN, 100), encap_vxlan())
MAC, MAC2 = "02:00:00:00:01:0a", "02:00:00:00:02:0a"


def client(address=B1, *, max_routes=100, rate=None, owned=True) -> ClientState:
    own = VIEW.clients[IPv4Address(address)] if owned else None
    return ClientState(address, own, max_routes, rate or Limits().bucket(100))


def ann(route, nh=B1, comms=RT, pmsi=None, extra=()) -> UpdateResult:
    upd = Update.for_evpn((route,), nh, comms, pmsi)
    return UpdateResult(ErrorAction.NONE, Update(attributes=upd.attributes + tuple(extra)))


def t5(prefix: str, plen: int, gw="198.19.0.20", label=100, rd=RD1):
    return IpPrefixRoute(rd, IPv4Address(prefix), plen, IPv4Address(gw), label)


IMET, IMET_PMSI = inclusive_multicast_route(RD1, 100, B1)
_, PMSI_B2 = inclusive_multicast_route(RD1, 100, B2)
_, PMSI_200 = inclusive_multicast_route(RD1, 200, B1)
IMET_B2_ORIG, _ = inclusive_multicast_route(RD1, 100, B2)

ROWS = [
    ("own type-2", ann(mac_ip_route(RD1, MAC, "198.19.0.10", 100)), None),
    ("own type-2, own workload", ann(mac_ip_route(RD1, MAC, "198.19.0.5", 100)), None),
    ("own type-3", ann(IMET, pmsi=IMET_PMSI), None),
    ("own type-5", ann(t5("203.0.113.0", 24)), None),
    ("next hop b2", ann(mac_ip_route(RD1, MAC, None, 100), nh=B2), Reason.FOREIGN_NEXT_HOP),
    ("PMSI tunnel toward b2", ann(IMET, pmsi=PMSI_B2), Reason.FOREIGN_NEXT_HOP),
    ("type-3 originated by b2", ann(IMET_B2_ORIG, pmsi=IMET_PMSI), Reason.FOREIGN_NEXT_HOP),
    ("b2's RD", ann(mac_ip_route(RD2, MAC2, None, 100)), Reason.FOREIGN_RD),
    ("an RD of its IP it was not given", ann(mac_ip_route(RouteDistinguisher.ipv4(B1, 7), MAC, None, 100)),
     Reason.FOREIGN_RD),
    ("an AS RD", ann(mac_ip_route(RouteDistinguisher.as2(ASN, 100), MAC, None, 100)), Reason.FOREIGN_RD),
    ("VNI 200 label", ann(mac_ip_route(RD1, MAC, None, 200)), Reason.FOREIGN_VNI),
    ("L3 VNI label2 200", ann(mac_ip_route(RD1, MAC, None, 100, l3vni=200)), Reason.FOREIGN_VNI),
    ("type-3 PMSI label 200", ann(IMET, pmsi=PMSI_200), Reason.FOREIGN_VNI),
    ("type-5 label 200", ann(t5("203.0.113.0", 24, label=200)), Reason.FOREIGN_VNI),
    ("route target 65000:200", ann(mac_ip_route(RD1, MAC, None, 100), comms=(route_target(ASN, 200),)),
     Reason.FOREIGN_ROUTE_TARGET),
    ("route target of another AS", ann(mac_ip_route(RD1, MAC, None, 100), comms=(route_target(65001, 100),)),
     Reason.FOREIGN_ROUTE_TARGET),
    ("IPv4-address route target", ann(mac_ip_route(RD1, MAC, None, 100),
                                      comms=(RouteTarget(IPv4Address(B1), 100, 1),)), Reason.FOREIGN_ROUTE_TARGET),
    ("b2's type-5 prefix", ann(t5("198.51.100.0", 24)), Reason.FOREIGN_PREFIX),
    ("nobody's type-5 prefix", ann(t5("192.0.2.0", 24)), Reason.FOREIGN_PREFIX),
    ("a longer piece of its own", ann(t5("203.0.113.0", 25)), Reason.FOREIGN_PREFIX),
    ("default route", ann(t5("0.0.0.0", 0)), Reason.COVERING_PREFIX),
    ("default in pieces: 0/1", ann(t5("0.0.0.0", 1)), Reason.COVERING_PREFIX),
    ("default in pieces: 128/2", ann(t5("128.0.0.0", 2)), Reason.COVERING_PREFIX),
    ("covers the subnets and system IPs", ann(t5("198.19.0.0", 16)), Reason.COVERING_PREFIX),
    ("covers b2's prefix", ann(t5("198.51.0.0", 16)), Reason.COVERING_PREFIX),
    ("covers b2's system IP", ann(t5("198.19.255.0", 24)), Reason.COVERING_PREFIX),
    ("type-5 gateway outside the subnet", ann(t5("203.0.113.0", 24, gw="10.0.0.1")), Reason.OUTSIDE_SUBNET),
    ("MAC+IP outside the subnet", ann(mac_ip_route(RD1, MAC, "10.1.1.1", 100)), Reason.OUTSIDE_SUBNET),
    ("MAC+IP the subnet's broadcast", ann(mac_ip_route(RD1, MAC, "198.19.0.255", 100)), Reason.OUTSIDE_SUBNET),
    ("MAC+IP IPv6", ann(mac_ip_route(RD1, MAC, "2001:db8::1", 100)), Reason.OUTSIDE_SUBNET),
    ("MAC+IP of b2's workload", ann(mac_ip_route(RD1, MAC, "198.19.0.6", 100)), Reason.FOREIGN_HOST),
    ("MAC+IP of the subnet gateway", ann(mac_ip_route(RD1, MAC, "198.19.0.1", 100)), Reason.FOREIGN_HOST),
    ("ORIGINATOR_ID from a client", ann(mac_ip_route(RD1, MAC, None, 100), extra=(OriginatorId(IPv4Address(B1)),)),
     Reason.ORIGINATOR_ID_SUPPLIED),
    ("CLUSTER_LIST from a client", ann(mac_ip_route(RD1, MAC, None, 100),
                                       extra=(ClusterList((IPv4Address("198.19.255.254"),)),)),
     Reason.CLUSTER_LIST_SUPPLIED),
    ("sticky MAC", ann(mac_ip_route(RD1, MAC, None, 100), comms=(*RT, MacMobility(0, 1))), Reason.STICKY_MAC),
    ("EVPN type 1", ann(UnknownEvpnRoute(1, RD1.encode() + bytes(15))), Reason.ROUTE_TYPE_NOT_ALLOWED),
]


@pytest.mark.parametrize(("what", "result", "reason"), ROWS, ids=[r[0] for r in ROWS])
def test_one_reason_per_row(what, result, reason):
    out = check_update(result, client(), RULES, Mobility(), 0.0)
    (nlri,) = result.update.mp_reach.nlri
    if reason is None:
        assert out.accepted == [(route_key(nlri), nlri)] and not out.refused, what
    else:
        assert [r for r, _, _ in out.refused] == [reason] and not out.accepted, what
        assert not out.withdrawn  # nothing was announced before


def test_without_a_view_only_limits_apply():
    foreign = ann(mac_ip_route(RD2, MAC2, "10.1.1.1", 200), nh=B2, extra=(OriginatorId(IPv4Address(B2)),))
    out = check_update(foreign, client(owned=False), None, Mobility(), 0.0)
    assert len(out.accepted) == 1 and not out.refused
    out = check_update(foreign, client(owned=False, max_routes=0), None, Mobility(), 0.0)
    assert [r for r, _, _ in out.refused] == [Reason.OVER_MAX_ROUTES]


def test_classic_ipv4_nlri_and_other_families_are_not_reflected():
    result = UpdateResult(ErrorAction.NONE, Update(withdrawn=(Ipv4Prefix.of("192.0.2.0/24"),)))
    out = check_update(result, client(), RULES, Mobility(), 0.0)
    assert [r for r, _, _ in out.refused] == [Reason.ROUTE_TYPE_NOT_ALLOWED]


def _holding(state: ClientState, *routes) -> ClientState:
    for r in routes:
        upd = ann(r).update
        state.routes[route_key(r)] = single(upd, r)
    return state


def test_refused_reannouncement_withdraws_the_old_route():
    """RFC 7606 treat-as-withdraw semantics: the route the client announced before no longer stands
    once it says something we refuse about it."""
    old = mac_ip_route(RD1, MAC, "198.19.0.10", 100)
    c = _holding(client(), old)
    out = check_update(ann(old, nh=B2), c, RULES, Mobility(), 0.0)
    assert out.withdrawn == [route_key(old)] and [r for r, _, _ in out.refused] == [Reason.FOREIGN_NEXT_HOP]


def test_malformed_update_withdraws_what_it_names():
    old = mac_ip_route(RD1, MAC, None, 100)
    c = _holding(client(), old)
    never = mac_ip_route(RD1, MAC2, None, 100)
    out = check_update(UpdateResult(ErrorAction.TREAT_AS_WITHDRAW, withdraw_nlri=(old, never)), c, RULES,
                       Mobility(), 0.0)
    assert out.withdrawn == [route_key(old)]
    assert [r for r, _, _ in out.refused] == [Reason.MALFORMED, Reason.MALFORMED]


def test_withdrawals_only_of_what_was_announced():
    mine = mac_ip_route(RD1, MAC, None, 100)
    c = _holding(client(), mine)
    # the same route withdrawn with another label is the same route (RFC 7432 7.2: labels are not the key)
    relabelled = mac_ip_route(RD1, MAC, None, 0)
    theirs = mac_ip_route(RD2, MAC2, None, 100)
    out = check_update(UpdateResult(ErrorAction.NONE, Update.withdraw_evpn((relabelled, theirs))), c, RULES,
                       Mobility(), 0.0)
    assert out.withdrawn == [route_key(mine)]
    assert [(r, n) for r, _, n in out.refused] == [(Reason.WITHDRAW_NOT_ANNOUNCED, theirs)]


def test_withdrawal_of_a_route_we_refused_is_no_news():
    c = client()
    foreign = mac_ip_route(RD2, MAC2, None, 100)
    c.remember_refused(route_key(foreign), Reason.FOREIGN_RD, None)
    out = check_update(UpdateResult(ErrorAction.NONE, Update.withdraw_evpn((foreign,))), c, RULES, Mobility(), 0.0)
    assert out.forgotten == [route_key(foreign)] and not out.refused


def test_announced_and_withdrawn_in_one_update_counts_as_announced():
    r = mac_ip_route(RD1, MAC, None, 100)
    upd = ann(r).update
    both = Update(attributes=(*upd.attributes, Update.withdraw_evpn((r,)).mp_unreach))
    out = check_update(UpdateResult(ErrorAction.NONE, both), client(), RULES, Mobility(), 0.0)
    assert len(out.accepted) == 1 and not out.refused and not out.withdrawn


def test_max_routes_refuses_new_routes_not_replacements():
    old = mac_ip_route(RD1, MAC, None, 100)
    c = _holding(client(max_routes=1), old)
    out = check_update(ann(mac_ip_route(RD1, MAC2, None, 100)), c, RULES, Mobility(), 0.0)
    assert [r for r, _, _ in out.refused] == [Reason.OVER_MAX_ROUTES]
    out = check_update(ann(old, comms=(*RT, MacMobility(1))), c, RULES, Mobility(), 0.0)
    assert len(out.accepted) == 1  # the same route again, new attributes: no new room needed
    # a withdrawal in the same UPDATE makes room
    upd = ann(mac_ip_route(RD1, MAC2, None, 100)).update
    swap = Update(attributes=(*upd.attributes, Update.withdraw_evpn((old,)).mp_unreach))
    out = check_update(UpdateResult(ErrorAction.NONE, swap), c, RULES, Mobility(), 0.0)
    assert len(out.accepted) == 1 and out.withdrawn == [route_key(old)]


def test_announcement_rate_is_a_token_bucket():
    c = client(rate=TokenBucket(rate=10, burst=2))
    reasons = [[r for r, _, _ in check_update(ann(mac_ip_route(RD1, f"02:00:00:00:00:{i:02x}", None, 100)), c,
                                              RULES, Mobility(), 0.0).refused] for i in range(3)]
    assert reasons == [[], [], [Reason.RATE_LIMITED]]
    assert not check_update(ann(mac_ip_route(RD1, MAC, None, 100)), c, RULES, Mobility(), 0.1).refused  # refilled


def test_mac_mobility_sequence_jump():
    """b2 holds the MAC at sequence 3. b1 may take it with 4 (a real move counts one up, RFC 7432
    15.1), not with 5; a MAC nobody else holds may carry any number."""
    mob = Mobility()
    theirs = mac_ip_route(RD2, MAC, None, 100)
    mob.add(B2, route_key(theirs), theirs, 3)
    mine = mac_ip_route(RD1, MAC, None, 100)
    jump = check_update(ann(mine, comms=(*RT, MacMobility(5))), client(), RULES, mob, 0.0)
    assert [r for r, _, _ in jump.refused] == [Reason.MOBILITY_SEQUENCE_JUMP]
    assert len(check_update(ann(mine, comms=(*RT, MacMobility(4))), client(), RULES, mob, 0.0).accepted) == 1
    other = mac_ip_route(RD1, "02:00:00:00:04:0a", None, 100)
    assert not check_update(ann(other, comms=(*RT, MacMobility(1000))), client(), RULES, mob, 0.0).refused
    # but a client raises its own number only to take a MAC over: with nobody to outbid, it is inflation
    mob.add(B1, route_key(other), other, 1000)
    out = check_update(ann(other, comms=(*RT, MacMobility(1001))), _holding(client(), other), RULES, mob, 0.0)
    assert [r for r, _, _ in out.refused] == [Reason.MOBILITY_SEQUENCE_JUMP] and out.withdrawn == [route_key(other)]
    mob.remove(B1, route_key(other), other)
    mob.remove(B2, route_key(theirs), theirs)
    assert mob.seq_elsewhere(B1, 100, MAC) is None and len(mob) == 0


def test_an_ip_another_client_binds_to_another_mac_is_refused():
    mob = Mobility()
    theirs = mac_ip_route(RD2, MAC2, "198.19.0.30", 100)
    mob.add(B2, route_key(theirs), theirs, 0)
    out = check_update(ann(mac_ip_route(RD1, "02:00:00:00:03:0a", "198.19.0.30", 100)), client(), RULES, mob, 0.0)
    assert [r for r, _, _ in out.refused] == [Reason.IP_IN_USE]
    # the same MAC with its IP moving along is a MAC move, not a conflict
    moved = check_update(ann(mac_ip_route(RD1, MAC2, "198.19.0.30", 100), comms=(*RT, MacMobility(1))), client(),
                         RULES, mob, 0.0)
    assert len(moved.accepted) == 1


def _announce(mob: Mobility, who: str, seq: int, now: float, mac: str = MAC, ip: str | None = None):
    rd = RD1 if who == B1 else RD2
    route = mac_ip_route(rd, mac, ip, 100)
    out = check_update(ann(route, nh=who, comms=(*RT, MacMobility(seq))), client(who), RULES, mob, now)
    for key, nlri in out.accepted:
        mob.add(who, key, nlri, seq)
    for vni, m in out.frozen:  # as the reflector does: the others' routes for it go
        for key, holder in mob.routes_of(vni, m):
            if holder != mob.frozen_at(vni, m, now):
                mob.remove(holder, key, mac_ip_route(RD1 if holder == B1 else RD2, m, None, vni))
    return out


def test_a_flapping_mac_is_frozen_where_it_was():
    """RFC 7432 15.1 at the reflector: b1 outbids b2's MAC, b2 takes it back, ... the fifth move within
    180 s freezes the MAC at b2, which held it before the moves began; b1 is refused from then on,
    b2 is not; after the window it may move again."""
    mob = Mobility(flap_moves=5, flap_window=180.0)
    assert not _announce(mob, B2, 0, 0.0).refused  # b2's host: no move
    seq, t = 0, 1.0
    outcomes = []
    for who in (B1, B2, B1, B2, B1):
        seq += 1
        t += 0.1
        outcomes.append(_announce(mob, who, seq, t))
    assert [o.refused for o in outcomes[:4]] == [[], [], [], []]
    assert [r for r, _, _ in outcomes[4].refused] == [Reason.MAC_FLAPPING] and outcomes[4].frozen == [(100, MAC)]
    assert mob.frozen_at(100, MAC, t) == B2
    assert not _announce(mob, B2, seq - 1, t + 1, ip="198.19.0.40").refused  # the owner goes on
    assert [r for r, _, _ in _announce(mob, B1, seq, t + 2).refused] == [Reason.MAC_FLAPPING]
    assert mob.frozen_at(100, MAC, t + 181) is None
    mob.prune(t + 400)
    assert not mob._flaps


def test_a_mac_and_its_mac_ip_route_are_one_move():
    mob = Mobility(flap_moves=2)
    _announce(mob, B2, 0, 0.0)
    assert not _announce(mob, B1, 1, 1.0).refused
    assert not _announce(mob, B1, 1, 1.1, ip="198.19.0.40").refused  # its MAC+IP route: the same move
    assert mob.frozen_at(100, MAC, 1.2) is None


def test_pmsi_without_tunnel_endpoint_of_another_type_is_refused():
    other = PmsiTunnel(3, 100, IPv4Address(B1).packed)  # PIM-SSM: no unicast endpoint of ours
    out = check_update(ann(IMET, pmsi=other), client(), RULES, Mobility(), 0.0)
    assert [r for r, _, _ in out.refused] == [Reason.FOREIGN_NEXT_HOP]


def test_security_log_first_at_once_then_one_summary_per_interval():
    slog = SecurityLog(interval=10.0, keep=4)
    (first,) = slog.note(B1, Reason.FOREIGN_RD, 1, "route a", 0.0)
    assert (first.count, first.example) == (1, "route a")
    assert slog.note(B1, Reason.FOREIGN_RD, 5, "route b", 1.0) == []
    assert slog.note(B1, Reason.FOREIGN_RD, 2, "route c", 2.0) == []
    assert slog.note(B2, Reason.FOREIGN_RD, 1, "other client", 2.0)  # per client
    assert slog.flush(5.0) == []
    (summary,) = slog.flush(10.5)
    assert (summary.count, summary.example, summary.first, summary.last) == (7, "route b", 1.0, 2.0)
    assert slog.flush(30.0) == [] and slog.flush(45.0) == []  # quiet: forgotten, the next one is news
    assert slog.note(B1, Reason.FOREIGN_RD, 1, "again", 46.0)
    assert len(slog.recent) == 4
