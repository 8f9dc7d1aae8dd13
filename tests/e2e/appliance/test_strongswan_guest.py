"""Issue 15 section 3: the image's kernel ESP (XFRM) backend against a real strongSwan, through a real NAT.

tests/interop/test_nsg_strongswan.py puts nsg (its userspace ESP engine) in a namespace next to charon;
here nsg is the appliance image booted in qemu (b2 of the appliance lab, OVMF, behind the NAT router
b2-nat), so its child SAs are the guest kernel's XFRM states and its ESP-in-UDP crosses a masquerade:

    charon (namespace <lab>-sw: eth0 198.18.60.2, inner 198.19.250.2 on lo; kernel-libipsec)
      -- sw0 198.18.60.1 on inet -- b2-nat (masquerade: b2 is 198.18.2.2 outside) -- b2's eno1 198.18.130.2
         (nsg from a static config: system IP 198.19.250.1, transport esp, PSK, nsg initiates to peer "sw")

b2's fleet daemon (nsg.service) is stopped for the module so that it lets go of the WAN and of XFRM; a
second nsg runs in the guest as the transient unit nsg-sw, its config and state in /run (tmpfs).
Afterwards the unit goes, the guest's XFRM tables are flushed and nsg.service resumes from its data
partition; the module waits for b2's fleet tunnels and a ping b1-h1 -> b2-h1, so that the next module
finds the lab as it was. b1 is not touched.

Asserted: the IKE and child SAs agree on both sides (SPIs from charon's vici list-sas against `nsg status
--json` in the guest and against the guest kernel's `ip xfrm state`); pings both ways move the kernel's
counters; four rekeys (child and IKE, each started once by nsg and once by charon) under a 10 ms ping from
charon's side lose nothing but, at most, the one request in flight when it stops; and an ESP packet from
charon sent again (the same SPI and sequence number: what anyone on the path can do) is dropped by the
guest's kernel as a replay (RFC 4303 section 3.4.3) rather than decrypted and answered once more.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from lab import netns
from lab.lab import Lab
from lab.qemu_box import NSG, GuestError, QemuBox
from lab.topology import Uplink
from tests.e2e.appliance.conftest import HOSTS
from tests.e2e.appliance.conftest import pytestmark as appliance_marks
from tests.interop import strongswan
from tests.interop.nsg_charon import CHILD, IKE, PEER, PSK, Pinger, View, agreed, nsg_ike, spi
from tests.interop.strongswan import Charon, Child, Connection
from tests.peers import require_peer

pytestmark = [*appliance_marks, require_peer(strongswan.missing())]  # the package's marks, and charon's

BOX = "b2"  # the guest behind the NAT (b1 is test_upgrade's)
SW_NODE = "sw"  # charon's namespace <lab>-sw: lab.down removes it too, should this module not get to it
INET_IF, INET_IP, SW_WAN = "sw0", "198.18.60.1", "198.18.60.2"
NSG_SYS, SW_INNER = "198.19.250.1", "198.19.250.2"
RUN = "/run/sw"  # the guest's tmpfs: nothing of this module survives a reboot
STATE = f"{RUN}/state"
UNIT = "nsg-sw"
FLEET_UNITS = ("nsg.service", "nsg-upgrade-settle.service")
FLUSH_XFRM = ("sh", "-c", "ip xfrm state flush && ip xfrm policy flush")
REKEYS = (("nsg", "child"), ("charon", "child"), ("nsg", "ike"), ("charon", "ike"))
SETTLE_S = 60  # one `nsg status` in the guest takes ~3 s under TCG
RESUME_S = 300  # nsg.service back to its fleet tunnels


def b2_uplink(apl) -> Uplink:
    return next(g for g in apl.plan.gateways if g.name == BOX).uplinks[0]


def nsg_config(up: Uplink) -> dict[str, Any]:
    """As tests/interop/test_nsg_strongswan.py's nsg_config (PSK, nsg initiates), on the guest's WAN port."""
    return {
        "schema_version": 1,
        "system_ip": NSG_SYS,
        "transport": "esp",
        "behind_nat": True,
        "ipsec": {"auth": "psk", "rekey_overlap_s": 1.0},
        "uplinks": [{"name": "wan0", "interface": "eno1", "mode": "static", "address": up.address,
                     "gateway": up.gateway}],
        "peers": [{"name": PEER, "system_ip": SW_INNER, "endpoint": SW_WAN, "initiate": "always", "psk": PSK}],
    }


def charon_connection(up: Uplink) -> Connection:
    """The responder: nsg's IKE and ESP reach it from the NAT's outside address."""
    child = Child(CHILD, (f"{SW_INNER}/32",), (f"{NSG_SYS}/32",))
    return Connection(IKE, remote_addrs=(up.public,), local_id=SW_INNER, remote_id=NSG_SYS, children=(child,),
                      encap=True, psk=PSK)


def kernel_states(box: QemuBox) -> dict[int, dict[str, int]]:
    """The guest kernel's ESP states, read with iproute2 (not through nsg): SPI -> packets, replay drops."""
    out = {}
    for block in ("\n" + box.run("ip", "-s", "xfrm", "state").stdout).split("\nsrc ")[1:]:
        spi_hex = re.search(r"proto esp spi (0x[0-9a-f]+)", block)[1]
        packets = re.search(r"lifetime current:\s*\n\s*\d+\(bytes\), (\d+)\(packets\)", block)[1]
        replay = re.search(r"stats:\s*\n\s*replay-window \d+ replay (\d+)", block)[1]
        out[int(spi_hex, 16)] = {"packets": int(packets), "replay": int(replay)}
    return out


