"""A gateway with no config file, only its identity: it holds the mTLS channel, applies the config
the controller sends, reports results, refuses a broken push (field named, kernel untouched), and
reconnects after the controller restarts."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from bootstrap.identity import FileIdentityStore, factory_init, make_manufacturer_ca
from tests.conftest import sh
from tests.netns.daemon_util import NsgProcess, kernel_state
from tests.unit.channel.test_channel import _cert
from tests.unit.conftest import base_doc


def start_hub(ns, tmp_path):
    p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "tests.netns.helpers.hub",
                          "127.0.0.1:8443", str(tmp_path / "pki"), str(tmp_path / "configs.json"),
                          str(tmp_path / "results.json")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert p.stdout.readline().strip() == "hub up"
    return p


def results(tmp_path):
    try:
        return json.loads((tmp_path / "results.json").read_text()).get("NSG-7", [])
    except (OSError, ValueError):
        return []


def wait(pred, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_controller_drives_the_gateway(netns_name, tmp_path):
    ns = netns_name
    sh("ip", "-n", ns, "link", "add", "name", "wan0", "type", "veth", "peer", "name", "wan0p")
    sh("ip", "-n", ns, "link", "add", "name", "lan0", "type", "veth", "peer", "name", "lan0p")
    pki = tmp_path / "pki"
    pki.mkdir()
    ca_key, ca, _, ca_pem = _cert(pki, "ca", ca=True)
    (pki / "ca.pem").write_bytes(ca_pem.read_bytes())
    _cert(pki, "server", ca_key, ca, ip="127.0.0.1")
    # the gateway's identity: an IDevID, and an LDevID from the controller's CA (what EST would issue)
    state = tmp_path / "state"
    ident = state / "identity"
    factory_init(ident, "NSG-7", make_manufacturer_ca(tmp_path / "mfg"))
    lkey, lcert, _, _ = _cert(pki, "gw", ca_key, ca, serial="NSG-7")
    FileIdentityStore(ident).store_ldevid(lcert, lkey)
    (ident / "controller-ca.pem").write_bytes(ca_pem.read_bytes())
    (tmp_path / "configs.json").write_text(json.dumps({"NSG-7": [5, base_doc()]}))

    hub = start_hub(ns, tmp_path)
    d = NsgProcess(ns, None, state, "--controller", "wss://127.0.0.1:8443/channel")
    try:
        st = d.wait(lambda s: s.get("last_apply") and s["last_apply"]["error"] is None, what="first config")
        assert st["config"]["generation"] == 5 and st["channel"]["connected"]
        assert wait(lambda: results(tmp_path)) == [{"type": "apply_result", "generation": 5, "ok": True,
                                                    "error": None, "running": 5, "rolled_back": False,
                                                    "waiting": []}]
        before = kernel_state(ns)
        bad = base_doc()
        bad["subnets"][0]["vni"] = 0
        (tmp_path / "configs.json").write_text(json.dumps({"NSG-7": [6, bad]}))
        hub.send_signal(signal.SIGHUP)
        r = wait(lambda: len(results(tmp_path)) == 2 and results(tmp_path))[1]
        assert not r["ok"] and r["running"] == 5 and "subnets[0].vni" in r["error"]
        assert kernel_state(ns) == before
        # the controller goes away and comes back: the gateway keeps forwarding, then reconnects
        hub.send_signal(signal.SIGTERM)
        hub.wait(10)
        st = d.wait(lambda s: not s["channel"]["connected"], what="channel down")
        assert st["last_apply"]["error"] is None
        good = base_doc()
        good["peers"].append({"name": "b3", "system_ip": "198.19.255.3", "endpoint": "198.18.3.2"})
        (tmp_path / "configs.json").write_text(json.dumps({"NSG-7": [7, good]}))
        hub = start_hub(ns, tmp_path)
        st = d.wait(lambda s: s["config"]["generation"] == 7, timeout=30, what="reconnect and generation 7")
        assert st["channel"]["connects"] == 2
        # generation 7 ran on trial until the hub confirmed it; then it is the one the box boots with
        st = d.wait(lambda s: s["commit_confirm"]["confirmed"] >= 1 and s["commit_confirm"]["pending"] is None,
                    what="generation 7 confirmed")
        kept = json.loads((state / "last-good-config.json").read_text())
        assert [p["name"] for p in kept["peers"]][-1] == "b3"
    finally:
        d.stop()
        if hub.poll() is None:
            hub.send_signal(signal.SIGTERM)
            hub.wait(10)
