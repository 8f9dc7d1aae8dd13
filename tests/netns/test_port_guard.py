"""LAN port security and the overlay frame guard (table bridge nsg_port) on a real kernel bridge.

    h1 (198.19.0.11) -- lan0 \\                                        198.18.0.1      198.18.0.2
                              br-100 (198.19.0.1, anycast MAC) -- vx-100 ==wan0====wan0== vx-100  rv
    h2 (198.19.0.12) -- lan1 /|\\      gw                                               (the remote VTEP)
       app "web" (198.19.0.50) -- a-<hash>   v-<hash> -- VM "db" (a TAP, written to by the test)

The bridge learns on every port, the VXLAN port included (nsg without EVPN), so a frame that got
through would show in `bridge fdb`. Each attack is first made without the guard and shown to work,
then repeated with it. The table is what nsg.compose wants for the config (workload ports included);
the app's veth and the VM's TAP are made by containers.attach, as the supervisors make them, the app's
into a namespace standing in for a container (a `sleep` in it gives attach its pid). Timings and
counters are printed (pytest -s).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from lab import netns
from nsg.dataplane.desired import anycast_mac
from tests.conftest import unique_name
from tests.peers import require_root

pytestmark = require_root("namespaces, nftables")

GW_IP, H1_IP, H2_IP = "198.19.0.1", "198.19.0.11", "198.19.0.12"
LOCAL_VTEP, REMOTE_VTEP = "198.18.0.1", "198.18.0.2"
GW_MAC = anycast_mac(100)
FORGED = "02:66:66:66:66:66"

# Frames from unique random unicast source MACs, prebuilt, then written to a raw socket in a loop (as
# fast as it goes, or spread over a given time in 100 batches).
FLOOD = r"""
import json, os, socket, sys, time
ifname, n, kind, spread = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
dst, etype = (b"\xff" * 6, b"\x88\xb5") if kind == "broadcast" else (bytes.fromhex("0180c200000e"), b"\x88\xcc")
seen, frames = set(), []
while len(frames) < n:
    src = bytearray(os.urandom(6)); src[0] = (src[0] & 0xFC) | 0x02  # unicast, locally administered
    src = bytes(src)
    if src not in seen:
        seen.add(src); frames.append(dst + src + etype + bytes(46))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind((ifname, 0))