@dataclass
class Sides:
    lab: Lab
    box: QemuBox
    charon: Charon
    uplink: Uplink  # b2's WAN address and gateway, and the NAT's outside address
    timings: dict

    @property
    def sw(self) -> str:
        return self.lab.ns(SW_NODE)

    def status(self) -> dict[str, Any] | None:
        r = self.box.nsg("status", "--json", "--state-dir", STATE, check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def diag(self) -> str:
        st = self.status()
        guest = {argv: self.box.run(*argv, check=False).stdout for argv in (
            ("journalctl", "-u", UNIT, "-n", "30", "--no-pager"), ("ip", "-s", "xfrm", "state"),
            ("nft", "list", "table", "inet", "nsg_guard"))}
        return (f"--- nsg ike: {json.dumps(nsg_ike(st))}\n--- nsg child_sas: "
                f"{json.dumps(((st or {}).get('tunnels') or {}).get('child_sas'))}\n"
                + "".join(f"--- guest: {' '.join(k)}\n{v[-3000:]}\n" for k, v in guest.items())
                + f"--- charon SAs: {self.charon.list_sas()}\n{self.charon.log_tail(30)}")

    def agreed(self, what: str, also: Callable[[View], bool] = lambda _v: True, timeout: float = SETTLE_S) -> View:
        """tests/interop/test_nsg_strongswan.py's agreement (one live child each side, SPIs pairwise equal)."""
        deadline = time.monotonic() + timeout
        while True:
            v = agreed(self.status(), self.charon.list_sas())
            if v is not None and also(v):
                return v
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.diag()}")
            time.sleep(0.2)

    def rekey(self, who: str, kind: str) -> None:
        if who == "nsg":
            r = self.box.nsg("ipsec", "rekey", PEER, *(["--ike"] if kind == "ike" else []), "--state-dir", STATE)
            assert "started" in r.stdout, r.stdout + r.stderr
        elif kind == "child":
            assert self.charon.rekey_child(CHILD) >= 1
        else:
            assert self.charon.rekey_ike(IKE) >= 1

    def ping(self, from_guest: bool) -> str:
        """Three pings through the tunnel: from the guest's system IP (busybox's ping: the image has no
        iputils), or from charon's inner address."""
        argv = ("-c", "3", "-W", "2")
        if from_guest:
            r = self.box.run("busybox", "ping", *argv, "-I", NSG_SYS, SW_INNER, check=False)
        else:
            r = self.lab.run(SW_NODE, "ping", "-n", "-i", "0.2", *argv, "-I", SW_INNER, NSG_SYS, check=False)
        where = "guest -> charon" if from_guest else "charon -> guest"
        assert r.returncode == 0 and " 0% packet loss" in r.stdout, f"{where}:\n{r.stdout}{r.stderr}{self.diag()}"
        return r.stdout


