"""A config that cuts a gateway off rolls back by itself, and a deleted gateway loses its tunnels
(issue 13 sections 2 and 3), in the zero-touch lab with real controller, hub, ESP and BGP EVPN.

1. The operator moves b1's uplink to an address nothing routes to, with a 15 s confirm window. b1
   applies it and loses its controller; the controller notices the silent channel (heartbeat); no
   confirm comes, b1 puts the previous generation back, reconnects and reports the rollback; the
   controller shows the failed generation and does not push it again; b1's last good config is the
   old one. Before commit-confirm, b1 saved the stranding config as last good and stayed cut off.
2. The operator deletes b2: b1 and the hub drop it with one push, b2's LDevID is on the revocation
   list every remaining gateway holds, and b2 (which still believes in its old config) gets no tunnel.
"""

from __future__ import annotations

import json
import time

from cryptography import x509

from lab.zerotouch import ZeroTouchLab
from tests.poll import until

STRANDED = "name=wan0,interface=wan0,mode=static,address=198.18.77.2/24,gateway=198.18.77.1"


def test_stranding_push_rolls_back_and_a_deleted_gateway_is_cut_off(make_lab):
    lab, plan = make_lab("two-branch-nat")
    zt = ZeroTouchLab(lab, plan)
    zt.prepare()
    zt.power_on_all("--channel-retry-max", "2")
    zt.wait_up(timeout=60)

    def api(*args: str) -> dict:
        return json.loads(zt.controller(*args, "--json").stdout)

    def ctl_status() -> dict:
        return api("gateway", "status", "b1")

    b1 = plan.gateways[0]
    original = (f"name=wan0,interface=wan0,mode=static,address={b1.uplinks[0].address},"
                f"gateway={b1.uplinks[0].gateway}")
    before = zt.gws.status("b1")
    good_generation = before["config"]["generation"]
    until("b1 confirmed", lambda: zt.gws.status("b1")["commit_confirm"]["pending"] is None, 20)
    last_good = zt.state_dir("b1") / "last-good-config.json"
    assert json.loads(last_good.read_text())["generation"] == good_generation

    # --- 1. the stranding push ---------------------------------------------------------------
    t0 = time.monotonic()
    zt.controller("gateway", "set", "b1", "--uplink", STRANDED, "--confirm-window", "15")
    bad_generation = until("b1 on trial", lambda: (s := zt.gws.status("b1"))["commit_confirm"]["pending"]
                            and s["commit_confirm"]["pending"]["generation"], 15, 0.2)
    assert bad_generation > good_generation
    silent = until("the controller sees b1 silent", lambda: not ctl_status()["connected"], 30)
    t_silent = time.monotonic() - t0
    shown = until("the controller shows the rollback",
                   lambda: (s := ctl_status())["rolled_back_generation"] == bad_generation and s, 60)
    t_shown = time.monotonic() - t0
    print(f"stranding push: controller saw b1 silent after {t_silent:.1f}s, rollback shown after {t_shown:.1f}s")
    assert silent and "no confirmation from the controller within 15 s" in shown["rollback_reason"]
    assert t_silent < 20  # heartbeat 10 s: a silent channel is closed within 15 s (+ polling)
    st = zt.gws.status("b1")
    assert st["config"]["generation"] == good_generation
    assert st["commit_confirm"]["last_rollback"]["generation"] == bad_generation
    assert json.loads(last_good.read_text())["generation"] == good_generation  # never saved the bad one
    human = zt.controller("gateway", "status", "b1").stdout
    assert f"generation {bad_generation} rolled back" in human.splitlines()[0], human
    # the same generation is not pushed (or applied) again
    time.sleep(5)
    assert zt.gws.status("b1")["config"]["generation"] == good_generation
    assert zt.gws.status("b1")["commit_confirm"]["rolled_back"] == 1

    # the operator puts the uplink back: a new generation goes out, is confirmed and kept
    zt.controller("gateway", "set", "b1", "--uplink", original)
    fixed = until("b1 confirmed again", lambda: (s := zt.gws.status("b1"))["config"]["generation"] > bad_generation
                   and s["commit_confirm"]["pending"] is None and s["config"]["generation"], 40)
    assert json.loads(last_good.read_text())["generation"] == fixed
    zt.wait_up(timeout=60)
    r = lab.run("b1-h1", "ping", "-c", "3", "-i", "0.2", "-W", "2", "198.19.0.21", check=False)
    assert r.returncode == 0, r.stdout

    # --- 2. a deleted gateway ----------------------------------------------------------------
    b2_cert = x509.load_pem_x509_certificate((zt.state_dir("b2") / "identity" / "ldevid.pem").read_bytes())
    zt.controller("gateway", "delete", "b2")

    def b1_dropped_b2():  # the config changes first; its tunnels follow within the same apply
        s = zt.gws.status("b1")
        return (all(p["name"] != "b2" for p in s["peers"]) and all(p["peer"] != "b2" for p in s["tunnels"]["ike"])
                and s["commit_confirm"]["pending"] is None and s)

    until("b1 drops b2 (config and tunnels)", b1_dropped_b2, 30)
    crl = x509.load_pem_x509_crl(json.loads(last_good.read_text())["ipsec"]["crl"].encode())
    assert crl.get_revoked_certificate_by_serial_number(b2_cert.serial_number) is not None
    # b2 still runs its old config and keeps trying: it gets no tunnel to b1, and its hosts no path
    time.sleep(6)
    assert all(p["peer"] != "b2" for p in zt.gws.status("b1")["tunnels"]["ike"])
    ping = lab.run("b2-h1", "ping", "-c", "3", "-i", "0.3", "-W", "1", "198.19.0.11", check=False)
    assert ping.returncode != 0
    b2_ike = zt.gws.status("b2")["tunnels"]["ike"]
    assert not any(p["ike_sa"] and p["ike_sa"]["state"] == "established" and p["peer"] == "b1" for p in b2_ike)