t = time.monotonic()
step = max(1, n // 100) if spread else n
for i in range(0, n, step):
    for f in frames[i:i + step]:
        s.send(f)
    if spread:
        time.sleep(max(0.0, t + spread * (i + step) / n - time.monotonic()))
print(json.dumps({"sent": n, "seconds": round(time.monotonic() - t, 3)}))
"""

# Frames given as hex on the command line, each written once.
RAW = r"""
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind((sys.argv[1], 0))
for f in sys.argv[2:]:
    s.send(bytes.fromhex(f))
"""

APPLY = r"""
import json, sys, time
from nsg.compose import compose
from nsg.model import parse_config
from nsg.policy import port_guard_apply as pga
g = compose(parse_config(json.loads(sys.argv[1]))).port_guard
t = time.monotonic()
by_bridge = pga.bridge_meta()
pga.apply(g, by_bridge)
applied = time.monotonic() - t
missing = pga.linklocal_learning_off(g.bridges) if sys.argv[2] == "1" else ()
print(json.dumps({"seconds": round(applied, 3), "missing": list(missing), "by_bridge": by_bridge}))
"""

READ = r"""
import json, time
from nsg.policy import port_guard_apply as pga
t = time.monotonic()
r = pga.read()
print(json.dumps({"seconds": round(time.monotonic() - t, 3), "ports": r.as_dict() if r else None}))
"""


# The app's veth, made and wired by containers.attach (in the gateway's namespace) into the namespace of
# the given pid, from the spec nsg.compose makes for the config: the same port name and MAC as in nsg.
ATTACH = r"""
import json, sys
from containers.attach import attach
from nsg.compose import compose
from nsg.model import parse_config
spec = compose(parse_config(json.loads(sys.argv[1]))).workloads.apps[sys.argv[2]]
attach(spec, int(sys.argv[3]))
print(json.dumps({"port": spec.host_ifname, "mac": spec.mac}))
"""

# A VM's TAP made as containers.vm makes it, then opened the way qemu opens it (TUNSETIFF, IFF_TAP |
# IFF_NO_PI) and written frames from unique random source MACs. What the bridge learned on it is read
# before the fd closes: a TAP without its fd loses carrier and the bridge flushes the port's entries.
TAP_FLOOD = r"""
import fcntl, json, os, struct, subprocess, sys, time
from containers.attach import wire_tap
from nsg.compose import compose
from nsg.model import parse_config
spec = compose(parse_config(json.loads(sys.argv[1]))).workloads.vms[sys.argv[2]]
n = int(sys.argv[3])
wire_tap(spec.tap, spec.bridge, spec.mtu, create=True)
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", spec.tap.encode(), 0x0002 | 0x1000))  # TUNSETIFF
deadline = time.monotonic() + 5
while open(f"/sys/class/net/{spec.tap}/brport/state").read().strip() != "3":  # BR_STATE_FORWARDING
    assert time.monotonic() < deadline, "the TAP's bridge port never forwarded"
    time.sleep(0.01)
rx0 = int(open(f"/sys/class/net/{spec.tap}/statistics/rx_packets").read())
seen, frames = set(), []
while len(frames) < n:
    src = bytearray(os.urandom(6)); src[0] = (src[0] & 0xFC) | 0x02
    src = bytes(src)
    if src not in seen:
        seen.add(src); frames.append(b"\xff" * 6 + src + b"\x88\xb5" + bytes(46))
t = time.monotonic()
for f in frames:
    os.write(fd, f)
sent = time.monotonic() - t
time.sleep(0.1)
fdb = json.loads(subprocess.run(["bridge", "-j", "fdb", "show", "br", spec.bridge], capture_output=True,
                                text=True, check=True).stdout or "[]")
learned = sum(1 for e in fdb if e["ifname"] == spec.tap and "permanent" not in e.get("state", ""))
rx = int(open(f"/sys/class/net/{spec.tap}/statistics/rx_packets").read()) - rx0
os.close(fd)
print(json.dumps({"port": spec.tap, "sent": n, "seconds": round(sent, 3), "delivered": rx, "learned": learned}))
"""

APP_IP = "198.19.0.50"
KERNEL = {"url": "https://images.example/bzImage", "sha256": "0" * 64}  # never fetched: compose only names


def sh(ns: str | None, *argv: str, input: str | None = None) -> str:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    p = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=120, check=False)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)[:200]}: {p.stderr.strip()[:2000]}")
    return p.stdout


def py(ns: str, code: str, *args: str) -> dict:
    return json.loads(sh(ns, sys.executable, "-c", code, *args))


def config(port_security: dict | None, ports: tuple[str, ...] = ("lan0", "lan1"), workloads: bool = False) -> dict:
    subnet = {"name": "corp", "vni": 100, "cidr": "198.19.0.0/24", "gateway": GW_IP, "ports": list(ports)}
    if port_security != {}:
        subnet["port_security"] = port_security
    doc = {"schema_version": 1, "system_ip": "198.19.255.1",
           "uplinks": [{"name": "wan0", "interface": "wan0", "mode": "static", "address": f"{LOCAL_VTEP}/24",
                        "gateway": REMOTE_VTEP}],
           "subnets": [subnet]}
    if workloads:
        doc["apps"] = [{"name": "web", "image": "busybox:1", "subnet": "corp", "address": APP_IP}]
        doc["vms"] = [{"name": "db", "subnet": "corp", "address": "198.19.0.70", "kernel": KERNEL}]
    return doc


class Site:
    def __init__(self) -> None:
        self.gw, self.h1, self.h2, self.rv = (unique_name(k) for k in ("pg", "ph", "pi", "pr"))
        self.ct = unique_name("pc")  # stands in for the app's container: its network namespace
        self.sleeper: subprocess.Popen | None = None

    def build(self) -> None:
        gw, rv = self.gw, self.rv
        for ns in (gw, self.h1, self.h2, rv):
            netns.add_namespace(ns)
        sh(gw, "ip", "link", "add", "br-100", "address", GW_MAC, "type", "bridge")
        sh(gw, "ip", "addr", "add", f"{GW_IP}/24", "dev", "br-100")
        for port, host, addr in (("lan0", self.h1, H1_IP), ("lan1", self.h2, H2_IP)):
            sh(None, "ip", "link", "add", "name", port, "netns", gw, "type", "veth", "peer", "name", "eth0",
               "netns", host)
            sh(gw, "ip", "link", "set", port, "master", "br-100", "up")
            sh(host, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")  # no stray frames in the counts
            sh(host, "ip", "addr", "add", f"{addr}/24", "dev", "eth0")
            sh(host, "ip", "link", "set", "eth0", "up")
        sh(None, "ip", "link", "add", "name", "wan0", "netns", gw, "type", "veth", "peer", "name", "wan0",
           "netns", rv)
        for ns, here, there in ((gw, LOCAL_VTEP, REMOTE_VTEP), (rv, REMOTE_VTEP, LOCAL_VTEP)):
            sh(ns, "ip", "addr", "add", f"{here}/24", "dev", "wan0")
            sh(ns, "ip", "link", "set", "wan0", "up")
            sh(ns, "ip", "link", "add", "vx-100", "type", "vxlan", "id", "100", "local", here, "dstport", "4789",
               "nolearning")
            sh(ns, "bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vx-100", "dst", there)
        sh(gw, "ip", "link", "set", "vx-100", "master", "br-100", "up")
        sh(gw, "ip", "link", "set", "br-100", "up")
        sh(rv, "ip", "link", "set", "vx-100", "up")

    def destroy(self) -> None:
        if self.sleeper is not None:
            self.sleeper.kill()
            self.sleeper.wait(timeout=10)
        for ns in (self.gw, self.h1, self.h2, self.rv, self.ct):
            if ns in netns.list_namespaces():
                netns.kill_namespace_processes(ns)
                netns.delete_namespace(ns)

    # --- what the test looks at ---

    def fdb(self) -> dict[str, str]:
        """Learned (not permanent) entries of br-100: MAC -> port."""
        out = json.loads(sh(self.gw, "bridge", "-j", "fdb", "show", "br", "br-100") or "[]")
        return {e["mac"]: e["ifname"] for e in out if "permanent" not in e.get("state", "")
                and "vlan" not in e}

    def learned_on(self, port: str) -> int:
        return sum(1 for p in self.fdb().values() if p == port)

    def rx(self, port: str) -> int:
        return int(sh(self.gw, "cat", f"/sys/class/net/{port}/statistics/rx_packets"))

    def mac(self, ns: str) -> str:
        return json.loads(sh(ns, "ip", "-j", "link", "show", "eth0"))[0]["address"]

    def gateway_neigh(self, ns: str) -> str | None:
        out = json.loads(sh(ns, "ip", "-j", "neigh", "show", GW_IP, "dev", "eth0") or "[]")
        return out[0].get("lladdr") if out else None

    def pings(self, ns: str, n: int = 3) -> int:
        p = subprocess.run(["ip", "netns", "exec", ns, "ping", "-c", str(n), "-i", "0.2", "-W", "1", GW_IP],
                           capture_output=True, text=True, timeout=30, check=False)
        return int(p.stdout.split(" received")[0].rsplit(" ", 1)[-1]) if " received" in p.stdout else 0

    # --- what the test does ---

    def apply(self, port_security: dict | None = {}, linklocal_off: bool = True, **kw: object) -> dict:  # noqa: B006
        return py(self.gw, APPLY, json.dumps(config(port_security, **kw)), "1" if linklocal_off else "0")

    def attach_app(self) -> dict:
        """The app "web" wired as nsg wires it: its veth on br-100, eth0 with its address in self.ct."""
        netns.add_namespace(self.ct)
        self.sleeper = subprocess.Popen(["ip", "netns", "exec", self.ct, "sleep", "600"])  # execs: its pid is ct's
        return py(self.gw, ATTACH, json.dumps(config({}, workloads=True)), "web", str(self.sleeper.pid))

    def vm_flood(self, n: int) -> dict:
        return py(self.gw, TAP_FLOOD, json.dumps(config({}, workloads=True)), "db", str(n))

    def read(self) -> dict:
        return py(self.gw, READ)

    def flood(self, n: int, kind: str = "broadcast", spread: float = 0.0, ns: str | None = None) -> dict:
        return py(ns or self.h1, FLOOD, "eth0", str(n), kind, str(spread))

    def from_overlay(self, *frames: bytes) -> None:
        sh(self.rv, sys.executable, "-c", RAW, "vx-100", *(f.hex() for f in frames))


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def ip_bytes(ip: str) -> bytes:
    return bytes(int(x) for x in ip.split("."))


def arp(op: int, sender_mac: str, sender_ip: str, target_mac: str, target_ip: str, eth_dst: str) -> bytes:
    """An Ethernet frame carrying an ARP packet (RFC 826): htype 1, ptype IPv4, hlen 6, plen 4."""
    body = (b"\x00\x01\x08\x00\x06\x04" + op.to_bytes(2, "big") + mac_bytes(sender_mac) + ip_bytes(sender_ip)
            + mac_bytes(target_mac) + ip_bytes(target_ip))
    return mac_bytes(eth_dst) + mac_bytes(sender_mac) + b"\x08\x06" + body + bytes(18)


@pytest.fixture
def site():
    s = Site()
    try:
        s.build()
        yield s
    finally:
        s.destroy()


def lan0_drops(reading: dict) -> tuple[int, int]:
    d = reading["ports"]["lan0"]["dropped"]
    return d["full"]["packets"], d["rate"]["packets"]


def test_without_the_guard_the_bridge_learns_every_source_mac(site):
    """The attack, as it is today: what the measurement below would show without the guard."""
    t = time.monotonic()
    sent = site.flood(2000)
    learned = site.learned_on("lan0")
    print(f"\nno guard: {sent['sent']} frames in {sent['seconds']} s -> {learned} MACs learned on lan0 "
          f"({time.monotonic() - t:.2f} s in all)")
    assert learned >= 1990  # a veth may drop a few when its backlog is full, nothing else does


def test_a_flood_stops_at_max_macs_and_known_hosts_still_pass(site):
    """max_macs 64, a rate that does not bind at first: the port fills with 64 MACs and stays there."""
    ps = {"max_macs": 64, "learn_rate": 10000, "learn_burst": 10000}
    applied = site.apply(ps)
    assert site.pings(site.h1) == 3  # h1 is known before the flood
    rx0, known = site.rx("lan0"), site.learned_on("lan0")
    assert known == 1
    sent5k = site.flood(5000)
    r5k = site.read()
    full, rate = lan0_drops(r5k)
    delivered = site.rx("lan0") - rx0
    print(f"\nmax_macs 64: apply {applied['seconds']} s; 5,000 frames in {sent5k['seconds']} s, {delivered} "
          f"delivered -> lan0 holds {site.learned_on('lan0')} MACs, dropped full={full} rate={rate}, "
          f"read {r5k['seconds']} s")
    assert site.learned_on("lan0") == 64 and r5k["ports"]["lan0"]["macs"] == 64
    assert full + rate + (64 - known) == delivered and rate == 0  # every frame accounted for

    sent100k = site.flood(100_000)
    r100k = site.read()
    full, rate = lan0_drops(r100k)
    delivered = site.rx("lan0") - rx0
    print(f"max_macs 64: 100,000 frames in {sent100k['seconds']} s, {delivered} delivered in all -> lan0 holds "
          f"{site.learned_on('lan0')} MACs, dropped full={full} rate={rate}, read {r100k['seconds']} s")
    assert site.learned_on("lan0") == 64
    assert full + rate + (64 - known) == delivered
    assert site.fdb().get(site.mac(site.h1)) == "lan0"
    assert site.pings(site.h1) == 3  # the known host on the flooded port
    assert site.pings(site.h2) == 3  # a host new on the other port
    assert site.fdb().get(site.mac(site.h2)) == "lan1"


def test_a_flood_is_learned_no_faster_than_learn_rate(site):
    """The defaults (256 MACs, 20 new per second after a burst of 40): the issue's flood (5,000 frames
    in 3.5 s) gets a trickle through, and so does 100,000 as fast as a raw socket writes them."""
    applied = site.apply({})  # no port_security key: the default is on
    assert site.pings(site.h1) == 3
    rx0 = site.rx("lan0")
    t0 = time.monotonic()
    sent5k = site.flood(5000, spread=3.5)
    r5k = site.read()
    new5k = site.learned_on("lan0") - 1
    full, rate = lan0_drops(r5k)
    print(f"\ndefaults: apply {applied['seconds']} s; 5,000 frames in {sent5k['seconds']} s -> {new5k} new MACs "
          f"on lan0, dropped rate={rate} full={full}")
    assert 40 + 20 * 3 <= new5k <= 40 + 20 * (time.monotonic() - t0)
    sent100k = site.flood(100_000)
    elapsed = time.monotonic() - t0
    r100k = site.read()
    full, rate = lan0_drops(r100k)
    new = site.learned_on("lan0") - 1
    delivered = site.rx("lan0") - rx0
    print(f"defaults: 100,000 frames in {sent100k['seconds']} s ({elapsed:.2f} s since the first flood) -> {new} "
          f"new MACs on lan0, dropped rate={rate} full={full}, {delivered} delivered, read {r100k['seconds']} s")
    assert new <= 40 + 20 * elapsed and new <= 255
    assert full == 0 and rate + new == delivered
    assert site.pings(site.h1) == 3 and site.pings(site.h2) == 3


def test_link_local_frames_are_no_way_around_the_limit(site):
    """LLDP frames (01:80:c2:00:00:0e) are learned from with no netfilter hook on the way: only the
    bridge's no_linklocal_learn stops that, and linklocal_learning_off sets it."""
    ps = {"max_macs": 16, "learn_rate": 10000, "learn_burst": 10000}
    site.apply(ps, linklocal_off=False)
    site.flood(200, "lldp")
    leaked = site.learned_on("lan0")
    applied = site.apply(ps, linklocal_off=True)
    assert applied["missing"] == []
    site.flood(200, "lldp")
    after = site.learned_on("lan0")
    print(f"\nLLDP flood of 200: learned {leaked} with the table alone; {after - leaked} more once "
          "no_linklocal_learn is on")
    assert leaked >= 190  # the kernel fact: no hook sees these before learning
    assert after == leaked


