"""MAC mobility through the control plane (issue 13 section 5): real UPDATE messages in, the kernel
objects and our announcements out. The speakers are recorders (the real speaker runs against GoBGP
in tests/interop/test_evpn_mobility_gobgp.py)."""

from __future__ import annotations

import asyncio

import pytest

from bgp.codec import Update, UpdateResult
from bgp.constants import MAC_MOBILITY_STICKY, ErrorAction
from bgp.evpn_nlri import (
    MacIpRoute,
    MacMobility,
    RouteDistinguisher,
    encap_vxlan,
    inclusive_multicast_route,
    mac_ip_route,
    route_target,
)
from nsg.dataplane.types import ZERO_MAC, Fdb, Neigh
from nsg.evpn import control as control_mod
from nsg.evpn.local import MacEvent
from nsg.evpn.rib import EvpnRib
from nsg.model import parse_config

SYSIP = "198.19.255.10"
A, B, HIGH = "198.19.255.2", "198.19.255.3", "198.19.255.20"  # remote VTEPs; HIGH is above our system IP
RR1, RR2 = "198.18.0.1", "198.18.0.5"
M1 = "02:00:00:00:00:01"
X = "198.19.0.9"


class Recorder:
    instances: list[Recorder] = []

    def __init__(self, config, peer, **kw):
        self.peer, self.sent, self.announce = peer, [], []
        self.peer_restart_time: int | None = None
        self.notified = False
        Recorder.instances.append(self)

    def start(self):
        pass

    def send(self, upd: Update):
        self.sent.append(upd)

    async def stop(self):
        pass


def _config(peers=(RR1,), vnis=(100,)):
    return parse_config({
        "schema_version": 1, "system_ip": SYSIP,
        "uplinks": [{"name": "w", "interface": "eth0", "mode": "static", "address": "198.18.0.2/24",
                     "gateway": "198.18.0.1"}],
        "subnets": [{"name": f"s{v}", "vni": v, "cidr": f"198.19.{i}.0/24", "gateway": f"198.19.{i}.1",
                     "ports": [f"lan{i}"]} for i, v in enumerate(vnis)],
        "evpn": {"asn": 65000, "peers": [{"address": a, "asn": 65000} for a in peers]}})


@pytest.fixture
def make(monkeypatch):
    def build(**kw):
        Recorder.instances = []
        monkeypatch.setattr(control_mod, "Speaker", Recorder)
        c = control_mod.EvpnControl(EvpnRib(), lambda: None)
        c.apply(_config(**kw), "198.18.0.2")
        return c
    return build


def rd(vtep: str, n: int = 100) -> RouteDistinguisher:
    return RouteDistinguisher.ipv4(vtep, n)


def announce(vtep: str, seq: int = 0, *, ip: str | None = None, sticky: bool = False, rd_n: int = 100,
             vni: int = 100) -> UpdateResult:
    comms = [route_target(65000, vni), encap_vxlan()]
    if seq or sticky:
        comms.append(MacMobility(seq, MAC_MOBILITY_STICKY if sticky else 0))
    upd = Update.for_evpn((mac_ip_route(rd(vtep, rd_n), M1, ip, vni),), vtep, comms)
    return UpdateResult(ErrorAction.NONE, update=upd)


def withdraw(vtep: str, *, ip: str | None = None, rd_n: int = 100, vni: int = 100) -> UpdateResult:
    """As a BGP speaker sends it: the NLRI only (RD, MAC, IP), no next hop, no communities."""
    return UpdateResult(ErrorAction.NONE, update=Update.withdraw_evpn((mac_ip_route(rd(vtep, rd_n), M1, ip, vni),)))


def where(ctl) -> set[str]:
    return {f.dst for f in ctl.fdb() if f.mac == M1 and not f.master}


def our_type2(upd: Update) -> list[MacIpRoute]:
    reach = upd.mp_reach
    return [r for r in reach.nlri if isinstance(r, MacIpRoute)] if reach is not None else []


def seq_of(upd: Update) -> int:
    ext = upd.get(16)
    return max((c.sequence for c in ext.communities if isinstance(c, MacMobility)), default=0)


