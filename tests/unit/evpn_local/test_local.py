"""Local learning -> type-2 origination: the pure table and the control plane's announce/withdraw logic
(speakers replaced by recorders; the real speaker runs against FRR and GoBGP in tests/interop)."""

from __future__ import annotations

import asyncio

import pytest

from bgp.codec import Update, UpdateResult
from bgp.constants import ErrorAction
from bgp.evpn_nlri import MacIpRoute, MacMobility, RouteDistinguisher, encap_vxlan, mac_ip_route, route_target
from nsg.dataplane.types import ZERO_MAC, Fdb
from nsg.evpn import control as control_mod
from nsg.evpn.local import IpEvent, LocalRoute, LocalTable, MacEvent
from nsg.evpn.rib import EvpnRib
from nsg.model import parse_config

M1, M2 = "02:00:00:00:00:01", "02:00:00:00:00:02"
SYSIP, REMOTE = "198.19.255.1", "198.19.255.2"


def test_table_macs_and_ips():
    t = LocalTable()
    t.apply(MacEvent(100, M1, "5", True))
    t.apply(IpEvent(100, "198.19.0.10", M1, True))
    t.apply(IpEvent(100, "198.19.0.20", M2, True))  # M2 is not local: no MAC+IP route for it
    assert t.routes() == {LocalRoute(100, M1), LocalRoute(100, M1, "198.19.0.10")}
    t.apply(MacEvent(100, M1, "6", True))  # moved to another LAN port: still one route
    t.apply(MacEvent(100, M1, "5", False))  # the old port's late delete changes nothing
    assert LocalRoute(100, M1) in t.routes()
    t.apply(IpEvent(100, "198.19.0.10", "", False))  # a failed entry without its MAC
    assert t.routes() == {LocalRoute(100, M1)}
    t.apply(MacEvent(100, M1, "6", False))
    assert t.routes() == set()


class Recorder:
    instances: list[Recorder] = []

    def __init__(self, config, peer, **kw):
        self.peer, self.sent, self.announce = peer, [], []
        self.kw = kw
        self.peer_restart_time: int | None = None
        self.notified = False
        Recorder.instances.append(self)

    def start(self):
        pass

    def send(self, upd: Update):
        self.sent.append(upd)


@pytest.fixture
def ctl(monkeypatch):
    Recorder.instances = []
    monkeypatch.setattr(control_mod, "Speaker", Recorder)
    changes = []
    c = control_mod.EvpnControl(EvpnRib(), lambda: changes.append(1))
    cfg = parse_config({"schema_version": 1, "system_ip": SYSIP,
                        "uplinks": [{"name": "w", "interface": "eth0", "mode": "static", "address": "198.18.0.2/24",
                                     "gateway": "198.18.0.1"}],
                        "subnets": [{"name": "corp", "vni": 100, "cidr": "198.19.0.0/24", "gateway": "198.19.0.1",
                                     "ports": ["lan0"]}],
                        "evpn": {"asn": 65000, "peers": [{"address": "198.18.0.1", "asn": 65000}]}})
    c.apply(cfg, "198.18.0.2")
    return c


def routes_of(upd: Update):
    reach, unreach = upd.mp_reach, upd.mp_unreach
    return ("announce", reach.nlri) if reach is not None else ("withdraw", unreach.nlri)


def seq_of(upd: Update) -> int:
    ext = upd.get(16)
    return max((c.sequence for c in ext.communities if isinstance(c, MacMobility)), default=0)


