"""The EVPN neighbour watch against the real kernel: a burst of MACs learned on a LAN port is reported
whole and at once (no event left waiting for later netlink traffic), IP bindings on the bridge come
too, and what nsg installs itself (extern_learn entries, permanent neighbours) is left aside."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import sh
from tests.peers import require_root

pytestmark = require_root("network namespaces")

# Runs inside the namespace: watch br-100, make traffic, print what was delivered (JSON).
SCRIPT = r"""
import json, socket, subprocess, sys, time, threading
from nsg.evpn.watch import NeighWatch

got, lock = [], threading.Lock()
def deliver(vnis, events):
    with lock:
        got.append([sorted(vnis) if vnis is not None else None, [type(e).__name__ + " " + repr(e) for e in events]])
w = NeighWatch(deliver)
w.set_bridges({"br-100": 100})
time.sleep(0.5)  # the first dump
def ip(*a):
    subprocess.run(["ip", *a], check=True)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("lanp", 0))
t0 = time.monotonic()
for i in range(20):  # 20 hosts appear at once on the LAN port
    s.send(b"\xff" * 6 + bytes.fromhex("02aa000000%02x" % i) + b"\x88\xb5" + bytes(46))
ip("neigh", "add", "198.19.0.5", "lladdr", "02:aa:00:00:00:05", "dev", "br-100", "nud", "reachable")
ip("neigh", "add", "198.19.0.99", "lladdr", "02:bb:00:00:00:99", "dev", "br-100", "nud", "permanent")
# what nsg itself installs for a remote MAC
subprocess.run(["bridge", "fdb", "add", "02:cc:00:00:00:01", "dev", "vx-100", "master", "extern_learn"], check=True)
deadline = time.monotonic() + 3
while time.monotonic() < deadline:
    with lock:
        n = sum(1 for _v, evs in got for e in evs if e.startswith("MacEvent"))
    if n >= 20:
        break
    time.sleep(0.005)
took = time.monotonic() - t0
time.sleep(0.3)
w.stop()
print(json.dumps({"batches": got, "ms_to_20": round(took * 1000, 1), "counters": w.counters}))
"""


def test_watch_reports_bursts_and_ignores_our_own(netns_name):
    ns = netns_name
    for cmd in (["link", "add", "br-100", "type", "bridge"],
                ["link", "add", "vx-100", "type", "vxlan", "id", "100", "local", "198.19.255.1", "dstport", "4789"],
                ["link", "set", "vx-100", "master", "br-100"],
                ["link", "add", "lan0", "type", "veth", "peer", "name", "lanp"],
                ["link", "set", "lan0", "master", "br-100"],
                ["addr", "add", "198.19.0.1/24", "dev", "br-100"]):
        sh("ip", "-n", ns, *cmd)
    for dev in ("br-100", "vx-100", "lan0", "lanp"):
        sh("ip", "-n", ns, "link", "set", dev, "up")
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=30, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(res["ms_to_20"], "ms for 20 MACs;", res["counters"])
    events = [e for _v, evs in res["batches"] for e in evs]
    macs = {e.split("mac='")[1].split("'")[0] for e in events if e.startswith("MacEvent") and "present=True" in e}
    assert macs == {f"02:aa:00:00:00:{i:02x}" for i in range(20)}
    assert res["ms_to_20"] < 1000
    assert any("IpEvent" in e and "198.19.0.5" in e and "present=True" in e for e in events)
    assert not any("198.19.0.99" in e or "02:cc:00:00:00:01" in e or "02:bb" in e for e in events)
    assert res["batches"][0][0] == [100]  # the first delivery is the resync of the VNI
    assert res["counters"]["unfiltered"] == 0  # the kernel took the socket filter (what nsg installs stays out)
