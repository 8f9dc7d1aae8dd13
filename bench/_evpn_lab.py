"""The lab of bench/evpn.py: namespaces on one core bridge, nsg gateways, FRR, the helper agents.

Split from the bench so each file stays small; see bench/evpn.py for what is measured and how."""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab import netns  # noqa: E402
from nsg.control_socket import ControlError, request  # noqa: E402
from tests.interop.frr import Frr, Neighbor  # noqa: E402
from tests.interop.procs import stop_process  # noqa: E402

AGENT = ROOT / "bench" / "_evpn_agent.py"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # the tree this bench lives in, whatever is installed

ASN, VNI = 65000, 100
CORE_PREFIX = 24
RR = "198.18.40.1"
WAN = {"b1": "198.18.40.11", "b2": "198.18.40.12", "gx": "198.18.40.21", "fx": "198.18.40.22", "in": "198.18.40.30"}
SYSIP = {"b1": "198.19.255.1", "b2": "198.19.255.2", "gx": "198.19.255.21"}
FAKE_VTEP = "198.18.40.200"  # next hop of the injected routes: on the core subnet, so FRR deems it reachable
LAN_CIDR, LAN_GW = "198.19.0.0/24", "198.19.0.1"
LAN_HOST_BASE = 100  # sample k says hello from 198.19.0.(100 + k)
TARGET_MS = 50
SAMPLE_TIMEOUT = 3.0
POLL = 0.1


class BenchError(RuntimeError):
    """The lab did not reach the state a measurement needs (the message says which and why)."""


def sh(*argv: str) -> str:
    return netns.run(*argv)


def proc_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError as exc:  # the process is gone: that is a finding, not a crash of the bench
        raise BenchError(f"process {pid} is gone ({exc.strerror}) when reading its {field}") from None
    raise BenchError(f"/proc/{pid}/status has no {field}")


def mb(kb: int) -> float:
    return round(kb / 1024, 1)