def test_learned_mac_is_announced_then_withdrawn(ctl):
    sp = Recorder.instances[0]
    assert len(sp.announce) == 1  # our type-3
    ctl.on_local(None, [MacEvent(100, M1, "5", True), IpEvent(100, "198.19.0.10", M1, True)])
    kinds = [routes_of(u) for u in sp.sent]
    assert [k for k, _ in kinds] == ["announce", "announce"]
    sent = [r for _, nlri in kinds for r in nlri]
    assert {(r.mac, str(r.ip) if r.ip else None, r.vni) for r in sent} == {(M1, None, 100), (M1, "198.19.0.10", 100)}
    assert all(r.rd == RouteDistinguisher.ipv4(SYSIP, 100) for r in sent)  # RD type 1: system IP : VNI
    assert len(sp.announce) == 3  # a session coming up later gets them too
    assert ctl.show()["local"][1:] == [{"type": 2, "vni": 100, "mac": M1, "ip": None, "rd": f"{SYSIP}:100",
                                        "seq": 0},
                                       {"type": 2, "vni": 100, "mac": M1, "ip": "198.19.0.10", "rd": f"{SYSIP}:100",
                                        "seq": 0}]
    sp.sent.clear()
    ctl.on_local(None, [MacEvent(100, M1, "5", False)])  # aged out: the MAC and its MAC+IP go
    assert [k for k, _ in map(routes_of, sp.sent)] == ["withdraw"]
    assert len(routes_of(sp.sent[0])[1]) == 2 and len(sp.announce) == 1


def test_resync_replaces_the_vni_state(ctl):
    sp = Recorder.instances[0]
    ctl.on_local(None, [MacEvent(100, M1, "5", True)])
    sp.sent.clear()
    ctl.on_local(frozenset({100}), [MacEvent(100, M2, "5", True)])  # the dump: M1 is gone, M2 is there
    assert sorted(k for k, _ in map(routes_of, sp.sent)) == ["announce", "withdraw"]
    assert ctl.local.routes() == {LocalRoute(100, M2)}


def test_events_for_unknown_vnis_are_ignored(ctl):
    ctl.on_local(None, [MacEvent(999, M1, "5", True)])
    assert ctl.local.routes() == set() and Recorder.instances[0].sent == []


def remote_update(mac: str, seq: int) -> UpdateResult:
    comms = [route_target(65000, 100), encap_vxlan()] + ([MacMobility(seq)] if seq else [])
    upd = Update.for_evpn((mac_ip_route(RouteDistinguisher.ipv4(REMOTE, 1), mac, None, 100),), REMOTE, comms)
    return UpdateResult(ErrorAction.NONE, update=upd)


def test_mac_mobility(ctl):
    sp = Recorder.instances[0]
    # the MAC was remote (seq 0) and then appears here: we claim it with seq 1; the kernel keeps no
    # remote entry for it any more
    ctl._on_update("198.18.0.1", remote_update(M1, 0))
    assert Fdb("vx-100", M1, REMOTE) in ctl.fdb()
    ctl.on_local(None, [MacEvent(100, M1, "5", True)])
    assert seq_of(sp.sent[-1]) == 1
    assert {f for f in ctl.fdb() if f.mac != ZERO_MAC} == set()
    # it moves away again: the remote side says seq 2 -> ours is withdrawn, the remote entry returns
    sp.sent.clear()
    ctl._on_update("198.18.0.1", remote_update(M1, 2))
    assert [k for k, _ in map(routes_of, sp.sent)] == ["withdraw"]
    assert ctl.counters["moved_away"] == 1
    assert Fdb("vx-100", M1, REMOTE) in ctl.fdb() and Fdb("vx-100", M1, "", master=True) in ctl.fdb()
    # and back here: seq 3
    ctl.on_local(None, [MacEvent(100, M1, "5", True)])
    assert seq_of(sp.sent[-1]) == 3
    announced = [r for r in routes_of(sp.sent[-1])[1] if isinstance(r, MacIpRoute)]
    assert announced[0].mac == M1


def _doc(**evpn_extra):
    return {"schema_version": 1, "system_ip": SYSIP,
            "uplinks": [{"name": "w", "interface": "eth0", "mode": "static", "address": "198.18.0.2/24",
                         "gateway": "198.18.0.1"}],
            "subnets": [{"name": "corp", "vni": 100, "cidr": "198.19.0.0/24", "gateway": "198.19.0.1"}],
            "evpn": {"asn": 65000, "peers": [{"address": "198.18.0.1", "asn": 65000}], **evpn_extra}}


