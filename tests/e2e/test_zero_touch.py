"""The whole story from empty boxes: two gateways (b2 behind a NAT) with nothing but their factory
identity get a DHCP lease whose option 143 names the controller, bootstrap (SZTP: signed redirect
from a server they do not trust yet, then onboarding over trusted TLS), enroll (EST), take their
config over the mTLS channel, and build the encrypted overlay; LAN hosts ping across. Nobody types
anything on the boxes. Then the controller goes away: traffic keeps flowing, and when it is back
the gateways reconnect on their own."""

from __future__ import annotations

import json
import os
import re
import signal
import time

from lab.zerotouch import ZeroTouchLab, serial_of


def test_zero_touch_two_branches_behind_nat(make_lab):
    lab, plan = make_lab("two-branch-nat")
    zt = ZeroTouchLab(lab, plan)
    zt.prepare()
    t0 = zt.power_on_all("--channel-retry-max", "4")  # reconnect soon after the controller returns
    try:
        zt.wait_up(timeout=60)
    except Exception:
        for g in plan.gateways:
            print(lab.log_path(g.name, "nsg").read_text()[-3000:])
        print(lab.log_path("ctl", "controller").read_text()[-3000:])
        raise
    print(f"from power-on to encrypted overlay: {time.monotonic() - t0:.1f}s")
    r = lab.run("b1-h1", "ping", "-c", "3", "-i", "0.2", "-W", "2", "198.19.0.21", check=False)
    assert r.returncode == 0, r.stdout

    # every stage reached, and reported to the controller -- only over trusted TLS, after the signed
    # redirect, with reporting-level "verbose" -- in RFC 8572's words (section 7.3 progress-type), in order
    log = lab.log_path("ctl", "controller").read_text()
    heard: dict[str, list[str]] = {}
    for serial, kind in re.findall(r"bootstrap progress (\S+) ([a-z-]+)", log):
        heard.setdefault(serial, []).append(kind)
    for g in plan.gateways:
        assert heard.get(serial_of(g.name)) == ["bootstrap-initiated", "parsing-initiated", "parsing-complete",
                                                "config-initiated", "config-complete", "bootstrap-complete"], g.name
        st = zt.gws.status(g.name)
        assert st["bootstrap"]["state"] == "done" and st["channel"]["connected"]
        assert st["config"]["generation"] >= 1 and st["last_apply"]["error"] is None
        ident = zt.state_dir(g.name) / "identity"
        for f in ("idevid.key", "ldevid.key", "onboarding.json"):
            assert oct((ident / f).stat().st_mode & 0o777) == "0o600", f
        assert oct(ident.stat().st_mode & 0o777) == "0o700"
    assert json.loads(zt.controller("gateway", "show", "b2", "--json").stdout)["behind_nat"] is True

    # the controller dies: the overlay does not care; when it is back, the channels come back
    os.kill(int((lab.dir / "logs" / "ctl-controller.pid").read_text()), signal.SIGKILL)
    outage = lab.run("b2-h1", "ping", "-c", "120", "-i", "0.5", "-W", "2", "198.19.0.11", check=False, timeout=90)
    print("during 60 s without the controller:", outage.stdout.strip().splitlines()[-2])
    assert " 0% packet loss" in outage.stdout, outage.stdout[-300:]
    down = {g.name: zt.gws.status(g.name)["channel"]["connected"] for g in plan.gateways}
    assert down == {"b1": False, "b2": False}
    zt.start_controller()
    deadline = time.monotonic() + 90
    while not all(zt.gws.status(g.name)["channel"]["connected"] for g in plan.gateways):
        assert time.monotonic() < deadline, "gateways did not reconnect"
        time.sleep(0.5)