def add_sw_node(lab: Lab) -> str:
    """charon's namespace on a cable to inet (which routes between every branch's WAN)."""
    ns = lab.ns(SW_NODE)
    netns.add_namespace(ns)
    netns.add_veth(lab.ns("inet"), INET_IF, ns, "eth0", f"{lab.name}:inet/{INET_IF}<->{SW_NODE}/eth0")
    netns.add_address(lab.ns("inet"), INET_IF, f"{INET_IP}/24")
    netns.add_address(ns, "eth0", f"{SW_WAN}/24")
    netns.add_address(ns, "lo", f"{SW_INNER}/32")
    netns.add_route(ns, "default", INET_IP)
    return ns


def remove_sw_node(lab: Lab) -> None:
    ns = lab.ns(SW_NODE)
    if ns in netns.list_namespaces():
        netns.kill_namespace_processes(ns)  # only what this module started (charon, ping) runs there
        netns.delete_namespace(ns)  # and with it the veth, inet's sw0 included


def start_guest_nsg(box: QemuBox, cfg: dict) -> None:
    box.run("systemctl", "stop", *FLEET_UNITS, timeout=90)
    box.run(*FLUSH_XFRM)
    box.run("mkdir", "-p", STATE)
    w = box.agent.exec(["sh", "-c", f"cat > {RUN}/config.json"], stdin=json.dumps(cfg).encode())
    assert w.returncode == 0, w.stderr
    box.run("systemd-run", "--unit", UNIT, "--collect", "-p", "Environment=PYTHONDONTWRITEBYTECODE=1",
            NSG, "run", "--config", f"{RUN}/config.json", "--state-dir", STATE)


def restore_fleet(apl, box: QemuBox) -> None:
    """nsg-sw goes, XFRM is flushed again, nsg.service resumes: its fleet tunnels and b2's LAN come back."""
    t0 = time.monotonic()
    errors = []
    for argv in (("systemctl", "stop", UNIT), FLUSH_XFRM, ("rm", "-rf", RUN), ("systemctl", "start", *FLEET_UNITS)):
        try:
            box.run(*argv, timeout=240)
        except (GuestError, OSError, TimeoutError) as exc:
            errors.append(f"{' '.join(argv)}: {exc}")
    assert not errors, errors
    apl.wait_tunnels(BOX, timeout=RESUME_S)
    deadline = time.monotonic() + 60
    while apl.lab.run("b1-h1", "ping", "-c", "1", "-W", "1", HOSTS[BOX], check=False).returncode:
        assert time.monotonic() < deadline, "no ping b1-h1 -> b2-h1 after nsg.service resumed"
    addrs = box.run("ip", "-4", "-o", "addr", "show").stdout
    assert NSG_SYS not in addrs, addrs  # the fleet daemon's dataplane took over again
    print(f"\n{BOX}: nsg.service resumed; fleet tunnels and b1-h1 -> b2-h1 back in {time.monotonic() - t0:.1f}s")


@pytest.fixture(scope="module")
def sides(apl, tmp_path_factory) -> Iterator[Sides]:
    box, lab = apl.boxes[BOX], apl.lab
    up = b2_uplink(apl)
    # the static config takes the address the fleet daemon got by DHCP (the plan's), behind a NAT
    shown = json.loads(box.run("ip", "-j", "-4", "addr", "show", "dev", "eno1").stdout)
    assert up.address in {f"{a['local']}/{a['prefixlen']}" for a in shown[0]["addr_info"]}, shown
    assert up.public != up.address.split("/")[0]
    charon: Charon | None = None
    try:
        t0 = time.monotonic()
        sw = add_sw_node(lab)
        start_guest_nsg(box, nsg_config(up))
        # not under the lab's /run/nsg-lab: charon runs with a private /run (tests/interop/strongswan.py)
        charon = Charon(sw, tmp_path_factory.mktemp("charon"), SW_WAN, name="charon")
        charon.add(charon_connection(up))
        charon.start()
        yield Sides(lab, box, charon, up, {"start_s": round(time.monotonic() - t0, 1)})
    finally:
        try:
            if charon is not None:
                charon.stop()
            remove_sw_node(lab)
        finally:
            restore_fleet(apl, box)