@pytest.mark.parametrize(("prefix", "via", "problem"), [
    ("192.0.2.0/24", "203.0.113.9", "evpn.prefixes[0].via 203.0.113.9 is not a host of one of the subnets"),
    ("192.0.2.0/24", "198.19.0.1", "is not a host"),  # the subnet's own gateway
    ("198.19.0.128/25", "198.19.0.9", "overlaps subnet 'corp'"),
])
def test_bad_prefixes_are_refused_with_the_field_named(prefix, via, problem):
    from nsg.model import ConfigError

    with pytest.raises(ConfigError) as exc:
        parse_config(_doc(prefixes=[{"prefix": prefix, "via": via}]))
    assert problem in str(exc.value)


def test_type5_origination_and_routes(monkeypatch):
    from bgp.evpn_nlri import IpPrefixRoute
    from nsg.dataplane.types import Route

    Recorder.instances = []
    monkeypatch.setattr(control_mod, "Speaker", Recorder)
    changes = []
    c = control_mod.EvpnControl(EvpnRib(), lambda: changes.append(1))
    # what REMOTE may advertise: the config lists it (the controller renders it, controller/mesh.py); the
    # last three would capture the overlay: listed here so that the kernel-side guard is what refuses them
    allowed = ["203.0.113.0/24", "198.51.100.0/24", "198.18.0.1/32", "198.18.0.0/23", "198.19.255.1/32"]
    c.apply(parse_config(_doc(prefixes=[{"prefix": "192.0.2.0/24", "via": "198.19.0.42"}],
                              remote_prefixes=[{"system_ip": REMOTE, "prefix": p} for p in allowed])), "198.18.0.2")
    assert changes  # our own prefix is routed here too: the dataplane must follow
    sent = [r for u in Recorder.instances[0].announce for r in u.mp_reach.nlri if isinstance(r, IpPrefixRoute)]
    assert [(str(r.prefix), r.prefix_len, str(r.gateway), r.label) for r in sent] == [("192.0.2.0", 24,
                                                                                      "198.19.0.42", 100)]
    remote = IpPrefixRoute(RouteDistinguisher.ipv4(REMOTE, 9), ip("203.0.113.0"), 24, ip("198.19.0.77"), 100)
    shadow = IpPrefixRoute(RouteDistinguisher.ipv4(REMOTE, 9), ip("198.19.0.0"), 25, ip("198.19.0.77"), 100)
    unresolvable = IpPrefixRoute(RouteDistinguisher.ipv4(REMOTE, 9), ip("198.51.100.0"), 24, ip("10.1.1.1"), 100)
    upd = Update.for_evpn((remote, shadow, unresolvable), REMOTE, (route_target(65000, 100), encap_vxlan()))
    c._on_update("198.18.0.1", UpdateResult(ErrorAction.NONE, update=upd))
    assert c.routes() == {Route("192.0.2.0/24", "br-100", "198.19.0.42", None, 50),
                          Route("203.0.113.0/24", "br-100", "198.19.0.77", None, 50)}
    c._on_update("198.18.0.1", UpdateResult(ErrorAction.NONE, update=Update.withdraw_evpn((remote,))))
    assert c.routes() == {Route("192.0.2.0/24", "br-100", "198.19.0.42", None, 50)}
    # prefixes that would capture the overlay itself are held but never installed: the BGP peer, our
    # uplink's network, our system IP (a hostile or mistaken announcement must not cut the tunnels)
    hostile = [IpPrefixRoute(RouteDistinguisher.ipv4(REMOTE, 9), ip(p), n, ip("198.19.0.77"), 100)
               for p, n in (("198.18.0.1", 32), ("198.18.0.0", 23), ("198.19.255.1", 32))]
    upd = Update.for_evpn(tuple(hostile), REMOTE, (route_target(65000, 100), encap_vxlan()))
    c._on_update("198.18.0.1", UpdateResult(ErrorAction.NONE, update=upd))
    assert c.routes() == {Route("192.0.2.0/24", "br-100", "198.19.0.42", None, 50)}
    assert c.counters["prefixes_refused"] >= 3