def test_a_local_hosts_mac_from_the_overlay_is_dropped(site):
    h1 = site.mac(site.h1)
    spoofed = b"\xff" * 6 + mac_bytes(h1) + b"\x88\xb5" + bytes(46)
    assert site.pings(site.h1) == 3 and site.fdb()[h1] == "lan0"
    site.from_overlay(spoofed)
    time.sleep(0.2)
    moved = site.fdb().get(h1)
    assert site.pings(site.h1) == 3 and site.fdb()[h1] == "lan0"  # h1 takes it back

    site.apply({})
    assert site.pings(site.h1) == 3  # h1 known to the guard
    t = time.monotonic()
    site.from_overlay(spoofed, spoofed, spoofed)
    time.sleep(0.2)
    r = site.read()
    print(f"\nspoofed {h1} from the overlay: without the guard the entry moved to {moved}; with it it stays on "
          f"{site.fdb()[h1]}, spoof drops {r['ports']['vx-100']['dropped']['spoof']['packets']} "
          f"({time.monotonic() - t:.2f} s)")
    assert moved == "vx-100"  # the attack works without the guard
    assert site.fdb()[h1] == "lan0"
    assert r["ports"]["vx-100"]["dropped"]["spoof"]["packets"] == 3
    assert site.pings(site.h1) == 3


