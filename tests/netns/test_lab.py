"""nsg-lab: topologies come up as planned, stay inside the allowed ranges, and go away completely."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys

from scapy.all import ICMP, IP, rdpcap

from lab import netns
from lab.lab import Lab
from tests.capture import capture
from tests.conftest import unique_name

ALLOWED = [ipaddress.ip_network(n) for n in ("198.18.0.0/15", "192.0.2.0/24", "198.51.100.0/24",
                                              "203.0.113.0/24")]


def nsg_lab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lab.cli", *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_cli_up_status_exec_down():
    name = unique_name()
    try:
        up = nsg_lab("up", "two-branch", "--name", name)
        assert up.returncode == 0, up.stderr
        st = json.loads(nsg_lab("status", "--json", "--name", name).stdout)
        assert set(st["nodes"]) == {"inet", "ctl", "b1", "b2", "b1-lan", "b2-lan", "b1-h1", "b2-h1"}
        assert st["nodes"]["b1-h1"]["addresses"] == ["198.19.0.11/24"]
        assert "198.18.1.1/24" in st["nodes"]["inet"]["addresses"]
        for node in st["nodes"].values():
            assert node["namespace"].startswith(name + "-")
            for a in node["addresses"]:
                assert any(ipaddress.ip_interface(a).ip in n for n in ALLOWED), a
        ex = nsg_lab("exec", "--name", name, "ctl", "--", "ping", "-c1", "-W2", "198.18.1.1")
        assert ex.returncode == 0, ex.stdout + ex.stderr
        bad = nsg_lab("exec", "--name", name, "nosuch", "--", "true")
        assert bad.returncode == 1 and "has no node 'nosuch'" in bad.stderr
        again = nsg_lab("up", "two-branch", "--name", name)
        assert again.returncode == 1 and "already up" in again.stderr
    finally:
        down = nsg_lab("down", "--name", name)
    assert down.returncode == 0 and "removed 8 namespaces" in down.stdout
    assert not [n for n in netns.list_namespaces() if n.startswith(name + "-")]


def test_bad_names_and_topologies_are_refused():
    assert "must match" in nsg_lab("up", "two-branch", "--name", "Bad-Name").stderr
    r = nsg_lab("up", "four-branch", "--name", unique_name())
    assert r.returncode == 1 and "unknown topology 'four-branch'" in r.stderr


def test_down_after_a_crash_removes_processes_and_namespaces():
    name = unique_name()
    lab = Lab(name)
    from lab import topology

    lab.up(topology.load("two-branch"))
    proc = lab.spawn("b1", "sleeper", ["sleep", "600"])
    # the "crash": the process that built the lab is gone and so is its state file
    (lab.dir / "lab.json").unlink()
    r = nsg_lab("down", "--name", name)
    assert r.returncode == 0, r.stderr
    assert proc.wait(5) is not None
    assert not [n for n in netns.list_namespaces() if n.startswith(name + "-")]
    assert not lab.dir.exists()


def test_nat_topology_masquerades(make_lab, tmp_path):
    lab, plan = make_lab("two-branch-nat")
    b2 = next(g for g in plan.gateways if g.name == "b2")
    assert b2.nat and b2.uplinks[0].address.startswith("198.18.130.") and b2.uplinks[0].public == "198.18.2.2"
    # Give b2 its planned WAN address by hand (nsg does this in real runs).
    u = b2.uplinks[0]
    lab.run("b2", "ip", "addr", "add", u.address, "dev", "wan0")
    lab.run("b2", "ip", "route", "add", "default", "via", u.gateway)
    with capture(lab.ns("inet"), "ctl0", tmp_path / "c.pcap", "icmp"):
        ping = lab.run("b2", "ping", "-c2", "-W2", plan.controller, check=False)
    assert ping.returncode == 0, ping.stdout
    pkts = [p for p in rdpcap(str(tmp_path / "c.pcap")) if p.haslayer(ICMP)]
    # The controller sees the NAT's outside address, never b2's inside one.
    assert {p[IP].src for p in pkts if p[ICMP].type == 8} == {"198.18.2.2"}
    # And nothing outside can reach b2's inside network.
    r = lab.run("inet", "ping", "-c1", "-W1", u.address.split("/")[0], check=False)
    assert r.returncode != 0