def ip(text: str):
    from ipaddress import ip_address

    return ip_address(text)


def test_graceful_restart_keeps_a_broken_peers_routes_until_end_of_rib(ctl):
    """RFC 4724 4.2, receiving side: the reflector's session breaks (no NOTIFICATION) and it had
    offered graceful restart: its routes stay (stale) and keep forwarding; once it is back, what it
    sends again stays, and its End-of-RIB removes the rest. With a NOTIFICATION they go at once."""

    async def main():
        sp = Recorder.instances[0]
        assert sp.kw["restart_time"] == control_mod.GR_RESTART_TIME and sp.kw["forwarding_state"]
        sp.peer_restart_time = 120
        ctl._on_update("198.18.0.1", remote_update(M1, 0))
        ctl._on_update("198.18.0.1", remote_update(M2, 0))
        ctl._state("198.18.0.1", "down")
        assert Fdb("vx-100", M1, REMOTE) in ctl.fdb() and Fdb("vx-100", M2, REMOTE) in ctl.fdb()
        assert all(r.get("stale") for r in ctl.show()["received"]) and ctl.counters["stale_kept"] == 2
        ctl._on_update("198.18.0.1", remote_update(M1, 0))  # back: M1 again, M2 not
        eor = Update.withdraw_evpn(())
        ctl._on_update("198.18.0.1", UpdateResult(ErrorAction.NONE, update=eor))
        assert Fdb("vx-100", M1, REMOTE) in ctl.fdb() and Fdb("vx-100", M2, REMOTE) not in ctl.fdb()
        assert ctl.counters["stale_purged"] == 1 and not any(r.get("stale") for r in ctl.show()["received"])
        sp.notified = True  # a session that ends with a NOTIFICATION: no graceful restart
        ctl._state("198.18.0.1", "down")
        assert {f for f in ctl.fdb() if f.mac != ZERO_MAC} == set()

    asyncio.run(main())


def test_a_config_change_reaches_sessions_that_are_up(ctl):
    """A subnet added by a config push: its type-3 goes out at once (not at the next session); a subnet
    removed: its type-3 and the MACs learned in it are withdrawn. RDs of the others do not move."""
    from bgp.evpn_nlri import InclusiveMulticastRoute

    sp = Recorder.instances[0]
    ctl.on_local(None, [MacEvent(100, M1, "5", True)])
    doc = _doc()
    doc["subnets"].insert(0, {"name": "lab", "vni": 200, "cidr": "198.19.1.0/24", "gateway": "198.19.1.1"})
    sp.sent.clear()
    ctl.apply(parse_config(doc), "198.18.0.2")
    added = [r for u in sp.sent if u.mp_reach for r in u.mp_reach.nlri]
    assert [(type(r).__name__, r.rd) for r in added] == [("InclusiveMulticastRoute", RouteDistinguisher.ipv4(SYSIP,
                                                                                                            200))]
    assert len(sp.announce) == 3  # two type-3, one type-2 (its RD unchanged: nothing re-sent for it)
    sp.sent.clear()
    ctl.apply(parse_config(_doc()), "198.18.0.2")  # "lab" removed again
    withdrawn = [r for u in sp.sent if u.mp_unreach for r in u.mp_unreach.nlri]
    assert [r.rd for r in withdrawn if isinstance(r, InclusiveMulticastRoute)] == [RouteDistinguisher.ipv4(SYSIP, 200)]
    doc = _doc()
    doc["subnets"] = []
    sp.sent.clear()
    ctl.apply(parse_config(doc), "198.18.0.2")  # no subnet at all: the MAC learned in VNI 100 goes too
    withdrawn = [r for u in sp.sent if u.mp_unreach for r in u.mp_unreach.nlri]
    assert any(isinstance(r, MacIpRoute) and r.mac == M1 for r in withdrawn) and sp.announce == []


