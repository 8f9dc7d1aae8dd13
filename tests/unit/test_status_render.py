"""`nsg status` as text: one first line that says whether the box is fine and if not why, then
bootstrap, channel, each IKE SA with its own child SAs, and the rest."""

from __future__ import annotations

import copy

from nsg.status import render


def ike(peer, local_spi, children, state="established", last_error=None):
    return {"peer": peer, "initiate": True, "failures": 0, "last_error": last_error,
            "ike_sa": None if state is None else {
                "state": state, "local_spi": local_spi, "remote_spi": "00" * 8, "initiator": True,
                "peer": "198.18.2.2:4500", "remote_id": "198.19.255.2", "nat_local": False, "nat_remote": True,
                "children": [{"id": i, "in_spi": f"{a:#010x}", "out_spi": f"{b:#010x}", "active": True,
                              "deleting": False} for i, (a, b) in enumerate(children, 1)],
                "counters": {}, "closed_reason": None}}


def sad(direction, spi, packets):
    return {"dir": direction, "spi": f"{spi:#010x}", "packets": packets, "bytes": packets * 100,
            "replay_drops": 0, "auth_failures": 0}


def doc():
    return {
        "version": "0.1", "pid": 42, "uptime_s": 12.5,
        "config": {"path": "/etc/nsg.json", "generation": 7, "config_generation": 7,
                   "system_ip": "198.19.255.1", "transport": "esp"},
        "uplinks": [{"name": "wan0", "interface": "wan0", "mode": "static", "address": "198.18.1.2/24",
                     "gateway": "198.18.1.1"}],
        "subnets": [], "peers": [], "devices": [],
        "tunnels": {
            "backend": "userspace", "kernel_esp": False,
            "ike": [ike("b2", "aa" * 8, [(0x1001, 0x2001)]), ike("hub", "bb" * 8, [(0x1002, 0x2002)])],
            "child_sas": [sad("in", 0x1001, 11), sad("in", 0x1002, 22), sad("out", 0x2001, 33),
                          sad("out", 0x2002, 44)],
            "engine": {"udp_in": 5}, "ike_driver": {}, "ike_manager": {},
        },
        "channel": {"url": "wss://198.18.0.2:8443/channel", "connected": True, "since": 1.0, "last_error": None,
                    "connects": 1, "failures": 0},
        "bootstrap": {"state": "done", "attempts": 1, "last_error": None,
                      "discovery": {"attempts": {"file": 1, "dhcp": 1}, "failures": {}, "last_error": {}}},
        "evpn": None,
        "last_apply": {"generation": 7, "reason": "controller", "at": 0.0, "error": None, "changes_made": 3,
                       "waiting": []},
        "last_reload_error": None,
        "counters": {"applies": 7},
    }


def section(text: str, start: str) -> list[str]:
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if line.strip().startswith(start))
    out = [lines[i]]
    for line in lines[i + 1:]:
        if not line.startswith("    "):
            break
        out.append(line)
    return out


def test_child_sas_sit_under_their_own_ike_sa():
    text = render(doc())
    b2, hub = section(text, "b2"), section(text, "hub")
    assert any("0x00001001" in line for line in b2) and any("0x00002001" in line for line in b2), text
    assert any("0x00001002" in line for line in hub) and any("0x00002002" in line for line in hub), text
    assert not any("0x00001002" in line for line in b2), text


def test_first_line_says_ok():
    assert render(doc()).splitlines()[0] == "OK: 2/2 tunnels up, channel connected, generation 7 applied"


def test_first_line_says_what_is_wrong():
    st = doc()
    st["tunnels"]["ike"][0] = ike("b2", None, [], state=None, last_error="no answer to IKE_SA_INIT after 5 tries")
    st["last_apply"]["error"] = "nft: rule refused"
    first = render(st).splitlines()[0]
    assert first.startswith("DEGRADED: "), first
    assert "tunnel to b2 down (no answer to IKE_SA_INIT after 5 tries)" in first
    assert "last apply failed: nft: rule refused" in first
    st = doc()
    st["channel"].update(connected=False, last_error="ConnectionRefusedError: [Errno 111]")
    assert "channel down (ConnectionRefusedError" in render(st).splitlines()[0]


def test_bootstrap_and_channel_are_shown():
    text = render(doc())
    assert "bootstrap: done" in text
    assert "channel: connected to wss://198.18.0.2:8443/channel" in text