def test_ike_and_child_sas_agree_and_pings_cross_both_ways(sides):
    s = sides
    t0 = time.monotonic()
    v = s.agreed("the IKE SA and child SA (nsg in the guest initiates, through b2-nat)")
    s.timings["agreed_s"] = round(time.monotonic() - t0, 1)
    st = s.status()
    assert st is not None
    tun = st["tunnels"]
    assert (tun["backend"], tun["kernel_esp"]) == ("xfrm", True), tun  # the guest kernel's ESP
    assert v.nsg_initiator and v.charon_ike.get("initiator") != "yes"
    assert v.charon_ike["state"] == "ESTABLISHED" and v.charon_child["state"] == "INSTALLED"
    assert v.charon_ike["remote-id"] == NSG_SYS and v.charon_ike["local-id"] == SW_INNER
    assert v.nsg_sa["remote_id"] == SW_INNER
    assert v.charon_child["encap"] == "yes" and v.charon_child["encr-alg"] == "AES_GCM_16"
    # both sides saw the NAT: charon gets nsg's packets from b2-nat's outside address, on port 4500
    assert (v.charon_ike["remote-host"], v.charon_ike.get("nat-remote"), v.charon_ike["local-port"]) == (
        s.uplink.public, "yes", "4500"), v.charon_ike
    assert v.nsg_sa["nat_local"] and v.nsg_sa["peer"] == f"{SW_WAN}:4500", v.nsg_sa
    assert {(c["dir"], spi(c["spi"])) for c in tun["child_sas"]} == {("in", v.child_in), ("out", v.child_out)}
    assert set(kernel_states(s.box)) == {v.child_in, v.child_out}

    before = {c["dir"]: c.get("packets", 0) for c in tun["child_sas"]}
    rtts = [s.ping(from_guest=True).splitlines()[-1], s.ping(from_guest=False).splitlines()[-1]]
    after_st = s.status()
    assert after_st is not None
    sas = after_st["tunnels"]["child_sas"]
    after = {c["dir"]: c.get("packets", 0) for c in sas}
    # 3 requests + 3 replies each way, counted by the guest kernel's states (nsg status shows its counters)
    assert after["in"] - before["in"] >= 6 and after["out"] - before["out"] >= 6, sas
    assert all(c.get("bytes", 0) > 0 for c in sas), sas
    c_child = s.agreed("the SAs after the pings").charon_child
    assert int(c_child["packets-in"]) >= 6 and int(c_child["packets-out"]) >= 6, c_child
    print(f"\nnsg-sw and charon started in {s.timings['start_s']}s, SAs agreed {s.timings['agreed_s']}s later; "
          f"nsg child_sas {sas}; guest->charon, charon->guest {rtts}")


def test_rekeys_by_either_side_under_a_10ms_ping_lose_nothing(sides):
    """Child and IKE SA rekeys, each started once by nsg in the guest and once by charon, while charon's
    side pings the guest every 10 ms: every request up to the last answered one is answered (the
    kernel's states replaced make-before-break, across the NAT)."""
    s = sides
    current = s.agreed("the SAs before the rekeys")
    pinger = Pinger(s.sw, SW_INNER, NSG_SYS)
    result: dict[str, Any] | None = None
    done: list[str] = []
    t0 = time.monotonic()
    try:
        deadline = time.monotonic() + 10
        while len(pinger.replies) < 5:
            assert time.monotonic() < deadline, f"no replies to the 10 ms ping\n{''.join(pinger.lines[-5:])}" \
                                                f"{s.diag()}"
            time.sleep(0.05)
        for who, kind in REKEYS:
            old, t = current, time.monotonic()
            s.rekey(who, kind)
            if kind == "child":
                current = s.agreed(f"the child rekey started by {who}",
                                   lambda v, o=old: v.child_in != o.child_in and v.child_out != o.child_out)
                assert current.ike == old.ike
            else:
                current = s.agreed(f"the IKE rekey started by {who}",
                                   lambda v, o=old: v.ike[0] != o.ike[0] and v.ike[1] != o.ike[1])
                # RFC 7296 section 2.18: the child SA moves to the new IKE SA unchanged
                assert (current.child_in, current.child_out) == (old.child_in, old.child_out)
                assert current.nsg_initiator == (who == "nsg")
            done.append(f"{who}:{kind} {time.monotonic() - t:.1f}s")
            time.sleep(0.5)  # some traffic on the new SAs before the next rekey
        # settled to one child SA: nsg's status and the guest kernel hold only the current pair
        want = {current.child_in, current.child_out}
        deadline = time.monotonic() + SETTLE_S
        while True:
            st = s.status() or {"tunnels": {"child_sas": []}}
            listed, kernel = {spi(c["spi"]) for c in st["tunnels"]["child_sas"]}, set(kernel_states(s.box))
            if listed == want == kernel:
                break
            assert time.monotonic() < deadline, f"old SAs linger: nsg {listed}, kernel {kernel}, want {want}"
            time.sleep(0.5)
        final = s.agreed("the final SAs")
        assert (final.ike, final.child_in, final.child_out) == (current.ike, current.child_in, current.child_out)
        result = pinger.stop()
    finally:
        if result is None and pinger.proc.poll() is None:  # failed on the way: what did the ping see?
            with contextlib.suppress(AssertionError, OSError, subprocess.TimeoutExpired):
                print(f"\nping when the test failed: {pinger.stop()}")
        pinger.kill()
    counters = final.nsg_sa["counters"]
    print(f"\nrekeys {done} in {time.monotonic() - t0:.1f}s; ping -i 0.01 charon -> guest: "
          f"{result['transmitted']} transmitted, {result['received']} received, missing {result['missing']} "
          f"in {result['seconds']}s; nsg IKE SA counters {counters}")
    assert result["errors"] == 0 and not result["unusual"], result
    # every request up to the last one answered was answered; at most the one in flight at SIGINT is not
    assert result["transmitted"] > 500 and result["missing"] in ([], [result["transmitted"]]), result
    assert counters["child_rekeys"] == sum(k == "child" for _w, k in REKEYS), counters
    assert counters["ike_rekeys"] == sum(k == "ike" for _w, k in REKEYS), counters