@pytest.mark.parametrize(("gone", "stays"), [(A, B), (B, A)], ids=["older withdrawn first", "newer withdrawn first"])
def test_remote_to_remote_move_then_a_withdrawal(make, gone, stays):
    """The host moved from A (seq 0) to B (seq 1); both routes reach us through one reflector under
    their own RDs. Whichever is withdrawn, the other one stays installed."""
    ctl = make()
    ctl._on_update(RR1, announce(A, 0))
    ctl._on_update(RR1, announce(B, 1))
    assert where(ctl) == {B}
    shown = [(r["vtep"], r["seq"], r["best"]) for r in ctl.show()["received"] if r["type"] == 2]
    assert sorted(shown) == [(A, 0, False), (B, 1, True)]
    ctl._on_update(RR1, withdraw(gone))
    assert where(ctl) == {stays}
    assert Fdb("vx-100", M1, "", master=True) in ctl.fdb()


def test_mac_ip_routes_follow_the_winner(make):
    ctl = make()
    for vtep, seq in ((A, 0), (B, 1)):
        ctl._on_update(RR1, announce(vtep, seq))
        ctl._on_update(RR1, announce(vtep, seq, ip=X))
    ctl._on_update(RR1, withdraw(A, ip=X))
    ctl._on_update(RR1, withdraw(A))
    assert where(ctl) == {B} and ctl.neighbors() == {Neigh("br-100", X, M1)}
    ctl._on_update(RR1, withdraw(B, ip=X))
    assert ctl.neighbors() == frozenset()


def test_two_peers_one_goes_down(make):
    """Two reflectors send the same route; one session ends (no graceful restart): the other's copy
    keeps the MAC installed. Then that one withdraws it too: gone."""
    ctl = make(peers=(RR1, RR2))
    ctl._on_update(RR1, announce(A, 2))
    ctl._on_update(RR2, announce(A, 2))
    ctl._state(RR1, "down")
    assert where(ctl) == {A}
    ctl._on_update(RR2, withdraw(A))
    assert where(ctl) == set()


def test_two_peers_one_withdraws_the_newer_route(make):
    ctl = make(peers=(RR1, RR2))
    for peer in (RR1, RR2):
        ctl._on_update(peer, announce(A, 0))
        ctl._on_update(peer, announce(B, 1))
    ctl._on_update(RR1, withdraw(B))  # RR2 still has B's route: the MAC stays at B
    assert where(ctl) == {B}
    ctl._on_update(RR2, withdraw(B))
    assert where(ctl) == {A}


def test_remote_to_local_outbids_every_path(make):
    """A local learn of a MAC known through several paths is announced one above the highest of them
    (RFC 7432 15.1), stays ours when those are withdrawn, and a later learn after it aged out
    outbids what is left."""
    ctl = make()
    sp = Recorder.instances[0]
    ctl._on_update(RR1, announce(A, 3))
    ctl._on_update(RR1, announce(B, 5))
    ctl._on_update(RR1, withdraw(A))
    ctl._on_update(RR1, announce(A, 4))
    ctl.on_local(None, [MacEvent(100, M1, "5", True)])
    assert [r.mac for r in our_type2(sp.sent[-1])] == [M1] and seq_of(sp.sent[-1]) == 6
    assert where(ctl) == set()
    ctl._on_update(RR1, withdraw(B))  # the old site withdraws: nothing changes for us
    assert where(ctl) == set() and ctl.counters["moved_away"] == 0
    ctl.on_local(None, [MacEvent(100, M1, "5", False)])  # aged out here: A's path is installed again
    assert where(ctl) == {A}
    ctl.on_local(None, [MacEvent(100, M1, "5", True)])
    assert seq_of(sp.sent[-1]) == 5


def test_local_to_remote_moves_away(make):
    """Ours (seq 0), then a remote route with seq 1: ours is withdrawn, the remote path installed;
    its withdrawal afterwards leaves nothing (we do not re-announce a MAC the bridge no longer has)."""
    ctl = make()
    sp = Recorder.instances[0]
    ctl.on_local(None, [MacEvent(100, M1, "5", True)])
    sp.sent.clear()
    ctl._on_update(RR1, announce(B, 1))
    assert [u.mp_unreach is not None for u in sp.sent] == [True] and ctl.counters["moved_away"] == 1
    assert where(ctl) == {B}


