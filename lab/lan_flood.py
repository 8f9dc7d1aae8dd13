"""The LAN flood lab (issue 23: a host on a LAN port floods frames from random source MACs), used by
tests/e2e/test_lan_flood.py. Three things the shared lab code does not do:

- a second LAN port on a branch with a host of its own behind it (a plan gives each branch one LAN
  port, lan0 to its switch): ``add_lan_port``. The host's namespace carries the lab's prefix, so
  ``Lab.down()`` removes it with the rest;
- the zero-touch lab with those extra ports registered at the controller before anything renders a
  config or the reflector's view (``prepare``): the gateway's first config already guards both ports,
  and the reflector's per-client budget counts them;
- the flooder (``python -m lab.lan_flood IFNAME COUNT [SPREAD_S]`` inside a host's namespace): COUNT
  broadcast frames, each from its own random unicast, locally administered source MAC, written to a
  raw AF_PACKET socket as fast as it goes or spread evenly over SPREAD_S seconds. Frames are built
  before the clock starts, so the rate is the socket's, not Python's frame building. It prints one
  JSON line: {"sent", "errors", "started" (Unix time of the first frame), "seconds"}.

Spreading matters because of port security's learn rate (20 new MACs/s after a burst of 40 by
default): a flood that is over in a fraction of a second gets barely past the burst; one that lasts
longer than (max_macs - burst) / learn_rate seconds fills the port to its limit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from lab import netns

if TYPE_CHECKING:  # the flooder runs this module in a host's namespace: it imports only what it sends with
    from lab.lab import Lab
    from lab.topology import Plan
    from lab.zerotouch import ZeroTouchLab

BROADCAST = b"\xff" * 6
ETHERTYPE = b"\x88\xb5"  # IEEE 802 local experimental ethertype 1: no host stack takes it up
PAYLOAD = bytes(46)  # the Ethernet minimum


# --- the lab ---------------------------------------------------------------------------------------


def add_lan_port(lab: Lab, plan: Plan, branch: str, port: str, host: str, address: str) -> None:
    """Another LAN port ``port`` on ``branch``'s gateway, straight to a host ``host`` (no switch) with
    ``address`` (a CIDR in the tenant subnet), the tenant MTU and the subnet gateway as default route,
    as lab/topology.py sets up the hosts behind lan0. Call it after ``lab.up`` and before the gateway
    starts (its config names the port; a port missing at start leaves the gateway degraded)."""
    from nsg.dataplane.mtu import tenant_mtu

    ns = lab.ns(host)
    netns.add_namespace(ns)
    netns.add_veth(lab.ns(branch), port, ns, "eth0", f"{lab.name}:{branch}/{port}<->{host}/eth0")
    netns.add_address(ns, "eth0", address)
    netns.run("ip", "-n", ns, "link", "set", "eth0", "mtu", str(tenant_mtu(1500)))
    netns.add_route(ns, "default", str(plan.tenant.gateway))


def prepare(zt: ZeroTouchLab, ports: dict[str, tuple[str, ...]]) -> None:
    """ZeroTouchLab.prepare() with more LAN ports for some gateways (gateway -> all its ports on the
    tenant subnet), set at the controller between registering the gateways and rendering anything
    from them (the reflector's view is written from the rendered configs)."""
    from lab.gateways import HUB

    zt.start_controller(15)
    zt.register()
    for gw, ifaces in ports.items():
        zt.controller("gateway", "set", gw, "--port", f"{zt.plan.tenant.name}={','.join(ifaces)}")
    zt.start_route_reflector()
    zt.start_dhcp()
    zt.power_on(HUB)


class BackgroundPing:
    """``ping -i INTERVAL`` from a lab node until ``stop()``; started at construction. ``stop()`` ends it
    with SIGINT (ping then prints its summary) and returns (sent, received, summary line)."""

    def __init__(self, lab: Lab, node: str, dst: str, interval: float = 0.2):
        self.proc = subprocess.Popen(lab.exec_argv(node, ["ping", "-n", "-i", str(interval), "-W", "1", dst]),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self, timeout: float = 10) -> tuple[int, int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=timeout)
        return ping_summary(out)

    def kill(self) -> None:
        """For a test that ends early: the process goes (by its pid), its output with it."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def ping_summary(out: str) -> tuple[int, int, str]:
    """(transmitted, received, the summary line) of ping's output."""
    m = re.search(r"(\d+) packets transmitted, (\d+) received[^\n]*", out)
    if m is None:
        raise ValueError(f"no ping summary in {out[-300:]!r}")
    return int(m[1]), int(m[2]), m[0]


# --- the flooder (runs inside a host's namespace) --------------------------------------------------------


def random_macs(n: int) -> list[bytes]:
    """``n`` distinct unicast (I/G bit 0), locally administered (U/L bit 1) MACs (IEEE 802 8.2.2): the
    bridge drops a multicast source before any hook, and a locally administered one is what a real
    flooding tool picks and no vendor's host has."""
    seen: set[bytes] = set()
    out: list[bytes] = []
    while len(out) < n:
        mac = bytearray(os.urandom(6))
        mac[0] = (mac[0] & 0xFC) | 0x02
        b = bytes(mac)
        if b not in seen:
            seen.add(b)
            out.append(b)
    return out


def flood(ifname: str, count: int, spread_s: float = 0.0) -> dict:
    """Send ``count`` frames, one per random source MAC, on ``ifname``: as fast as the socket takes
    them, or in 200 even batches over ``spread_s`` seconds. A send the kernel refuses (ENOBUFS) is
    counted, not retried: the flood does not wait for anyone."""
    frames = [BROADCAST + mac + ETHERTYPE + PAYLOAD for mac in random_macs(count)]
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    try:
        s.bind((ifname, 0))
        step = max(1, count // 200) if spread_s > 0 else count
        errors = 0
        started = time.time()
        t0 = time.monotonic()
        for i in range(0, count, step):
            for f in frames[i:i + step]:
                try:
                    s.send(f)
                except OSError:
                    errors += 1
            if spread_s > 0:
                time.sleep(max(0.0, t0 + spread_s * min(count, i + step) / count - time.monotonic()))
        return {"sent": count - errors, "errors": errors, "started": started,
                "seconds": round(time.monotonic() - t0, 3)}
    finally:
        s.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.lan_flood", description=__doc__.split("\n\n")[0])
    ap.add_argument("ifname")
    ap.add_argument("count", type=int)
    ap.add_argument("spread_s", type=float, nargs="?", default=0.0)
    args = ap.parse_args(argv)
    print(json.dumps(flood(args.ifname, args.count, args.spread_s)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