ARP_COUNTER = f"""
table arp seen {{
  chain input {{
    type filter hook input priority 0; policy accept;
    arp saddr ip {GW_IP} arp saddr ether != {GW_MAC} counter
    arp saddr ip {GW_IP} arp saddr ether {GW_MAC} arp operation request counter
  }}
}}
"""


def arps_seen(ns: str) -> tuple[int, int]:
    """(forged, legitimate) ARP packets claiming the gateway that reached the host."""
    out = json.loads(sh(ns, "nft", "-j", "list", "chain", "arp", "seen", "input"))["nftables"]
    counts = [e["counter"]["packets"] for o in out if "rule" in o for e in o["rule"]["expr"] if "counter" in e]
    return counts[0], counts[1]


def test_a_forged_arp_for_the_gateway_from_the_overlay_never_reaches_a_host(site):
    h2 = site.mac(site.h2)
    sh(site.h2, "nft", "-f", "-", input=ARP_COUNTER)
    forged_reply = arp(2, FORGED, GW_IP, h2, H2_IP, eth_dst=h2)
    forged_garp = arp(1, FORGED, GW_IP, "00:00:00:00:00:00", GW_IP, eth_dst="ff:ff:ff:ff:ff:ff")
    legit_request = arp(1, GW_MAC, GW_IP, "00:00:00:00:00:00", H2_IP, eth_dst="ff:ff:ff:ff:ff:ff")

    assert site.pings(site.h2) == 3 and site.gateway_neigh(site.h2) == GW_MAC
    time.sleep(1.1)  # past the neighbour's locktime (1 s): a reply may override the entry
    site.from_overlay(forged_reply)
    time.sleep(0.2)
    poisoned = site.gateway_neigh(site.h2)
    sh(site.h2, "ip", "neigh", "flush", "dev", "eth0")

    site.apply({})
    seen0 = arps_seen(site.h2)
    assert site.pings(site.h2) == 3 and site.gateway_neigh(site.h2) == GW_MAC
    time.sleep(1.1)
    site.from_overlay(forged_reply, forged_garp)
    time.sleep(0.2)
    after = site.gateway_neigh(site.h2)
    seen1 = arps_seen(site.h2)
    site.from_overlay(legit_request)  # a remote anycast gateway resolving h2 (nsg without EVPN)
    time.sleep(0.2)
    seen2 = arps_seen(site.h2)
    r = site.read()
    dropped = r["ports"]["vx-100"]["dropped"]["gateway_arp"]["packets"]
    print(f"\nforged ARP for {GW_IP}: without the guard h2's entry became {poisoned}; with it {after}, "
          f"dropped {dropped}, reached h2: forged {seen1[0] - seen0[0]}, legitimate {seen2[1] - seen1[1]}")
    assert poisoned == FORGED  # the attack works without the guard
    assert after == GW_MAC and dropped == 2 and seen1[0] == seen0[0]
    assert seen2[1] - seen1[1] == 1  # the anycast gateway's own request still gets through
    assert site.pings(site.h2) == 3


