"""A DHCP uplink against a real DHCP server (dnsmasq), client busybox udhcpc supervised by nsg."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess

import pytest

from lab import netns
from nsg.dataplane.mtu import tenant_mtu
from tests.conftest import sh, unique_name
from tests.netns.daemon_util import NsgProcess
from tests.unit.conftest import base_doc


@pytest.fixture
def dhcp_server(netns_name, tmp_path):
    srv = unique_name("d")
    netns.add_namespace(srv)
    sh("ip", "link", "add", "name", "srv0", "netns", srv, "type", "veth", "peer", "name", "wan0", "netns", netns_name)
    sh("ip", "-n", srv, "link", "set", "srv0", "up")
    sh("ip", "-n", srv, "addr", "add", "198.18.5.1/24", "dev", "srv0")
    sh("ip", "-n", netns_name, "link", "add", "name", "lan0", "type", "veth", "peer", "name", "lan0p")
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    proc = subprocess.Popen(
        ["ip", "netns", "exec", srv, dnsmasq, "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
         "--interface=srv0", "--bind-interfaces", "--dhcp-authoritative", "--no-ping", "--no-resolv", "--no-hosts",
         "--dhcp-range=198.18.5.10,198.18.5.20,255.255.255.0,1h", "--dhcp-option=3,198.18.5.1",
         "--dhcp-option=26,1400", f"--dhcp-leasefile={tmp_path / 'leases'}", f"--pid-file={tmp_path / 'pid'}",
         "--user=root", "--log-dhcp", "--log-facility=-"],
        stdout=open(tmp_path / "dnsmasq.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    try:
        yield netns_name
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(5)
        netns.kill_namespace_processes(srv)
        netns.delete_namespace(srv)


def test_dhcp_lease_becomes_the_uplink(dhcp_server, tmp_path):
    ns = dhcp_server
    doc = base_doc()
    doc["uplinks"] = [{"name": "wan0", "interface": "wan0", "mode": "dhcp"}]
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(doc))
    d = NsgProcess(ns, cfg, tmp_path / "state")
    try:
        st = d.wait(lambda s: s["uplinks"][0]["address"].startswith("198.18.5."), timeout=20, what="lease")
        up = st["uplinks"][0]
        addr = up["address"]
        host = int(addr.split("/")[0].rsplit(".", 1)[1])
        assert 10 <= host <= 20 and addr.endswith("/24") and up["gateway"] == "198.18.5.1"
        st = d.wait(lambda s: any(x["name"] == "br-100" and x["mtu"] == tenant_mtu(1400) for x in s["devices"]),
                    what="tenant MTU from the lease MTU")
        addrs = json.loads(sh("ip", "-n", ns, "-j", "addr", "show", "dev", "wan0"))
        assert any(f"{i['local']}/{i['prefixlen']}" == addr for i in addrs[0]["addr_info"])
        routes = json.loads(sh("ip", "-n", ns, "-j", "route", "show", "default"))
        assert [(r["gateway"], r["dev"]) for r in routes] == [("198.18.5.1", "wan0")]
        peer = json.loads(sh("ip", "-n", ns, "-j", "route", "get", "198.19.255.2"))
        assert peer[0]["gateway"] == "198.18.5.1" and peer[0]["prefsrc"] == "198.19.255.1"
    finally:
        d.stop()
    # udhcpc goes with the daemon
    assert netns.pids(ns) == []
