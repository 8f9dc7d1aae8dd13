"""The firewall with real traffic, through the daemon: a gateway with two tenants (corp: an ACL with
allow/reject/drop and a default drop; guest: default allow and internet breakout with NAT), LAN
hosts on real veths, a container app on corp, and a server behind the WAN. Allowed flows pass and
their replies come back (stateful); rejects reset at once, drops stay silent; nothing crosses
between tenants; only the breakout subnet reaches the internet, NATed; per-entry counters equal the
packets sent. Bad policies are refused naming the field, the running ruleset untouched; a table nsg
does not own is never touched."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from lab import netns
from tests import docker_engine
from tests.conftest import sh, unique_name
from tests.netns.daemon_util import NsgProcess
from tests.peers import require_root

pytestmark = require_root("namespaces, nftables")

H1, H3, H2, APP, SERVER = "198.19.0.11", "198.19.0.13", "198.19.1.12", "198.19.0.50", "203.0.113.10"

SERVE = """
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(64)
    while True:
        c, a = s.accept(); c.sendall(("hello " + a[0]).encode()); c.close()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
threading.Event().wait()
"""


def config(image: str | None, *, policy: dict | None = "default") -> dict:  # type: ignore[assignment]
    if policy == "default":
        policy = {
            "groups": [{"name": "servers", "members": [f"{H3}/32", "app:web"]}],
            "tenants": [
                {"name": "corp", "subnets": ["corp"], "default": "drop", "acl": [
                    {"name": "web", "dst": "group:servers", "protocol": "tcp", "dst_ports": [80], "action": "allow"},
                    {"name": "closed", "dst": "group:servers", "protocol": "tcp", "dst_ports": ["81-82"],
                     "action": "reject"},
                    {"name": "no-ping-h3", "src": f"{H1}/32", "dst": f"{H3}/32", "protocol": "icmp",
                     "action": "drop"},
                    {"name": "ping", "protocol": "icmp", "action": "allow"}]},
                {"name": "guest", "subnets": ["guest"], "default": "allow"}],
            "breakout": [{"subnet": "guest", "uplink": "wan0"}]}
    doc = {"schema_version": 1, "system_ip": "198.19.255.1",
           "uplinks": [{"name": "wan0", "interface": "wan0", "mode": "static", "address": "198.18.1.2/24",
                        "gateway": "198.18.1.1"}],
           "subnets": [{"name": "corp", "vni": 100, "cidr": "198.19.0.0/24", "gateway": "198.19.0.1",
                        "ports": ["lan0", "lan2"]},
                       {"name": "guest", "vni": 200, "cidr": "198.19.1.0/24", "gateway": "198.19.1.1",
                        "ports": ["lan1"]}]}
    if image:
        doc["apps"] = [{"name": "web", "image": image, "subnet": "corp", "address": APP,
                        "command": ["httpd", "-f", "-p", "80", "-h", "/"]}]
    if policy is not None:
        doc["policy"] = policy
    return doc


def run(ns: str, *argv: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout,
                          check=False)


CONNECT = """
import socket, sys, time
s = socket.socket(); s.settimeout(float(sys.argv[3])); t = time.monotonic()
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
except ConnectionRefusedError: print("refused", round(time.monotonic() - t, 2))
except OSError as e: print("timeout" if isinstance(e, (socket.timeout, TimeoutError)) else f"error {e}")
else:
    try: print("open", s.recv(100).decode())  # our test servers greet at once; httpd waits for a request
    except OSError: print("open")
