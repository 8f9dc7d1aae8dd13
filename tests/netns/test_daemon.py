"""The daemon for real, in a namespace: apply, reload, refuse bad config, resync drift, exit."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import sh
from tests.netns.daemon_util import NsgProcess, kernel_state
from tests.unit.conftest import base_doc


@pytest.fixture
def gw(netns_name, tmp_path):
    for p in ("wan0", "lan0"):
        sh("ip", "-n", netns_name, "link", "add", "name", p, "type", "veth", "peer", "name", p + "p")
        sh("ip", "-n", netns_name, "link", "set", p + "p", "up")
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(base_doc()))
    procs = []

    def start(*extra):
        p = NsgProcess(netns_name, cfg, tmp_path / "state", *extra)
        procs.append(p)
        return p

    yield netns_name, cfg, start
    for p in procs:
        p.stop(signal.SIGKILL)


def applied(st):
    return st["last_apply"] is not None


def test_apply_reload_and_refusal(gw):
    ns, cfg, start = gw
    d = start()
    st = d.wait(applied, what="first apply")
    la = st["last_apply"]
    assert la["error"] is None and la["changes_made"] == 19, la
    assert {x["name"] for x in st["devices"]} == {"br-100", "vx-100", "lan0"}
    assert oct((d.state / "nsg.sock").stat().st_mode & 0o777) == "0o600"

    # Same config again: zero netlink changes, and the log and status say so.
    st = d.hup_and_wait()
    assert st["last_apply"]["reason"] == "reload" and st["last_apply"]["changes_made"] == 0
    assert '"msg": "applied: no changes"' in d.log.read_text()

    # A broken push: refused with the field named, kernel untouched, daemon alive.
    before = kernel_state(ns)
    bad = base_doc()
    bad["subnets"][0]["vni"] = 1 << 24
    cfg.write_text(json.dumps(bad))
    st = d.hup_and_wait()
    assert "subnets[0].vni" in st["last_reload_error"]
    assert st["counters"]["reloads_rejected"] == 1
    assert st["config"]["generation"] == 1
    assert kernel_state(ns) == before
    cfg.write_text("{ this is not json")
    st = d.hup_and_wait()
    assert "not JSON" in st["last_reload_error"] and st["counters"]["reloads_rejected"] == 2
    assert kernel_state(ns) == before

    # A real change applies only the difference.
    good = base_doc()
    good["peers"].append({"name": "b3", "system_ip": "198.19.255.3", "endpoint": "198.18.3.2"})
    cfg.write_text(json.dumps(good))
    st = d.hup_and_wait()
    assert st["last_reload_error"] is None and st["config"]["generation"] == 2
    assert sorted(st["last_apply"]["changes"]) == [
        "add route 198.19.255.3/32 via 198.18.1.1 dev wan0 src 198.19.255.1 metric 0",
        "append fdb 00:00:00:00:00:00 dev vx-100 dst 198.19.255.3",
    ]

    # Removing the subnet removes its devices and releases the LAN port.
    good["subnets"] = []
    cfg.write_text(json.dumps(good))
    st = d.hup_and_wait()
    assert st["devices"] == []
    links = {link["ifname"]: link for link in json.loads(sh("ip", "-n", ns, "-j", "link", "show"))}
    assert "br-100" not in links and "vx-100" not in links and "master" not in links["lan0"]

    # SIGTERM: clean exit, dataplane stays up.
    good["subnets"] = base_doc()["subnets"]
    cfg.write_text(json.dumps(good))
    d.hup_and_wait()
    assert d.stop() == 0
    links = {link["ifname"] for link in json.loads(sh("ip", "-n", ns, "-j", "link", "show"))}
    assert {"br-100", "vx-100"} <= links
    assert not (d.state / "nsg.sock").exists()


def test_restart_adopts_and_flush_on_exit(gw):
    ns, _cfg, start = gw
    d = start()
    d.wait(applied)
    assert d.stop() == 0
    # A restarted daemon finds its own dataplane: nothing to do.
    d2 = start("--flush-on-exit")
    st = d2.wait(applied)
    assert st["last_apply"]["changes_made"] == 0, st["last_apply"]
    assert d2.stop() == 0
    state = kernel_state(ns)
    assert not any(link["ifname"] in ("br-100", "vx-100") for link in state["links"])
    assert not any(a[1] == "198.19.255.1" for a in state["addrs"])
    assert not any(r.get("protocol") == "250" for r in state["routes"])


def test_drift_repaired_by_resync(gw):
    ns, _cfg, start = gw
    d = start("--resync-interval", "0.5")
    d.wait(applied)
    sh("ip", "-n", ns, "link", "del", "br-100")
    sh("ip", "-n", ns, "addr", "del", "198.19.255.1/32", "dev", "lo")
    t0 = time.monotonic()
    d.wait(lambda s: s["counters"]["drift_repairs"] >= 1 and any(x["name"] == "br-100" for x in s["devices"]),
                what="drift repair")
    assert time.monotonic() - t0 < 5
    links = {link["ifname"]: link for link in json.loads(sh("ip", "-n", ns, "-j", "link", "show"))}
    assert links["lan0"]["master"] == "br-100" and links["vx-100"]["master"] == "br-100"
    addrs = json.loads(sh("ip", "-n", ns, "-j", "addr", "show", "dev", "lo"))
    assert any(i["local"] == "198.19.255.1" for i in addrs[0]["addr_info"])


def test_bad_config_at_start_is_refused(netns_name, tmp_path):
    bad = base_doc()
    bad["subnets"][0]["colour"] = "blue"
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(bad))
    p = subprocess.run(["ip", "netns", "exec", netns_name, sys.executable, "-m", "nsg.cli", "run", "--config",
                        str(cfg), "--state-dir", str(tmp_path / "s"), "--log-format", "text"],
                       capture_output=True, text=True, timeout=30, check=False)
    assert p.returncode == 2
    assert "subnets[0].colour: Extra inputs are not permitted" in p.stderr
    links = {link["ifname"] for link in json.loads(sh("ip", "-n", netns_name, "-j", "link", "show"))}
    assert links == {"lo"}


def test_status_without_daemon(tmp_path):
    p = subprocess.run([sys.executable, "-m", "nsg.cli", "status", "--state-dir", str(tmp_path)],
                       capture_output=True, text=True, check=False)
    assert p.returncode == 1 and "no nsg daemon is running" in p.stderr


def test_cli_typo_is_a_clear_error():
    p = subprocess.run([sys.executable, "-m", "nsg.cli", "status", "--jsno"], capture_output=True, text=True,
                       check=False)
    assert p.returncode == 2 and "unrecognized arguments: --jsno" in p.stderr


def test_last_good_config_boots_headless(gw):
    ns, cfg, start = gw
    d = start()
    d.wait(applied)
    assert d.stop() == 0
    last = d.state / "last-good-config.json"
    assert oct(last.stat().st_mode & 0o777) == "0o600"
    # the config file is gone bad while the box was off: it boots from what ran last
    cfg.write_text("{ broken")
    d2 = start()
    st = d2.wait(applied)
    assert "not JSON" in st["last_reload_error"]
    assert {x["name"] for x in st["devices"]} >= {"br-100", "vx-100"}
    assert d2.stop() == 0
    # and with no config file at all (a bootstrapped box restarting without its controller)
    d3 = NsgProcess(ns, None, d.state)
    try:
        st = d3.wait(applied)
        assert st["last_apply"]["error"] is None and st["config"]["system_ip"] == "198.19.255.1"
    finally:
        assert d3.stop() == 0
