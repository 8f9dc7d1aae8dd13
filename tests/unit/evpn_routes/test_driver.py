"""The driver (nsg/evpn/control.py) around the core, with fake speakers: the stale timer the core asks
for runs on the event loop and purges when it fires; status() is typed (nsg.model.status.EvpnStatus)
and dumps to the document `nsg status --json` has always shown."""

from __future__ import annotations

import asyncio

from bgp import fsm
from nsg.evpn import control as control_mod
from nsg.evpn.local import MacEvent
from nsg.evpn.rib import EvpnRib
from nsg.model.status import EvpnStatus
from tests.unit.evpn_routes.builders import M2, RR1, RR2, VNI, A, B, config, imet, mac


class FakeSpeaker:
    def __init__(self, config: fsm.Config, peer: str, **_kw):
        self.session = fsm.Session(config)
        self.announce: list = []
        self.peer_restart_time = None
        self.notified = False

    def start(self):
        pass

    def send(self, _upd):
        pass


def test_the_stale_timer_runs_out_on_the_loop(monkeypatch):
    monkeypatch.setattr(control_mod, "Speaker", FakeSpeaker)
    changes = []

    async def main():
        ctl = control_mod.EvpnControl(EvpnRib(), lambda: changes.append(1))
        ctl.apply(config(), "198.18.0.2")
        ctl._on_update(RR1, mac(A))
        ctl.speakers[RR1].peer_restart_time = 0.05  # the peer's, from its OPEN
        changes.clear()
        ctl._state(RR1, "down")
        assert RR1 in ctl._stale_timers and ctl.rib.macs and not changes
        await asyncio.sleep(0.2)
        assert not ctl._stale_timers and not ctl.rib.macs and changes == [1]
        assert ctl.counters["stale_purged"] == 1

    asyncio.run(main())


def test_status_is_typed_and_dumps_as_before(monkeypatch):
    monkeypatch.setattr(control_mod, "Speaker", FakeSpeaker)
    ctl = control_mod.EvpnControl(EvpnRib(), lambda: None)
    ctl.apply(config(), "198.18.0.2")
    ctl.speakers[RR1].session.counters["updates"] = 3
    ctl._on_update(RR1, mac(A))
    ctl._on_update(RR1, mac(B, 1))
    ctl._on_update(RR1, imet(A))
    ctl.on_local(None, [MacEvent(VNI, M2, "lan0", True)])
    st = ctl.status()
    assert isinstance(st, EvpnStatus)
    session = {"opens": 0, "updates": 0, "keepalives": 0, "notifications_in": 0, "notifications_out": 0, "flaps": 0}
    assert st.model_dump(mode="json") == {
        "peers": {RR1: {"state": "Idle", **session, "updates": 3}, RR2: {"state": "Idle", **session}},
        "routes": {"mac": 2, "imet": 1, "prefix": 0, "local": 1},
        "counters": {"local_learned": 1, "local_withdrawn": 0, "moved_away": 0, "sticky_conflicts": 0,
                     "stale_kept": 0, "stale_purged": 0, "prefixes_refused": 0, "vteps_refused": 0,
                     "routes_refused": 0},
    }