def test_vnis_that_would_share_a_route_distinguisher_are_refused():
    from nsg.model import ConfigError

    doc = _doc()
    doc["subnets"].append({"name": "b", "vni": 100 + 65536, "cidr": "198.19.1.0/24", "gateway": "198.19.1.1"})
    with pytest.raises(ConfigError, match="low 16 bits"):
        parse_config(doc)


def test_with_esp_only_vteps_inside_tunnels_are_used(monkeypatch):
    """transport esp: a route whose next hop is not one of our peers' system IPs (so not inside a
    tunnel) is held but not installed: tenant frames never cross the WAN in clear."""
    Recorder.instances = []
    monkeypatch.setattr(control_mod, "Speaker", Recorder)
    c = control_mod.EvpnControl(EvpnRib(), lambda: None)
    doc = _doc()
    doc.update(transport="esp", ipsec={"auth": "psk"},
               peers=[{"name": "b2", "system_ip": REMOTE, "endpoint": "198.18.2.2", "psk": "x" * 20}])
    c.apply(parse_config(doc), "198.18.0.2")
    c._on_update("198.18.0.1", remote_update(M1, 0))  # next hop REMOTE: a peer
    stranger = Update.for_evpn((mac_ip_route(RouteDistinguisher.ipv4("203.0.113.9", 1), M2, None, 100),),
                               "203.0.113.9", (route_target(65000, 100), encap_vxlan()))
    c._on_update("198.18.0.1", UpdateResult(ErrorAction.NONE, update=stranger))
    macs = {f.mac for f in c.fdb()}
    assert M1 in macs and M2 not in macs and c.counters["vteps_refused"] == 1


def test_treat_as_withdraw_removes_what_the_broken_update_carried(ctl):
    """RFC 7606: an UPDATE with a malformed attribute is treated as a withdrawal of the routes it
    carried; the route announced before under the same key must go, not linger."""
    ctl._on_update("198.18.0.1", remote_update(M1, 0))
    assert Fdb("vx-100", M1, REMOTE) in ctl.fdb()
    route = mac_ip_route(RouteDistinguisher.ipv4(REMOTE, 1), M1, None, 100)
    ctl._on_update("198.18.0.1", UpdateResult(ErrorAction.TREAT_AS_WITHDRAW, withdraw_nlri=(route,)))
    assert {f for f in ctl.fdb() if f.mac != ZERO_MAC} == set()


def test_routes_the_kernel_would_refuse_never_reach_the_rib(ctl):
    """A hostile or broken peer: a next hop of 0.0.0.0 or a multicast address, the all-zero MAC (it
    would become a flood entry), a multicast MAC; a MAC+IP for our gateway's address. None reaches
    the kernel objects; each is counted; a good route in the same stream still does."""
    def upd(mac, vtep, ip=None):
        r = mac_ip_route(RouteDistinguisher.ipv4(REMOTE, 1), mac, ip, 100)
        return UpdateResult(ErrorAction.NONE, update=Update.for_evpn((r,), vtep, (route_target(65000, 100),
                                                                                   encap_vxlan())))

    ctl._on_update("198.18.0.1", upd(M1, "0.0.0.0"))
    ctl._on_update("198.18.0.1", upd(M1, "224.0.0.9"))
    ctl._on_update("198.18.0.1", upd(ZERO_MAC, REMOTE))
    ctl._on_update("198.18.0.1", upd("01:00:5e:00:00:01", REMOTE))
    assert ctl.counters["routes_refused"] == 4 and ctl.fdb() == frozenset()
    ctl._on_update("198.18.0.1", upd(M2, REMOTE, "198.19.0.1"))  # our gateway's address: no neighbour entry
    ctl._on_update("198.18.0.1", upd(M1, REMOTE, "198.19.0.7"))
    assert {(n.ip, n.mac) for n in ctl.neighbors()} == {("198.19.0.7", M1)}
    assert Fdb("vx-100", M2, REMOTE) in ctl.fdb()