def real_pid(proc: subprocess.Popen, marker: bytes) -> int:
    """The pid of the program `ip netns exec` ran: itself (iproute2 execs), or a child if it forked."""
    for _ in range(50):
        pids = [proc.pid]
        with contextlib.suppress(OSError):
            pids += [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        for pid in pids:
            with contextlib.suppress(OSError):
                if marker in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return pid
        time.sleep(0.02)
    raise BenchError(f"no process running {marker!r} under pid {proc.pid}")


def fdb_macs(ns: str, dev: str, dst: str) -> int:
    """MACs the VXLAN device ``dev`` sends toward ``dst`` (its own FDB, the entries carrying a remote)."""
    out = subprocess.run(["bridge", "-n", ns, "-j", "fdb", "show", "dev", dev], capture_output=True, text=True,
                         check=False).stdout
    return len({e["mac"] for e in json.loads(out or "[]") if e.get("dst") == dst})


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    s = sorted(values)
    return {"n": len(s), "median": round(statistics.median(s), 1), "p90": round(s[math.ceil(0.9 * len(s)) - 1], 1),
            "min": round(s[0], 1), "max": round(s[-1], 1)}


# --- processes ---------------------------------------------------------------------------------------


class Agent:
    """A bench/_evpn_agent.py process in a namespace; a thread reads its JSON lines."""

    def __init__(self, ns: str, log: Path, *args: str, stdin: bool = False):
        self.name = f"{args[0]}@{ns}"
        self.log = log
        self._err = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(AGENT), *args],
                                     stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._err, cwd=ROOT, env=ENV, start_new_session=True, text=True,
                                     bufsize=1)
        self.events: queue.Queue[dict | None] = queue.Queue()
        self.macs: dict[str, dict] = {}  # watch: first VXLAN FDB event per MAC
        self._cond = threading.Condition()
        threading.Thread(target=self._read, name=self.name, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "mac" in obj and "dst" in obj:
                with self._cond:
                    self.macs.setdefault(obj["mac"], obj)
                    self._cond.notify_all()
            else:
                self.events.put(obj)
        self.events.put(None)

    def expect(self, key: str, timeout: float, value: object = None) -> dict:
        """The next event carrying ``key`` (with ``value``, if given); earlier ones are skipped."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                obj = self.events.get(timeout=left)
            except queue.Empty:
                break
            if obj is None:
                raise BenchError(f"{self.name} exited ({self.proc.poll()}): {self.tail()}")
            if key in obj and (value is None or obj[key] == value):
                return obj
        raise BenchError(f"{self.name}: no '{key}' within {timeout} s: {self.tail()}")

    def wait_mac(self, mac: str, timeout: float) -> dict | None:
        with self._cond:
            self._cond.wait_for(lambda: mac in self.macs, timeout)
            return self.macs.get(mac)

    def say(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def signal(self, sig: int) -> None:
        os.kill(real_pid(self.proc, AGENT.name.encode()), sig)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-1500:]

    def stop(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        stop_process(self.proc)
        self._err.close()


class Gateway:
    """`nsg run` in a namespace; asked for status over its control socket."""

    def __init__(self, ns: str, name: str, workdir: Path, peer: str, lan_port: bool, tag: str, flush: bool):
        self.ns, self.name, self.workdir, self.flush = ns, name, workdir, flush
        self.base = f"{name}-{tag}"
        self.config = workdir / f"{self.base}.json"
        cfg = {"schema_version": 1, "system_ip": SYSIP[name], "transport": "plain",
               "uplinks": [{"name": "wan0", "interface": "wan0", "mode": "static",
                            "address": f"{WAN[name]}/{CORE_PREFIX}", "gateway": RR}],
               "subnets": [{"name": "corp", "vni": VNI, "cidr": LAN_CIDR, "gateway": LAN_GW,
                            "ports": ["lan0"] if lan_port else []}],
               "evpn": {"asn": ASN, "peers": [{"address": peer, "asn": ASN}], "hold_time": 9}}
        self.config.write_text(json.dumps(cfg, indent=1))
        self.proc: subprocess.Popen | None = None
        self.runs = 0
        self.state = self.log = workdir

    def start(self) -> Gateway:
        self.runs += 1
        self.state = self.workdir / f"{self.base}-state{self.runs}"
        self.log = self.workdir / f"{self.base}-{self.runs}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, sys.executable, "-m", "nsg.cli", "run", "--config", str(self.config),
                 "--state-dir", str(self.state), *(["--flush-on-exit"] if self.flush else [])],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT, env=ENV,
                start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return real_pid(self.proc, b"nsg.cli")

    def status(self, timeout: float = 10) -> dict | None:
        try:
            return request(self.state, "status", timeout=timeout)
        except (ControlError, OSError):
            return None

    def wait(self, pred: Callable[[dict], bool], timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        st = None
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise BenchError(f"{self.name}: nsg exited: {self.tail()}")
            st = self.status()
            if st and pred(st):
                return st
            time.sleep(0.05)
        raise BenchError(f"{self.name}: timed out waiting for {what}; evpn {st and st.get('evpn')}; {self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-1500:] if self.log.is_file() else ""

    def applies(self, reason: str) -> list[tuple[int, float]]:
        """(changes, ms) of each dataplane apply for ``reason``, from the daemon's JSON log."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, TypeError, KeyError):
                rec = json.loads(line)
                if rec.get("reason") == reason and "ms" in rec:
                    out.append((int(rec["changes"]), float(rec["ms"])))
        return out

    def stop(self, timeout: float = 15) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=timeout)
            self.proc = None


def established(st: dict, peer: str) -> bool:
    return ((st.get("evpn") or {}).get("peers") or {}).get(peer, {}).get("state") == "Established"


# --- the lab ----------------------------------------------------------------------------------------


