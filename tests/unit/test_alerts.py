"""nsg/alerts.py: security alerts counted, kept and queued (bounded), port-security alerts derived from two
readings of the port guard, and the channel Event each becomes (the controller's SecurityDetail)."""

from __future__ import annotations

from nsg.alerts import MAX_KEPT, MAX_QUEUED, Alerts, port_alerts, refused_macs
from nsg.channel import wire
from nsg.link import _security_event
from nsg.model.status import PortGuardStatus


def _guard(full: int, rate: int, macs: int = 256) -> PortGuardStatus:
    return PortGuardStatus.model_validate({"ports": {
        "lan0": {"kind": "lan", "macs": macs, "max_macs": 256,
                 "dropped": {"full": {"packets": full, "bytes": 0}, "rate": {"packets": rate, "bytes": 0}}},
        "vx-100": {"kind": "overlay", "dropped": {"spoof": {"packets": 9, "bytes": 0}}}}})


def test_alerts_are_counted_kept_and_queued_within_bounds():
    a = Alerts()
    for i in range(MAX_QUEUED + 10):
        a.add(float(i), "duplicate-mac", f"MAC {i}", mac=f"02:00:00:00:00:{i % 256:02x}")
    st = a.status()
    assert st.counts == {"duplicate-mac": MAX_QUEUED + 10} and len(st.last) == MAX_KEPT
    assert st.unsent == MAX_QUEUED and st.dropped == 10
    taken = a.take()
    assert taken[0].message == "MAC 10" and a.status().unsent == 0
    a.put_back(taken[-3:])
    assert [x.message for x in a.take()] == [f"MAC {MAX_QUEUED + 7}", f"MAC {MAX_QUEUED + 8}", f"MAC {MAX_QUEUED + 9}"]


def test_a_port_refusing_new_macs_raises_one_alert_naming_it():
    first = _guard(4000, 900)
    assert refused_macs(first) == {"lan0": 4900}  # the overlay port is not a LAN port
    (alert,) = port_alerts({}, first, 5.0, "198.19.255.1")
    reason, message, fields = alert
    assert reason == "port-security" and fields == {"port": "lan0", "refused": 4900, "max_macs": 256, "macs": 256}
    assert message == "port lan0 of 198.19.255.1: 4900 frames from new MACs refused in 5 s, limited to 256 MACs"
    assert port_alerts(refused_macs(first), first, 5.0, "b1") == []  # nothing new: no alert
    assert port_alerts({}, None, 5.0, "b1") == []


def test_an_alert_becomes_a_security_event_the_controller_takes():
    a = Alerts()
    alert = a.add(1700000000.0, "duplicate-mac", "MAC 02:00:00:00:00:07 moved 5 times", mac="02:00:00:00:00:07",
                  count=99)  # a field named like the detail's own keys does not override them
    ev = _security_event(alert)
    assert isinstance(ev, wire.Event) and ev.kind == "security"
    detail = wire.SecurityDetail.model_validate(ev.detail)
    assert (detail.reason, detail.count, detail.message) == ("duplicate-mac", 1, "MAC 02:00:00:00:00:07 moved 5 times")
    assert ev.detail["mac"] == "02:00:00:00:00:07"
    assert wire.decode(wire.encode(ev)) == ev


def test_evpn_alerts_said_for_people():
    from nsg.alerts import evpn_alert_message
    from nsg.evpn.effects import DuplicateMacAlert, RouteLimitAlert

    dup = DuplicateMacAlert(vni=100, mac="02:00:00:00:00:07", sites=("198.19.255.2", "local"), moves=5, window=180.0,
                            frozen_at="local", hold=180.0)
    assert evpn_alert_message(dup) == ("MAC 02:00:00:00:00:07 (VNI 100) moved 5 times in 180 s between "
                                       "198.19.255.2, local: frozen at local for 180 s")
    lim = RouteLimitAlert(peer="198.19.255.254", site="198.19.255.1", routes=10000, limit=10000, refusing=True)
    assert evpn_alert_message(lim) == ("site 198.19.255.1 via peer 198.19.255.254: 10000 EVPN routes, limit 10000; "
                                       "new ones refused")


def test_an_alert_too_big_for_the_channel_is_dropped_and_counted_not_raised():
    """An alert whose fields break the channel's Event bounds (here 5 KiB in one field) used to raise
    pydantic's ValidationError inside the channel session; now it is dropped, counted and logged, and
    the alerts around it still go."""
    from nsg.link import ControllerLink

    class Host(ControllerLink):
        def __init__(self) -> None:
            self.counters: dict[str, int] = {}

    a = Alerts()
    ok1 = a.add(1.0, "duplicate-mac", "one", mac="02:00:00:00:00:01")
    a.add(2.0, "port-security", "huge", port="x" * 5000)
    ok2 = a.add(3.0, "duplicate-mac", "two", mac="02:00:00:00:00:02")
    host = Host()
    pairs = host._security_events(a.take())
    assert [alert for alert, _event in pairs] == [ok1, ok2]
    assert [event.detail["message"] for _alert, event in pairs] == ["one", "two"]
    assert host.counters == {"alerts_unsendable": 1}