def test_a_box_still_bootstrapping():
    st = {"version": "0.1", "pid": 42, "config": None, "last_apply": None, "channel": None,
          "counters": {"applies": 0}, "last_reload_error": None,
          "bootstrap": {"state": "discovering", "attempts": 3, "last_error": "no bootstrap server found",
                        "discovery": {"attempts": {"file": 3, "dhcp": 3}, "failures": {"dhcp": 3},
                                      "last_error": {"dhcp": "no offer"}}}}
    text = render(st)
    first = text.splitlines()[0]
    assert first.startswith("DEGRADED: no config yet"), first
    assert "bootstrap discovering" in first
    assert ("bootstrap: discovering (attempt 3): no bootstrap server found; discovery 6 attempts, 3 failed"
            " (last: dhcp: no offer)") in text.splitlines()


def test_no_evpn_still_shows_the_last_apply():
    st = copy.deepcopy(doc())
    assert st["evpn"] is None
    assert "last apply: generation 7 (controller)" in render(st)


def test_port_guard_and_alerts_in_the_text():
    from nsg.status import render

    doc = {"version": "0.1.0", "pid": 1, "config": {"path": "c.json", "generation": 1, "config_generation": 1,
                                                    "system_ip": "198.19.255.1", "transport": "esp"},
           "port_guard": {"ports": {"lan0": {"kind": "lan", "macs": 256, "max_macs": 256,
                                             "dropped": {"full": {"packets": 4000}, "rate": {"packets": 891}}},
                                    "vx-100": {"kind": "overlay", "dropped": {"spoof": {"packets": 3},
                                                                              "gateway_arp": {"packets": 2}}}}},
           "alerts": {"counts": {"port-security": 1}, "unsent": 1,
                      "last": [{"ts": 0, "reason": "port-security",
                                "message": "port lan0 of 198.19.255.1: 4891 frames from new MACs refused in 5 s, "
                                           "limited to 256 MACs"}]}}
    text = render(doc)
    assert "port guard: lan0 256/256 MACs; new MACs refused 4891 frames; forged from the overlay 5 frames" in text
    assert "security alerts: port-security 1 (1 not sent to the controller yet)" in text
    assert "port lan0 of 198.19.255.1: 4891 frames from new MACs refused in 5 s, limited to 256 MACs" in text


def test_the_upgrade_line_and_a_held_upgrade_in_the_verdict():
    d = doc()
    d["upgrade"] = {
        "appliance": True, "model": "nsg-atom-x86_64", "running_version": "1.3.0", "committed_version": "1.3.0",
        "booted_slot": "b", "committed_slot": "b", "state": "committed",
        "last_attempt": {"from_version": "1.3.0", "target_version": "1.4.0", "from_slot": "b", "target_slot": "a",
                         "phase": "fell-back", "started": 1.0, "updated": 2.0,
                         "reason": "slot a was not healthy within 30 s"},
        "agent": {"action": "held", "target": "1.4.0", "detail": "1.4.0 was tried here and fell back"}}
    lines = render(d).splitlines()
    assert lines[0].startswith("DEGRADED: upgrade to 1.4.0 held: 1.4.0 was tried here and fell back")
    at = next(i for i, line in enumerate(lines) if line.startswith("upgrade:"))
    assert lines[at] == ("upgrade: running 1.3.0 (slot b), committed 1.3.0 (slot b); target 1.4.0: held: 1.4.0 was "
                         "tried here and fell back")
    assert lines[at + 1] == "  last attempt 1.3.0 -> 1.4.0 (slot a): fell back: slot a was not healthy within 30 s"
    d["upgrade"] = {"appliance": True, "running_version": "1.4.0", "committed_version": "1.3.0", "booted_slot": "a",
                    "committed_slot": "b", "state": "trial", "agent": {"action": "up-to-date", "target": "1.4.0"}}
    assert render(d).splitlines()[0].startswith("OK")
    assert "upgrade: running 1.4.0 (slot a, on trial), committed 1.3.0 (slot b); target 1.4.0: up-to-date" in render(d)
    d["upgrade"] = {"appliance": False, "detail": "not an A/B appliance: /usr/share/nsg/release.json is missing"}
    assert "upgrade: not an A/B appliance: /usr/share/nsg/release.json is missing" in render(d).splitlines()