REPLAY = """import sys
from scapy.all import IP, UDP, Ether, sendp
p = Ether(bytes.fromhex(sys.argv[1]))
del p[IP].chksum, p[UDP].chksum  # as the sender's kernel would have finished them (checksum offload)
sendp(Ether(bytes(p)), iface="eth0", count=int(sys.argv[2]), verbose=False)
"""


def test_a_replayed_esp_packet_is_dropped_by_the_guest_kernel(sides, tmp_path):
    """RFC 4303 section 3.4.3: charon's ESP-in-UDP packet carrying a ping, captured on its wire and sent
    again three times (same SPI, same sequence number), must not be decrypted and answered again: the
    guest's inbound state counts three replays and no packet, and no ESP comes back. (strongSwan proposes
    no ESN by default: this is the non-ESN case; nsg's own peers negotiate ESN, with a 1024 window.)"""
    from scapy.all import UDP, rdpcap

    s = sides
    v = s.agreed("the SAs before the replay")
    pcap = tmp_path / "esp.pcap"
    to_guest = ["udp", "and", "src", "port", "4500", "and", "dst", "host", s.uplink.public]
    cap = subprocess.Popen(s.lab.exec_argv(SW_NODE, ["tcpdump", "-n", "-i", "eth0", "-U", "-w", str(pcap), *to_guest]),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        # answered or not (the kernel decrypts first, the guest's firewall decides later): what counts is the ESP
        s.lab.run(SW_NODE, "ping", "-n", "-c", "1", "-W", "1", "-I", SW_INNER, NSG_SYS, check=False)
        time.sleep(0.5)
    finally:
        cap.send_signal(signal.SIGINT)
        cap.wait(10)
    esp = [p for p in rdpcap(str(pcap)) if UDP in p and bytes(p[UDP].payload)[:4] == v.child_in.to_bytes(4, "big")]
    assert esp, f"no ESP packet with SPI {v.child_in:#010x} captured"
    before = kernel_states(s.box)[v.child_in]
    back = subprocess.Popen(s.lab.exec_argv(SW_NODE, ["tcpdump", "-n", "-l", "-i", "eth0", "udp", "and", "src",
                                                      "host", s.uplink.public]),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(1.5)
        sent = subprocess.run(s.lab.exec_argv(SW_NODE, [sys.executable, "-c", REPLAY, bytes(esp[0]).hex(), "3"]),
                              capture_output=True, text=True, check=False)
        assert sent.returncode == 0, sent.stderr
        time.sleep(2)
    finally:
        back.send_signal(signal.SIGINT)
        answers = back.communicate(timeout=10)[0]
    after = kernel_states(s.box)[v.child_in]
    print(f"\nreplayed ESP seq of SPI {v.child_in:#010x} 3 times: kernel state before {before}, after {after}; "
          f"from the guest meanwhile: {answers.strip().splitlines()}")
    assert after == {"packets": before["packets"], "replay": before["replay"] + 3}, (before, after, s.diag())
    assert "ESP(" not in answers, answers