# --- the gateway's own workloads: an app's veth, a VM's TAP ------------------------------------------


def strays(reading: dict) -> int:
    """Frames dropped from ports of br-100 the table does not name (0 where the kernel cannot tell)."""
    return reading["ports"].get("br-100", {}).get("dropped", {}).get("stray", {}).get("packets", 0)


def port_alert(reading: dict, port: str) -> str:
    """The security alert the daemon raises from this reading (nsg.alerts, from no earlier reading)."""
    from nsg.alerts import port_alerts
    from nsg.model.status import PortGuardStatus

    st = PortGuardStatus.model_validate({"ports": reading["ports"]})
    return next(m for _, m, f in port_alerts({}, st, 5, "198.19.255.1") if f["port"] == port)


def test_without_the_guard_a_workloads_port_learns_every_source_mac(site):
    """The attack from a compromised container, as it is without the table."""
    app = site.attach_app()
    sent = site.flood(2000, ns=site.ct)
    learned = site.learned_on(app["port"])
    print(f"\nno guard: the app's {app['port']} got {sent['sent']} frames in {sent['seconds']} s -> {learned} "
          "MACs learned")
    assert learned >= 1990


def test_a_flood_from_an_app_stops_at_its_workload_limit_and_lan_hosts_keep_working(site):
    """5,000 random source MACs from the app's container: its veth holds at most WORKLOAD_MAX_MACS (4),
    every other frame is counted and dropped before the bridge learns it, the alert names the veth, the
    LAN hosts and the app itself still reach the gateway, and the app's MAC cannot be taken from the
    overlay."""
    applied = site.apply({}, workloads=True)  # the defaults: 20 new MACs/s, burst 40
    app = site.attach_app()
    veth = app["port"]
    assert site.pings(site.ct) == 3 and site.pings(site.h1) == 3  # both known before the flood
    assert site.fdb().get(app["mac"]) == veth and site.learned_on(veth) == 1
    rx0 = site.rx(veth)
    sent = site.flood(5000, ns=site.ct)
    r = site.read()
    mine = r["ports"][veth]
    full, rate = mine["dropped"]["full"]["packets"], mine["dropped"]["rate"]["packets"]
    delivered = site.rx(veth) - rx0
    alert = port_alert(r, veth)
    print(f"\napp {veth}: apply {applied['seconds']} s; 5,000 frames in {sent['seconds']} s, {delivered} delivered "
          f"-> {site.learned_on(veth)} MACs learned, set {mine['macs']}/{mine['max_macs']}, dropped full={full} "
          f"rate={rate}; alert: {alert}")
    assert site.learned_on(veth) == 4 and (mine["macs"], mine["max_macs"]) == (4, 4)
    assert full + rate + 3 == delivered  # every frame accounted for: 3 learned, the rest dropped
    assert strays(r) == 0  # named from its first frame on
    assert alert.startswith(f"port {veth} of 198.19.255.1: {full + rate} frames from new MACs refused")
    assert site.learned_on("lan0") == 1 and site.learned_on("lan1") == 0
    assert site.pings(site.h1) == 3 and site.pings(site.h2) == 3  # LAN hosts, a known one and a new one
    assert site.pings(site.ct) == 3 and site.fdb().get(app["mac"]) == veth  # the app's own MAC stays

    spoofed = b"\xff" * 6 + mac_bytes(app["mac"]) + b"\x88\xb5" + bytes(46)
    site.from_overlay(spoofed, spoofed)
    time.sleep(0.2)
    spoof = site.read()["ports"]["vx-100"]["dropped"]["spoof"]["packets"]
    print(f"app's MAC {app['mac']} from the overlay: entry on {site.fdb().get(app['mac'])}, spoof drops {spoof}")
    assert site.fdb().get(app["mac"]) == veth and spoof == 2