@pytest.mark.parametrize(("remote", "moves"), [(A, True), (HIGH, False)], ids=["lower IP", "higher IP"])
def test_equal_sequence_numbers_local_against_remote(make, remote, moves):
    """RFC 7432 15.1: the same sequence number from another PE: the lowest IP wins, and the PE whose
    own route lost withdraws it."""
    ctl = make()
    sp = Recorder.instances[0]
    ctl.on_local(None, [MacEvent(100, M1, "5", True)])
    sp.sent.clear()
    ctl._on_update(RR1, announce(remote, 0))
    assert ctl.counters["moved_away"] == int(moves)
    assert where(ctl) == ({remote} if moves else set())
    assert [u.mp_unreach is not None for u in sp.sent] == ([True] if moves else [])


def test_a_sticky_remote_mac_is_not_taken_over(make):
    """RFC 7432 15.2: a MAC another PE advertises as static does not move to us: a local learn of it
    is not announced (the operator is alerted: a counter and a warning), the remote entry stays.
    When the static route goes, the MAC is ours and announced above what is left."""
    ctl = make()
    sp = Recorder.instances[0]
    ctl._on_update(RR1, announce(B, 0, sticky=True))
    sp.sent.clear()
    ctl.on_local(None, [MacEvent(100, M1, "5", True)])
    assert sp.sent == [] and where(ctl) == {B} and ctl.counters["sticky_conflicts"] == 1
    ctl._on_update(RR1, withdraw(B))
    assert [r.mac for u in sp.sent for r in our_type2(u)] == [M1] and where(ctl) == set()


def test_a_sticky_route_for_a_mac_of_ours(make):
    """We announced the MAC; then another PE announces it as static: ours is withdrawn."""
    ctl = make()
    sp = Recorder.instances[0]
    ctl.on_local(None, [MacEvent(100, M1, "5", True)])
    sp.sent.clear()
    ctl._on_update(RR1, announce(HIGH, 0, sticky=True))
    assert [u.mp_unreach is not None for u in sp.sent] == [True] and where(ctl) == {HIGH}


def test_type3_routes_of_two_vnis_from_one_vtep(make):
    """One VTEP, two VNIs: two type-3 routes (two RDs) from the same peer: both flood entries."""
    ctl = make(vnis=(100, 200))
    for vni in (100, 200):
        imet, pmsi = inclusive_multicast_route(rd(A, vni), vni, A)
        upd = Update.for_evpn((imet,), A, (route_target(65000, vni), encap_vxlan()), pmsi=pmsi)
        ctl._on_update(RR1, UpdateResult(ErrorAction.NONE, update=upd))
    assert {(f.ifname, f.dst) for f in ctl.fdb() if f.mac == ZERO_MAC} == {("vx-100", A), ("vx-200", A)}
    imet, _ = inclusive_multicast_route(rd(A, 100), 100, A)
    ctl._on_update(RR1, UpdateResult(ErrorAction.NONE, update=Update.withdraw_evpn((imet,))))
    assert {(f.ifname, f.dst) for f in ctl.fdb() if f.mac == ZERO_MAC} == {("vx-200", A)}


def test_graceful_restart_stale_paths_and_a_move(make):
    """A reflector's session breaks (graceful restart): its paths stay, stale. The other reflector
    meanwhile brings the move to B; End-of-RIB from the first without A's route removes only that."""
    async def main():
        ctl = make(peers=(RR1, RR2))
        Recorder.instances[0].peer_restart_time = 120
        ctl._on_update(RR1, announce(A, 0))
        ctl._state(RR1, "down")
        ctl._on_update(RR2, announce(B, 1))
        assert where(ctl) == {B}
        ctl._on_update(RR1, UpdateResult(ErrorAction.NONE, update=Update.withdraw_evpn(())))  # End-of-RIB
        assert where(ctl) == {B} and ctl.counters["stale_purged"] == 1
        ctl._on_update(RR2, withdraw(B))
        assert where(ctl) == set()
        await ctl.stop()

    asyncio.run(main())