class Lab:
    ROLES = ("rr", "b1", "b2", "h1", "h2", "gx", "fx", "in")

    def __init__(self, prefix: str, workdir: Path, stack: contextlib.ExitStack):
        self.ns = {r: f"{prefix}{r}" for r in self.ROLES}
        self.workdir = workdir
        self.stack = stack
        self.hosts = 0

    def cleanup(self, fn: Callable[[], object], what: str) -> None:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - teardown goes on whatever one step did (or a 2nd Ctrl-C)
                print(f"bench/evpn.py: teardown: {what}: {exc}", file=sys.stderr)

        self.stack.callback(run)

    def veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
        sh("ip", "link", "add", "name", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)
        sh("ip", "-n", ns_a, "link", "set", if_a, "up")
        sh("ip", "-n", ns_b, "link", "set", if_b, "up")

    def up(self) -> None:
        for ns in self.ns.values():
            netns.add_namespace(ns)

            def down(ns: str = ns) -> None:
                # the safety net: every process in a namespace of this run was started by this run
                netns.kill_namespace_processes(ns)
                netns.delete_namespace(ns)

            self.cleanup(down, f"namespace {ns}")
        rr = self.ns["rr"]
        sh("ip", "-n", rr, "link", "add", "core", "type", "bridge")
        sh("ip", "-n", rr, "link", "set", "core", "type", "bridge", "stp_state", "0", "forward_delay", "0")
        sh("ip", "-n", rr, "link", "set", "core", "up")
        sh("ip", "-n", rr, "addr", "add", f"{RR}/{CORE_PREFIX}", "dev", "core")
        netns.sysctl(rr, "net.ipv4.ip_forward", "0")
        for role in ("b1", "b2", "gx", "fx", "in"):
            self.veth(self.ns[role], "wan0", rr, f"p-{role}")
            sh("ip", "-n", rr, "link", "set", f"p-{role}", "master", "core")
        for role in ("fx", "in"):  # the gateways set their own uplink address
            sh("ip", "-n", self.ns[role], "addr", "add", f"{WAN[role]}/{CORE_PREFIX}", "dev", "wan0")
        for role in ("b1", "b2"):
            sh("ip", "-n", rr, "route", "add", f"{SYSIP[role]}/32", "via", WAN[role])
        self.veth(self.ns["b1"], "lan0", self.ns["h1"], "eth0")
        self.veth(self.ns["b2"], "lan0", self.ns["h2"], "eth0")
        self.watcher = self.agent("b2", "watch")
        self.watcher.expect("ready", 15)
        self.sender = self.agent("h1", "send", "eth0", stdin=True)
        self.sender.expect("ready", 15)

    def agent(self, role: str, *args: str, stdin: bool = False) -> Agent:
        a = Agent(self.ns[role], self.workdir / f"agent-{args[0]}-{role}.log", *args, stdin=stdin)
        self.cleanup(a.stop, a.name)
        return a

    def gateway(self, name: str, peer: str, tag: str, *, lan_port: bool = True, flush: bool = True) -> Gateway:
        g = Gateway(self.ns[name], name, self.workdir, peer, lan_port, tag, flush)
        self.cleanup(g.stop, f"gateway {name}")
        return g

    def frr(self, role: str, name: str, router_id: str, neighbors: list[Neighbor], *, vni: bool) -> Frr:
        f = Frr(self.ns[role], self.workdir / name, router_id, ASN, neighbors, name=name, advertise_all_vni=vni)
        self.cleanup(f.stop, f"FRR {name}")
        return f

    def hello(self, mac: str) -> int:
        """A host with MAC ``mac`` appears on b1's LAN: one ARP request for the gateway; the time it left."""
        self.hosts += 1
        if self.hosts > 150:
            raise BenchError("out of LAN host addresses")
        self.sender.say(f"{mac} 198.19.0.{LAN_HOST_BASE + self.hosts} {LAN_GW}")
        ev = self.sender.expect("t", 5)
        if ev.get("mac") != mac:
            raise BenchError(f"sender answered for {ev.get('mac')}, not {mac}")
        return int(ev["t"])