def test_a_workload_port_made_after_the_apply_is_guarded_from_its_first_frame(site):
    """The race: the table is applied (the engine's port_guard part) before the workload exists (the
    supervisors come later), and the app floods the moment attach returns. The vmap matches by name,
    so the new veth's first frame already meets its set: 4 learned and every other frame counted."""
    site.apply({}, workloads=True)
    t = time.monotonic()
    app = site.attach_app()
    rx0 = 0  # a new veth: every frame it ever received is the flood's
    sent = site.flood(5000, ns=site.ct)
    since = time.monotonic() - t
    veth = app["port"]
    r = site.read()
    mine = r["ports"][veth]
    full, rate = mine["dropped"]["full"]["packets"], mine["dropped"]["rate"]["packets"]
    delivered = site.rx(veth) - rx0
    print(f"\nveth {veth} made after the apply, flooded at once: {sent['sent']} frames in {sent['seconds']} s "
          f"({since:.2f} s after the attach began), {delivered} delivered -> {site.learned_on(veth)} learned, "
          f"dropped full={full} rate={rate}")
    assert site.learned_on(veth) == 4 and mine["macs"] == 4
    assert full + rate + 4 == delivered
    assert strays(r) == 0


def test_a_vms_tap_is_guarded_like_an_apps_veth(site):
    """Without the table the bridge learns every MAC written to the VM's TAP; with it, 4. (The TAP loses
    its entries when the writer closes it, so each run starts from none.)"""
    before = site.vm_flood(500)
    site.apply({}, workloads=True)
    after = site.vm_flood(2000)
    r = site.read()["ports"][after["port"]]
    full, rate = r["dropped"]["full"]["packets"], r["dropped"]["rate"]["packets"]
    print(f"\nVM TAP {after['port']}: no guard {before['learned']} of {before['sent']} learned; guarded "
          f"{after['learned']} of {after['sent']} ({after['delivered']} delivered), dropped full={full} rate={rate}")
    assert before["learned"] >= 490
    assert after["learned"] == 4 and r["max_macs"] == 4
    assert full + rate + 4 == after["delivered"]
    assert site.pings(site.h1) == 3


