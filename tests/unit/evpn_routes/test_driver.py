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

    async def stop(self):
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
                     "routes_refused": 0, "routes_over_limit": 0, "duplicate_macs": 0, "moves_ignored": 0,
                     "ip_refused_own_address": 0, "ip_refused_local_neighbor": 0, "ip_refused_lower_sequence": 0},
        "frozen_macs": [],
        "alerts": [],
    }


def test_alerts_reach_on_alert_and_status_and_the_freeze_timer_runs_on_the_loop(monkeypatch):
    """Duplicate-MAC detection through the driver: the alert goes to ``on_alert`` and into status with
    the frozen MAC; the freeze timer the core asks for runs on the event loop and ends the hold."""
    from nsg.evpn.effects import DuplicateMacAlert
    from tests.unit.evpn_routes.builders import M1

    monkeypatch.setattr(control_mod, "Speaker", FakeSpeaker)
    now = [1000.0]
    got: list = []

    async def main():
        ctl = control_mod.EvpnControl(EvpnRib(), lambda: None, on_alert=got.append, clock=lambda: now[0])
        cfg = config().model_dump(mode="json")
        cfg["evpn"]["duplicate_mac"] = {"max_moves": 2, "window_s": 60, "freeze_s": 1}
        ctl.apply(type(config()).model_validate(cfg), "198.18.0.2")
        for i, vtep in enumerate((A, B, A)):
            now[0] += 1
            ctl._on_update(RR1, mac(vtep, i))
        assert [type(a) for a in got] == [DuplicateMacAlert] and got[0].mac == M1
        st = ctl.status()
        assert [(f["mac"], f["at"]) for f in st.frozen_macs] == [(M1, B)]
        assert st.alerts[0]["kind"] == "duplicate-mac" and st.alerts[0]["mac"] == M1 and "ts" in st.alerts[0]
        assert st.counters["duplicate_macs"] == 1
        now[0] += 1
        await asyncio.sleep(1.2)  # the freeze timer (1 s) fires: the hold is over
        assert ctl.status().frozen_macs == [] and ctl._freeze_timer is None
        await ctl.stop()

    asyncio.run(main())