"""


def connect(ns: str, host: str, port: int, timeout: float = 1.5) -> str:
    return run(ns, "python3", "-c", CONNECT, host, str(port), str(timeout)).stdout.strip()


def pings(ns: str, host: str, n: int = 3) -> int:
    out = run(ns, "ping", "-c", str(n), "-i", "0.2", "-W", "1", host).stdout
    return int(out.split(" received")[0].rsplit(" ", 1)[-1]) if " received" in out else 0


def nft_counters(status: dict) -> dict[str, int]:
    return {k: v["packets"] for k, v in status["policy"]["counters"].items()}


@pytest.fixture
def site(netns_name, tmp_path):
    """gw (the daemon's namespace), h1 and h3 on corp, h2 on guest, srv behind the WAN router."""
    gw = netns_name
    made = {k: unique_name(k) for k in ("h1", "h2", "h3", "rt")}
    for ns in made.values():
        netns.add_namespace(ns)
    try:
        for port, host, addr, gwaddr in (("lan0", "h1", H1, "198.19.0.1"), ("lan2", "h3", H3, "198.19.0.1"),
                                         ("lan1", "h2", H2, "198.19.1.1")):
            sh("ip", "link", "add", "name", port, "netns", gw, "type", "veth", "peer", "name", "eth0", "netns",
               made[host])
            sh("ip", "-n", made[host], "addr", "add", f"{addr}/24", "dev", "eth0")
            sh("ip", "-n", made[host], "link", "set", "eth0", "up")
            sh("ip", "-n", made[host], "route", "add", "default", "via", gwaddr)
        # the WAN router owns 198.18.1.1 and the server's network; it has no route to the subnets
        sh("ip", "link", "add", "name", "wan0", "netns", gw, "type", "veth", "peer", "name", "eth0", "netns",
           made["rt"])
        sh("ip", "-n", made["rt"], "addr", "add", "198.18.1.1/24", "dev", "eth0")
        sh("ip", "-n", made["rt"], "link", "set", "eth0", "up")
        sh("ip", "-n", made["rt"], "addr", "add", f"{SERVER}/24", "dev", "lo")
        sh("ip", "-n", made["rt"], "link", "set", "lo", "up")
        servers = [subprocess.Popen(["ip", "netns", "exec", made[h], "python3", "-c", SERVE, "80", "81", "82", "83"])
                   for h in ("h3", "rt")]
        yield gw, made
        for p in servers:
            p.kill()
            p.wait()
    finally:
        for ns in made.values():
            netns.kill_namespace_processes(ns)
            netns.delete_namespace(ns)


def test_acls_tenants_breakout_and_counters(site, tmp_path):
    gw, ns = site
    engine = docker_engine.DockerEngine().start() if docker_engine.available() else None
    try:
        image = engine.busybox_image() if engine else None
        # a table nsg does not own, with a rule that must survive everything below
        sh("ip", "netns", "exec", gw, "nft", "add", "table", "inet", "theirs")
        sh("ip", "netns", "exec", gw, "nft", "add", "chain", "inet", "theirs", "c")
        sh("ip", "netns", "exec", gw, "nft", "add", "rule", "inet", "theirs", "c", "counter")
        (tmp_path / "gw.json").write_text(json.dumps(config(image)))
        extra = ("--docker", engine.url) if engine else ()
        d = NsgProcess(gw, tmp_path / "gw.json", tmp_path / "state", *extra)
        try:
            st = d.wait(lambda s: s.get("policy") and s["policy"]["applied"] == 1 and (
                not engine or (s.get("apps") and s["apps"]["apps"][0].get("attached"))), timeout=30,
                what="the policy applied (and the app attached)")
            time.sleep(0.5)  # the hosts' first ARP
            before = nft_counters(st)
            assert set(before) >= {"acl.corp.web", "acl.corp.closed", "acl.corp.no-ping-h3", "acl.corp.ping",
                                   "default.corp", "wall.corp", "wall.guest", "default.guest"}

            # allowed, stateful: h1 -> h3:80 connects and the reply comes back (3 connections)
            for _ in range(3):
                assert connect(ns["h1"], H3, 80) == f"open hello {H1}"
            # reject: a reset at once, not a timeout
            out = connect(ns["h1"], H3, 81)
            assert out.startswith("refused") and float(out.split()[1]) < 0.5, out
            # default drop: silence
            assert connect(ns["h1"], H3, 83, timeout=1.0) == "timeout"
            # drop entry: h1's pings to h3 vanish; the next entry lets ICMP to the gateway's other hosts through
            assert pings(ns["h1"], H3, 4) == 0
            assert pings(ns["h3"], H1, 2) == 2  # h3 -> h1 is not the dropped direction
            # between tenants: nothing, either way
            assert pings(ns["h1"], H2, 2) == 0 and pings(ns["h2"], H1, 2) == 0
            assert connect(ns["h2"], H3, 80, timeout=1.0) == "timeout"
            # breakout: guest reaches the server, NATed (the router has no route back to 198.19.1.0/24);
            # corp does not break out
            assert connect(ns["h2"], SERVER, 80) == "open hello 198.18.1.2"
            assert pings(ns["h2"], SERVER, 2) == 2
            assert connect(ns["h1"], SERVER, 80, timeout=1.0) == "timeout"
            if engine:  # the container is an endpoint like any other: in group "servers", under corp's ACL
                assert connect(ns["h1"], APP, 80).startswith("open")
                assert connect(ns["h1"], APP, 83, timeout=1.0) == "timeout"  # unfiltered: refused (no listener)
                assert connect(ns["h2"], APP, 80, timeout=1.0) == "timeout"

            after = nft_counters(d.status())
            hits = {k: after[k] - before.get(k, 0) for k in after}
            print(f"counter deltas: {hits}")
            web = 3 + (1 if engine else 0)
            assert hits["acl.corp.web"] == web  # one new flow each; the rest of each flow is conntrack's
            assert hits["acl.corp.closed"] == 1
            assert hits["acl.corp.no-ping-h3"] == 4
            assert hits["acl.corp.ping"] == 1  # h3's pings are one flow: its later requests are conntrack's
            assert hits["default.guest"] == 2  # guest's default allow: the connection and the ping to the server
            assert hits["default.corp"] >= 1 + (1 if engine else 0)  # the SYNs to h3:83 and app:83
            assert hits["wall.corp"] >= 2 + 1  # h1 -> h2 pings and h1 -> server (no breakout)
            assert hits["wall.guest"] >= 2 + (1 if engine else 0) + 1  # h2 -> h1 pings, h2 -> app, h2 -> h3

            # a bad policy is refused naming the field; the ruleset in force stays
            for bad, field in (({"name": "bad", "protocol": "tcp", "dst_ports": [70000], "action": "allow"},
                                "dst_ports"),
                               ({"name": "bad", "dst": "group:nope", "action": "allow"}, "group"),
                               (None, "qos.uplinks[0].egress_kbit")):  # a shaping rate of 0
                doc = config(image)
                if bad is not None:
                    doc["policy"]["tenants"][0]["acl"].insert(0, bad)
                else:
                    doc["qos"] = {"classes": [{"name": "A", "guaranteed_pct": 50}], "default_class": "A",
                                  "uplinks": [{"uplink": "wan0", "egress_kbit": 0}]}
                (tmp_path / "gw.json").write_text(json.dumps(doc))
                st = d.hup_and_wait()
                assert st["last_reload_error"] and field in st["last_reload_error"], st["last_reload_error"]
                assert st["policy"]["applied"] == 1
                assert connect(ns["h1"], H3, 80) == f"open hello {H1}"
                assert connect(ns["h1"], H3, 83, timeout=1.0) == "timeout"
            # the same policy again: nothing to do; counters keep counting across a real change
            (tmp_path / "gw.json").write_text(json.dumps(config(image)))
            st = d.hup_and_wait()
            assert st["policy"]["applied"] == 1 and st["policy"]["noop"] >= 1
            doc = config(image)
            doc["policy"]["tenants"][0]["acl"].append({"name": "extra", "protocol": "udp", "action": "drop"})
            (tmp_path / "gw.json").write_text(json.dumps(doc))
            kept = nft_counters(d.status())["acl.corp.web"]
            st = d.hup_and_wait()
            assert st["policy"]["applied"] == 2 and "acl.corp.extra" in st["policy"]["counters"]
            assert nft_counters(st)["acl.corp.web"] == kept > 0  # carried over the re-apply
            # policy removed: our table goes, traffic is no longer filtered; theirs is still there
            (tmp_path / "gw.json").write_text(json.dumps(config(image, policy=None)))
            st = d.hup_and_wait()
            assert connect(ns["h1"], H3, 83) == f"open hello {H1}"
            tables = run(gw, "nft", "-j", "list", "tables").stdout
            names = [t["table"]["name"] for t in json.loads(tables)["nftables"] if "table" in t]
            assert "theirs" in names and "nsg" not in names, names
        finally:
            d.stop()
    finally:
        if engine:
            engine.stop()