def test_a_bridge_port_the_table_does_not_name_is_dropped_until_it_is(site):
    """A port of a guarded subnet's bridge that nsg did not name (here lan1, left out of the config)
    gets nothing through: not learned, counted as stray; once the config names it, it works. Needs
    meta ibrname (CONFIG_NFT_BRIDGE_META); without it the table guards ports by name alone."""
    assert site.pings(site.h2) == 3  # no table: lan1 works
    for state in ("down", "up"):  # a disabled port loses its learned entries: h2 must be learned anew
        sh(site.gw, "ip", "link", "set", "lan1", state)
    if not site.apply({}, ports=("lan0",))["by_bridge"]:
        # This kernel has no nft_meta_bridge (CONFIG_NFT_BRIDGE_META; this development kernel lacks it,
        # Debian's and the appliance's have it: the image's tests exercise the stray rules). What must
        # hold here: the table still applies and guards the named ports, and the unnamed port is the
        # documented gap (it passes), not an apply failure.
        assert "lan1" not in site.read()["ports"] and site.read()["ports"]["lan0"]["max_macs"] == 256
        assert site.pings(site.h2) == 3 and site.pings(site.h1) == 3
        print("\nno nft bridge meta in this kernel: lan1 (not named) passes unguarded; the table guards by name")
        return
    lost = site.pings(site.h2)
    site.flood(200, ns=site.h2)
    r = site.read()
    stray = r["ports"]["br-100"]["dropped"]["stray"]["packets"]
    learned = site.learned_on("lan1")
    site.apply({}, ports=("lan0", "lan1"))
    back = site.pings(site.h2)
    print(f"\nlan1 not named: {lost}/3 pings, {learned} learned, {stray} frames dropped as stray; named: {back}/3")
    assert lost == 0 and learned == 0 and stray >= 200 + 3
    assert "lan1" not in r["ports"]
    assert back == 3 and site.pings(site.h1) == 3
