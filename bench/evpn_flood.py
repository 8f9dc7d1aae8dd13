"""A compromised client floods the route reflector (issue 23): what it costs the other gateways and the
reflector, with nsg's reflector and with FRR's in the same run.

    flock /tmp/nsg-e2e.lock .venv/bin/python bench/evpn_flood.py [--routes 50000,200000] [--quick] [--keep]

The lab: lab/topology.py "three-branch" (b1, b2, b3 with one host each, the controller node ctl), transport
esp (IKEv2 + the userspace ESP engine on every box), the hub gateway on ctl and the route reflector beside it
on the hub's system IP; every BGP session runs inside the ESP tunnel to the hub. The attacker is b1, rooted:
lab/bgp_attacker.py in b1's namespace relays b1's own BGP session through b1's own tunnel and adds a flood of
N type-2 routes (b1's RD and next hop, 60 per UPDATE, as fast as TCP takes them). The victims are the nsg
daemons of b2 and b3.

For each reflector ("nsg": `nsg-controller route-reflector` with --owners from Gateways.reflector_argv() and
its default limits; "frr": FRR bgpd + zebra on ctl with the three branches as route-reflector clients, as
bench/evpn.py configures it, no maximum-prefix) and each flood size, one phase; every phase starts from fresh
daemons (hub, branches, reflector restarted in the same namespaces, EVPN converged):

1. idle: three legitimate samples (below) and the processes' baselines: VmRSS, VmHWM reset through
   /proc/PID/clear_refs, utime+stime.
2. flood: from the attacker's session up until it sent everything and the victims, the hub and the reflector
   have been idle (< 10 % of a core) for 2 s; a legitimate sample every --interval s.
3. hold: the attacker keeps its session up, nobody else speaks, --hold s (long enough for the victims'
   dataplane resync, which runs after 30 s without events, to run while they hold what the flood left them).
4. withdrawal: the attacker leaves (the reflector withdraws what the session announced); samples go on until
   the attacker is gone and every process above has been idle for 3 s.

A legitimate sample: a new locally administered MAC sends one ARP probe from b2-h1 (a raw frame; b2 learns it
on its LAN port and announces it); t0 just before the frame goes to the kernel, t1 when a netlink socket in
b3's namespace reads the RTM_NEWNEIGH of that MAC on b3's VXLAN device with dst b2's system IP (b3's kernel
FDB). All namespaces share CLOCK_MONOTONIC. A sample with no entry by the end of the phase is "missed" and
counts as slower than any other in the median.

Keys (per phase; the top level repeats ours at the largest flood, "frr" the same for FRR):
  rr_rss_mb_peak          the reflector's peak RSS (FRR: bgpd + zebra) over the phase
  victim_rss_mb_before / victim_rss_mb_peak / victim_rss_mb_growth
                          of the victim that grew most (VmRSS before; max of VmHWM and VmRSS sampled every 0.1 s)
  victim_cpu_s            utime+stime of the busier victim over the flood window (phases 2-4)
  legit_route_ms_during_flood  median of the samples of phases 2 and 4 (legit_route_ms_max: the slowest
                          that arrived; legit_routes_missed: how many never reached b3's FDB in the phase)
  sessions_dropped        BGP sessions of b2 and b3 that went down in the phase (their `nsg status` flaps
                          counters for the reflector, and any not Established at the end); b1's is the
                          attacker's and not counted
Goals (issue 23): victim RSS growth < 20 MB, legit_route_ms_during_flood < 200, sessions_dropped 0.
The attacker's LAN is guarded (port security on, as rendered), so the reflector and the victims cut its flood
at its route budget (controller/route_budget.py: 833 routes); --unbounded-lan turns its port security off, so
the default limits (10,000 per client and per site) apply: the worst case the product allows ("attacker_lan").
Per victim also: neigh_events_dropped, the neighbour notifications the kernel dropped for the daemon's
netlink sockets (/proc/PID/net/netlink), which is where a local MAC learned during a flood can get lost.
Progress on stderr, one JSON object on the last line of stdout; everything torn down, also on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _evpn_agent import arp_request
from _evpn_lab import BenchError, mb, real_pid
from _fdb_watch import FdbWatch, socket_in
from _runner import bench_main

from controller.mesh import with_remote_prefixes
from lab import topology
from lab.bgp_attacker import Harness
from lab.gateways import HUB, HUB_NODE, Gateways, nsg_argv
from lab.lab import Lab
from lab.netns import LabError
from lab.topology import CONTROLLER_SYSTEM_IP
from nsg.control_socket import ControlError, request
from nsg.model import load_config, parse_config
from nsg.model.config import dump_config
from tests.interop.frr import Frr, FrrError, Neighbor, missing
from tests.interop.procs import stop_process

ASN, VNI = 65000, 100
BRANCHES = ("b1", "b2", "b3")
VICTIMS = ("b2", "b3")
SYS = {b: f"198.19.255.{i}" for i, b in enumerate(BRANCHES, start=1)}  # lab/topology.py
GATEWAY_IP = "198.19.0.1"
GOALS = {"victim_rss_mb_growth": 20.0, "legit_route_ms_during_flood": 200.0, "sessions_dropped": 0}
IDLE_CPU = 0.10  # of one core: below it a process counts as idle
TICK = os.sysconf("SC_CLK_TCK")
PORT_MACS = 200  # legitimate MACs per run: b2's LAN port takes 256 (nsg.model.config.PortSecurity)


def log(msg: str) -> None:
    print(f"bench/evpn_flood.py: {msg}", file=sys.stderr, flush=True)


# --- processes: memory and CPU -----------------------------------------------------------------------

def proc_status(pid: int) -> dict[str, int]:
    out = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line[:5]] = int(line.split()[1])
    return out


def cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])  # utime, stime (fields 14 and 15)
    except (OSError, IndexError):
        return 0


class Meter:
    """VmRSS of each role (the sum over its pids) every 0.1 s, the peak, and CPU ticks; VmHWM is reset at
    the start (writing 5 to /proc/PID/clear_refs), so that it is the peak of this window."""

    def __init__(self, pids: dict[str, list[int]]):
        self.pids = pids
        for ps in pids.values():
            for p in ps:
                with contextlib.suppress(OSError), open(f"/proc/{p}/clear_refs", "w") as f:
                    f.write("5")
        self.t0 = time.monotonic()
        self.before = {r: self._rss(r) for r in pids}
        self.cpu0 = {r: self._cpu(r) for r in pids}
        self.peak = dict(self.before)
        self.history: deque[tuple[float, dict[str, int]]] = deque(maxlen=200)
        self.series: list[list] = []  # every 2 s: [t, rss MB of each victim]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meter", daemon=True)
        self._thread.start()

    def _rss(self, role: str) -> int:
        return sum(proc_status(p).get("VmRSS", 0) for p in self.pids[role])

    def _cpu(self, role: str) -> int:
        return sum(cpu_ticks(p) for p in self.pids[role])

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(0.1):
            for r in self.pids:
                self.peak[r] = max(self.peak[r], self._rss(r))
            if n % 5 == 0:
                self.history.append((time.monotonic(), {r: self._cpu(r) for r in self.pids}))
            if n % 20 == 0:
                self.series.append([round(time.monotonic() - self.t0, 1), *(mb(self._rss(v)) for v in VICTIMS)])
            n += 1

    def idle_for(self, seconds: float) -> bool:
        """Whether every role used less than IDLE_CPU of a core over the last ``seconds``."""
        now = time.monotonic()
        past = [h for h in self.history if h[0] <= now - seconds]
        if not past or not self.history:
            return False
        (t0, c0), (t1, c1) = past[-1], self.history[-1]
        return t1 - t0 >= seconds * 0.8 and all((c1[r] - c0[r]) / TICK / (t1 - t0) < IDLE_CPU for r in self.pids)

    def stop(self) -> dict[str, dict]:
        self._stop.set()
        self._thread.join(2)
        out = {}
        for r, ps in self.pids.items():
            hwm = sum(proc_status(p).get("VmHWM", 0) for p in ps)
            out[r] = {"rss_mb_before": mb(self.before[r]), "rss_mb_peak": mb(max(self.peak[r], hwm)),
                      "cpu_s": round((self._cpu(r) - self.cpu0[r]) / TICK, 2)}
        return out


# --- the lab ----------------------------------------------------------------------------------------

class Site:
    """The three-branch ESP lab with a swappable reflector; every daemon is a Popen of this run."""

    def __init__(self, name: str, workdir: Path, unbounded_lan: bool = False):
        self.lab = Lab(name)
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen] = {}
        self.rr: subprocess.Popen | Frr | None = None
        self.frr_runs = 0
        self.plan = self.lab.up(topology.load("three-branch"))
        try:
            self.gws = Gateways(self.lab, self.plan, transport="esp")
            self.gws.write_configs()
            if unbounded_lan:
                self.unbound_attacker_lan()
            self.gws.hub_started = True  # the hub and the reflector are started (and swapped) here
        except BaseException:
            self.lab.down()
            raise

    def unbound_attacker_lan(self) -> None:
        """b1's subnets with port security off: b1 then has no route budget (controller/route_budget.py),
        so the reflector and the victims fall back to their default limits (10,000 routes per client and
        per site) for it, and the victims hold that many of the flood: the worst case the product allows."""
        names = [g.name for g in self.plan.gateways]
        configs = {n: load_config(self.gws.config_path(n)) for n in names}
        doc = configs["b1"].model_dump(mode="json")
        for s in doc["subnets"]:
            s["port_security"] = None
        configs["b1"] = parse_config(doc, source="b1")
        for n, cfg in with_remote_prefixes(configs).items():
            self.gws.config_path(n).write_text(dump_config(cfg))

    def spawn_nsg(self, gw: str) -> None:
        self.procs[gw] = self.lab.spawn(self.gws.node(gw), "nsg", nsg_argv(
            "run", "--config", str(self.gws.config_path(gw)), "--state-dir", str(self.gws.state_dir(gw))))

    def pid(self, gw: str) -> int:
        return real_pid(self.procs[gw], b"nsg.cli")

    def status(self, gw: str, timeout: float = 20) -> dict:
        return request(self.gws.state_dir(gw), "status", timeout=timeout)

    def start_reflector(self, kind: str) -> list[int]:
        if kind == "nsg":
            logf = self.lab.log_path(HUB_NODE, "rr")
            started = logf.read_bytes().count(b"listening on") if logf.exists() else 0
            self.rr = self.lab.spawn(HUB_NODE, "rr", self.gws.reflector_argv())
            deadline = time.monotonic() + 20
            while logf.read_bytes().count(b"listening on") <= started:
                if self.rr.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"nsg route reflector did not start: {logf.read_text()[-1500:]}")
                time.sleep(0.05)
            return [real_pid(self.rr, b"controller.cli")]
        self.frr_runs += 1
        f = Frr(self.lab.ns(HUB_NODE), self.workdir / f"frr-rr{self.frr_runs}", CONTROLLER_SYSTEM_IP, ASN,
                [Neighbor(SYS[b], ASN, rr_client=True, update_source=CONTROLLER_SYSTEM_IP) for b in BRANCHES],
                name="frr-rr", advertise_all_vni=False)
        self.rr = f
        f.start()
        return list(f.pids.values())

    def stop_reflector(self) -> None:
        rr, self.rr = self.rr, None
        if isinstance(rr, Frr):
            rr.stop()
        elif rr is not None:
            stop_process(rr, timeout=10)

    def frr_dropped(self) -> dict[str, int]:
        """FRR's own count of dropped connections per victim (a cross-check of the gateways' flaps)."""
        if not isinstance(self.rr, Frr):
            return {}
        nb = self.rr.neighbor_json()
        return {v: int(nb.get(SYS[v], {}).get("connectionsDropped", 0)) for v in VICTIMS}

    def fresh(self, kind: str) -> list[int]:
        """Everything restarted in place (hub, branches, reflector of ``kind``) until EVPN converged: each
        phase starts from the same state, whatever the previous flood left (a reflector's reconnect
        backoff for b1, the daemons' memory)."""
        self.lab.run("b1", "nft", "delete", "table", "ip", "nsgattack", check=False)
        for gw in (*BRANCHES, HUB):
            if gw in self.procs:
                stop_process(self.procs.pop(gw), timeout=15)
        self.stop_reflector()
        pids = self.start_reflector(kind)
        self.spawn_nsg(HUB)
        for gw in BRANCHES:
            self.spawn_nsg(gw)
        for gw in BRANCHES:
            try:
                self.gws.wait_tunnels(gw, timeout=90)
            except LabError as exc:
                tail = self.lab.log_path(gw, "nsg").read_text(errors="replace")[-1500:]
                raise BenchError(f"{kind} reflector: {gw} did not converge: {exc}\n{tail}") from None
        return pids

    def down(self) -> None:
        for gw in list(self.procs):
            with contextlib.suppress(Exception):
                stop_process(self.procs.pop(gw), timeout=10)
        with contextlib.suppress(Exception):
            self.stop_reflector()
        self.lab.down()  # the safety net: every process left in the lab's namespaces is this run's


# --- one phase ------------------------------------------------------------------------------------

def median_ms(values: list[float | None]) -> float | None:
    """The median, a missed sample (None) counting as slower than any other; None if that is where it falls."""
    if not values:
        return None
    m = statistics.median(float("inf") if v is None else v for v in values)
    return None if m == float("inf") else round(m, 1)


class Legit:
    """Legitimate MACs of b2's LAN, to b3's FDB: a new host says hello (one ARP probe, sender 0.0.0.0, from a
    new MAC out of b2-h1's eth0) when asked; latencies read at the end."""

    def __init__(self, site: Site, tag: int):
        self.tag = tag
        self.watch = FdbWatch(site.lab.ns("b3"), bytes((0x02, 0x4C, tag)))
        self.sock = socket_in(site.lab.ns("b2-h1"), socket.AF_PACKET, socket.SOCK_RAW)
        self.sock.bind(("eth0", 0))
        self.count = 0
        self.sent: list[tuple[str, str, int]] = []  # (part, mac, t0)

    def send(self, part: str) -> None:
        if self.count >= PORT_MACS:
            return
        self.count += 1
        mac = f"02:4c:{self.tag:02x}:00:{self.count >> 8:02x}:{self.count & 0xFF:02x}"
        frame = arp_request(mac, "0.0.0.0", GATEWAY_IP)
        t0 = time.monotonic_ns()
        self.sock.send(frame)
        self.sent.append((part, mac, t0))

    def wait_last(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.sent[-1][1] not in self.watch.seen and time.monotonic() < deadline:
            time.sleep(0.005)

    def results(self, parts: tuple[str, ...], since: int = 0) -> dict:
        values, wrong = [], []
        for part, mac, t0 in self.sent[since:]:
            if part not in parts:
                continue
            t, dst = self.watch.seen.get(mac, (None, None))
            if t is not None and dst != SYS["b2"]:
                wrong.append({"mac": mac, "dst": dst})
                t = None
            values.append(None if t is None else (t - t0) / 1e6)
        got = sorted(v for v in values if v is not None)
        return {"n": len(values), "missed": len(values) - len(got), "median": median_ms(values),
                "max": round(got[-1], 1) if got else None, "min": round(got[0], 1) if got else None,
                "samples_ms": [None if v is None else round(v, 1) for v in values],
                **({"wrong": wrong} if wrong else {})}

    def close(self) -> None:
        self.watch.close()
        self.sock.close()


def neigh_drops(pid: int, mine: int | None) -> int:
    """Notifications the kernel dropped for the process's namespace's netlink sockets that listen to
    neighbour events (the Drops column of /proc/PID/net/netlink; ``mine``: our own watcher's port id)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/net/netlink") as f:
        head, *rows = (line.split() for line in f)
        cols = [dict(zip(head, r, strict=False)) for r in rows]
        return sum(int(c["Drops"]) for c in cols if c["Eth"] == "0" and int(c["Groups"], 16) & FdbWatch.RTMGRP_NEIGH
                   and int(c["Pid"]) != mine)
    return 0


def victim_view(site: Site, gw: str) -> dict:
    st = site.status(gw)
    peer = ((st.get("evpn") or {}).get("peers") or {}).get(CONTROLLER_SYSTEM_IP) or {}
    ike = (st.get("tunnels") or {}).get("ike") or []
    return {"flaps": peer.get("flaps", 0), "state": peer.get("state"), "resyncs": st["counters"].get("resyncs", 0),
            "routes_mac": ((st.get("evpn") or {}).get("routes") or {}).get("mac"),
            "alerts": [a.get("kind") for a in (st.get("evpn") or {}).get("alerts", [])],
            "tunnels_up": sum(1 for p in ike if (p.get("ike_sa") or {}).get("state") == "established")}


def phase(site: Site, kind: str, routes: int, legit: Legit, args: argparse.Namespace) -> dict:
    t_start = time.monotonic()
    rr_pids = site.fresh(kind)
    log(f"{kind} reflector, {routes} routes: lab converged in {time.monotonic() - t_start:.1f} s")
    before = {v: victim_view(site, v) for v in VICTIMS}
    mine = legit.watch.sock.getsockname()[0]
    drops0 = {v: neigh_drops(site.pid(v), mine) for v in VICTIMS}
    dropped0 = site.frr_dropped()
    first = len(legit.sent)
    for _ in range(3):  # the idle baseline, one at a time
        legit.send("idle")
        legit.wait_last(3)
        time.sleep(0.3)
    meter = Meter({**{v: [site.pid(v)] for v in VICTIMS}, "hub": [site.pid(HUB)], "rr": rr_pids})
    att = Harness(site.lab, "b1", {
        "mode": "inject", "hub": CONTROLLER_SYSTEM_IP, "local": SYS["b1"], "asn": ASN, "wait_s": 30,
        "linger_s": args.hold + 600, "stop_on_stdin": True,  # it stops when told (or when the reflector says)
        "steps": [{"flood": {"count": routes, "mac_prefix": "02:66", "per_update": 60}}]},
        site.workdir / "attacker.log")
    marks: dict[str, float] = {}
    try:
        if not att.wait("established", 45):
            raise BenchError(f"{kind}: the attacker got no session over b1's: {att.close()}")
        t0 = marks["established"] = time.monotonic()
        log(f"{kind}, {routes} routes: attacker session up, flooding")
        next_at, part = t0, "flood"
        while True:  # 2. the flood, 3. the hold, 4. the withdrawal
            now = time.monotonic()
            if part == "flood" and ("steps_done" in att.events or att.gone) and meter.idle_for(2):
                marks["absorbed"] = now
                part = "hold" if not att.gone else "withdrawal"
                log(f"{kind}, {routes} routes: absorbed after {now - t0:.1f} s"
                    f"{'; holding' if part == 'hold' else ''}")
            elif part == "flood" and now - t0 > args.max_phase:
                marks["absorbed"] = now
                part = "hold" if not att.gone else "withdrawal"
                log(f"{kind}, {routes} routes: not absorbed after {args.max_phase} s; going on")
            if part == "hold" and (att.gone or now - marks["absorbed"] >= args.hold):
                att.stop()
                marks["stop"] = now
                part = "withdrawal"
            if part == "withdrawal" and att.gone and now - max(att.events["exited"], marks.get("stop", 0)) > 2 \
                    and meter.idle_for(3):
                marks["settled"] = now
                break
            if now - t0 > args.max_phase * 2 + args.hold:
                log(f"{kind}, {routes} routes: not settled; ending the phase")
                break
            if part != "hold" and now >= next_at:
                per_part = sum(1 for p, _m, t in legit.sent[first:] if p == part)
                if per_part < args.samples:
                    legit.send(part)
                next_at = now + args.interval
            time.sleep(0.05)
        time.sleep(2)  # late arrivals
    finally:
        usage = meter.stop()
        res = att.close()
        site.lab.run("b1", "nft", "delete", "table", "ip", "nsgattack", check=False)
    after = {v: victim_view(site, v) for v in VICTIMS}
    dropped1 = site.frr_dropped()
    during = legit.results(("flood", "withdrawal"), first)
    victims = {v: {**usage[v], "rss_mb_growth": round(usage[v]["rss_mb_peak"] - usage[v]["rss_mb_before"], 1),
                   "flaps": after[v]["flaps"] - before[v]["flaps"], "session_at_end": after[v]["state"],
                   "resyncs": after[v]["resyncs"] - before[v]["resyncs"],
                   "routes_mac_before_after": [before[v]["routes_mac"], after[v]["routes_mac"]],
                   "alerts": sorted(set(after[v]["alerts"])),
                   "tunnels_up_after": after[v]["tunnels_up"],
                   "neigh_events_dropped": neigh_drops(site.pid(v), mine) - drops0[v]} for v in VICTIMS}
    worst = max(VICTIMS, key=lambda v: victims[v]["rss_mb_growth"])
    dropped = sum(victims[v]["flaps"] + (victims[v]["session_at_end"] != "Established") for v in VICTIMS)
    out = {
        "reflector": kind, "routes": routes,
        "rr_rss_mb_before": usage["rr"]["rss_mb_before"], "rr_rss_mb_peak": usage["rr"]["rss_mb_peak"],
        "victim_rss_mb_before": victims[worst]["rss_mb_before"], "victim_rss_mb_peak": victims[worst]["rss_mb_peak"],
        "victim_rss_mb_growth": victims[worst]["rss_mb_growth"],
        "victim_cpu_s": max(victims[v]["cpu_s"] for v in VICTIMS),
        "legit_route_ms_during_flood": during["median"], "legit_route_ms_max": during["max"],
        "legit_routes_missed": during["missed"],
        "legit_route_ms_idle": legit.results(("idle",), first)["median"],
        "sessions_dropped": dropped,
        "victims": victims, "rr": usage["rr"], "hub": usage["hub"],
        "legit": {p: legit.results((p,), first) for p in ("idle", "flood", "withdrawal")},
        "timeline_s": {k: round(v - t0, 1) for k, v in marks.items()} | {"attacker_exited": round(
            att.events.get("exited", time.monotonic()) - t0, 1)},
        "victim_rss_mb_series": {"columns": ["t_s", *VICTIMS], "rows": meter.series},
        "attacker": {k: res.get(k) for k in ("sent", "notification", "end", "errors", "established")},
        "watch": {"fdb_events": legit.watch.events, "overruns": legit.watch.overruns},
    }
    if dropped1:
        out["frr_connections_dropped"] = {v: dropped1[v] - dropped0.get(v, 0) for v in VICTIMS}
    log(f"{kind}, {routes} routes: " + json.dumps({k: out[k] for k in (
        "rr_rss_mb_peak", "victim_rss_mb_before", "victim_rss_mb_peak", "victim_cpu_s",
        "legit_route_ms_during_flood", "legit_route_ms_max", "sessions_dropped")}))
    return out


# --- main -----------------------------------------------------------------------------------------

KEYS = ("rr_rss_mb_peak", "victim_rss_mb_before", "victim_rss_mb_peak", "victim_rss_mb_growth", "victim_cpu_s",
        "legit_route_ms_during_flood", "legit_route_ms_max", "legit_routes_missed", "sessions_dropped")


def missed_goals(r: dict) -> list[str]:
    """The goals a phase missed, as measured (a value that could not be measured misses its goal)."""
    out = [f"{k} {r.get(k)} (goal < {limit})" for k, limit in GOALS.items()
           if k != "sessions_dropped" and (r.get(k) is None or r[k] >= limit)]
    if r.get("sessions_dropped") != 0:
        out.append(f"sessions_dropped {r.get('sessions_dropped')} (goal 0)")
    return out


def run(args: argparse.Namespace, workdir: Path) -> dict:
    result: dict = {"bench": "evpn_flood", "routes": args.routes, "goals": {
        **{f"{k}_below": v for k, v in GOALS.items() if k != "sessions_dropped"}, "sessions_dropped": 0},
        "hold_s": args.hold, "interval_s": args.interval, "loadavg_1m_at_start": round(os.getloadavg()[0], 2)}
    errors: dict[str, str] = {}
    result["attacker_lan"] = "unbounded" if args.unbounded_lan else "guarded"
    site = Site(f"fl{secrets.token_hex(3)}", workdir, args.unbounded_lan)
    legit = None
    try:
        log(f"lab {site.lab.name} up")
        legit = Legit(site, secrets.randbelow(256))
        for kind in ("nsg", "frr"):
            by: dict[str, dict] = {}
            for n in args.routes:
                try:
                    by[str(n)] = phase(site, kind, n, legit, args)
                except (BenchError, FrrError, LabError, ControlError) as exc:
                    errors[f"{kind}_{n}"] = str(exc)[-2000:]
                    log(f"{kind}, {n} routes: failed: {str(exc)[-500:]}")
            last = by.get(str(args.routes[-1]), {})
            top = {k: last.get(k) for k in KEYS}
            missed = [f"{n}: {m}" for n, r in by.items() for m in missed_goals(r)]
            block = {**top, "meets_goals": not missed and len(by) == len(args.routes), "goals_missed": missed,
                     "by_routes": by}
            if kind == "nsg":
                result.update(block)
            else:
                result["frr"] = block
    finally:
        if legit is not None:
            legit.close()
        if args.keep:
            shutil.copytree(site.lab.dir / "logs", workdir / "logs", dirs_exist_ok=True)
        site.down()
    if errors:
        result["errors"] = errors
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--routes", default="50000,200000", help="flood sizes, one phase each (default %(default)s)")
    ap.add_argument("--quick", action="store_true", help="one flood of 5,000 routes, a short hold")
    ap.add_argument("--unbounded-lan", action="store_true",
                    help="the attacker's LAN without port security: no route budget, the default limits apply")
    ap.add_argument("--hold", type=float, default=35.0, metavar="SECONDS",
                    help="the attacker's session stays up this long once the flood is absorbed (> the 30 s resync)")
    ap.add_argument("--interval", type=float, default=0.5, metavar="SECONDS", help="between legitimate samples")
    ap.add_argument("--samples", type=int, default=20, help="at most this many samples per part (flood, withdrawal)")
    ap.add_argument("--max-phase", type=float, default=120.0, metavar="SECONDS",
                    help="give up waiting for the victims to absorb a flood after this long")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs) and say where")
    args = ap.parse_args()
    if args.quick:
        args.routes, args.hold = "5000", 10.0
    args.routes = [int(x) for x in str(args.routes).split(",") if x.strip()]
    return bench_main("evpn_flood", args, run, lambda: _unavailable(args))


def _unavailable(args: argparse.Namespace) -> str | None:
    absent = missing() + [p for p in ("nft", "ss", "bridge") if shutil.which(p) is None]
    macs = 2 * len(args.routes) * (2 * args.samples + 3)
    if macs > PORT_MACS:
        absent.append(f"too many legitimate samples ({macs}) for b2's LAN port ({PORT_MACS})")
    return "; ".join(absent) or None


if __name__ == "__main__":
    raise SystemExit(main())
