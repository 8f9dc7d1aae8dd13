"""The whole story from empty boxes: two gateways with nothing but their factory identity get a
DHCP lease whose option 143 names the controller, bootstrap (SZTP with signed data from a server
they do not trust yet), enroll (EST), take their config over the mTLS channel, and build the
encrypted overlay; LAN hosts ping across. Nobody types anything on the boxes."""

from __future__ import annotations

import json
import shutil
import sys
import time

from bootstrap.identity import factory_init, make_manufacturer_ca
from bootstrap.sources.dhcp import encode_option_143
from lab.gateways import Gateways, nsg_argv

CTL = "198.18.0.2"


def ctl_cli(lab, token, *args):
    return lab.run("ctl", "env", f"NSG_CONTROLLER_TOKEN={token}", sys.executable, "-m", "controller.cli", *args,
                   "--url", "http://127.0.0.1:8443")


def test_zero_touch_two_branches(make_lab, tmp_path):
    lab, plan = make_lab("two-branch")
    mfg = tmp_path / "mfg"
    make_manufacturer_ca(mfg)
    ctl_dir = lab.node_dir("ctl")
    db = ctl_dir / "ctl.db"
    # the operator: a token, the controller, the enterprise and its two gateways (by serial)
    token = lab.run("ctl", sys.executable, "-m", "controller.cli", "token", "create", "admin", "--db",
                    str(db)).stdout.strip().split()[-1]
    lab.spawn("ctl", "controller", [sys.executable, "-m", "controller.cli", "serve", "--db", str(db), "--listen",
                                    "127.0.0.1:8443", "--devices", f"{CTL}:8444", "--state-dir",
                                    str(ctl_dir / "state"), "--manufacturer-dir", str(mfg)])
    deadline = time.monotonic() + 15
    while lab.run("ctl", sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', 8443))",
                  check=False).returncode != 0:
        assert time.monotonic() < deadline, lab.log_path("ctl", "controller").read_text()
        time.sleep(0.2)
    ctl_cli(lab, token, "enterprise", "create", "acme", "--transport", "esp")
    ctl_cli(lab, token, "subnet", "add", "acme", "corp", "--vni", "100", "--cidr", "198.19.0.0/24",
            "--gateway", "198.19.0.1")
    for g in plan.gateways:
        u = g.uplinks[0]
        ctl_cli(lab, token, "gateway", "add", "acme", g.name, "--serial", f"LAB-{g.name.upper()}", "--port",
                "corp=lan0", "--uplink", f"name=wan0,interface=wan0,mode=static,address={u.address},"
                f"gateway={u.gateway}")

    # the ISP side: DHCP on each branch link, option 143 = the bootstrap server
    opt143 = ":".join(f"{b:02x}" for b in encode_option_143([f"https://{CTL}:8444"]))
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    ranges = []
    for g in plan.gateways:
        host = g.uplinks[0].address.split("/")[0]
        ranges.append(f"--dhcp-range=set:{g.name},{host},{host},255.255.255.0,1h")
        ranges.append(f"--dhcp-option=tag:{g.name},3,{g.uplinks[0].gateway}")
    lab.spawn("inet", "dhcp", [dnsmasq, "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
                               "--no-resolv", "--no-hosts", "--user=root", "--dhcp-authoritative", "--no-ping",
                               f"--dhcp-leasefile={tmp_path / 'leases'}", f"--pid-file={tmp_path / 'dnsmasq.pid'}",
                               "--log-dhcp", "--log-facility=-", *ranges, f"--dhcp-option-force=143,{opt143}"])

    # the boxes: a factory identity each, then plugged in
    gws = Gateways(lab, plan, transport="esp")
    t0 = time.monotonic()
    for g in plan.gateways:
        factory_init(gws.state_dir(g.name) / "identity", f"LAB-{g.name.upper()}", make_manufacturer_ca(mfg))
        lab.spawn(g.name, "nsg", nsg_argv("run", "--bootstrap", "wan0", "--state-dir", str(gws.state_dir(g.name))))
    for g in plan.gateways:
        try:
            st = gws.wait_tunnels(g.name, timeout=60)
        except Exception:
            print(lab.log_path(g.name, "nsg").read_text()[-4000:])
            print(lab.log_path("ctl", "controller").read_text()[-3000:])
            raise
        assert st["bootstrap"]["state"] == "done" and st["channel"]["connected"]
    print(f"from power-on to encrypted overlay: {time.monotonic() - t0:.1f}s")
    r = lab.run("b1-h1", "ping", "-c", "3", "-i", "0.2", "-W", "2", "198.19.0.21", check=False)
    assert r.returncode == 0, r.stdout
    gw = json.loads(ctl_cli(lab, token, "gateway", "show", "b1").stdout)
    assert gw["serial"] == "LAB-B1"
    # each box told the controller how far it got (over trusted TLS, after the signed redirect)
    log = lab.log_path("ctl", "controller").read_text()
    for g in plan.gateways:
        serial = f"LAB-{g.name.upper()}"
        for stage in ("onboarding-initiated", "bootstrap-complete"):
            assert f"bootstrap progress {serial} {stage}" in log, (serial, stage)
        st = gws.status(g.name)
        assert st["config"]["generation"] >= 1 and st["last_apply"]["error"] is None
        ident = gws.state_dir(g.name) / "identity"
        for f in ("idevid.key", "ldevid.key", "onboarding.json"):
            assert oct((ident / f).stat().st_mode & 0o777) == "0o600", f
        assert oct(ident.stat().st_mode & 0o777) == "0o700"
