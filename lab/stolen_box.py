"""What a test needs to watch a rooted branch attack the overlay (tests/e2e/test_stolen_box.py): the
attacker (lab/bgp_attacker.py) run in the branch's namespace with its progress to wait for, pings in
the background and their loss, the victims' kernel state read as JSON (VXLAN FDB, bridge ports,
neighbours, type-5 routes), and the route reflector beside the hub: who is connected, what it refused
(its log), a restart as it was started.

Every process started here is a child of the test and is killed by its pid when the ``with`` block
ends, also on failure; nothing here builds or removes namespaces (lab/lab.py does).
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from lab.gateways import HUB_NODE
from lab.lab import Lab
from nsg.dataplane.types import NSG_PROTO

REPO = Path(__file__).resolve().parents[1]
VNI = 100  # the tenant subnet of the lab topologies


# --- kernel state, read as JSON ---------------------------------------------------------------------

def vxlan_fdb(lab: Lab, node: str, vni: int = VNI) -> dict[str, set[str]]:
    """MAC -> the VTEPs the branch's VXLAN device sends it to."""
    out: dict[str, set[str]] = {}
    for row in json.loads(lab.run(node, "bridge", "-j", "fdb", "show", "dev", f"vx-{vni}").stdout):
        if row.get("dst"):
            out.setdefault(row["mac"], set()).add(row["dst"])
    return out


def bridge_port(lab: Lab, node: str, mac: str, vni: int = VNI) -> str | None:
    """The port of the branch's bridge a MAC is behind (lan0: at home)."""
    rows = json.loads(lab.run(node, "bridge", "-j", "fdb", "show", "br", f"br-{vni}").stdout)
    return next((r["ifname"] for r in rows if r["mac"] == mac and r.get("master") == f"br-{vni}"), None)


def bridge_neighbours(lab: Lab, node: str, vni: int = VNI) -> dict[str, str]:
    """IP -> MAC of the neighbour entries on the branch's bridge."""
    rows = json.loads(lab.run(node, "ip", "-j", "neigh", "show", "dev", f"br-{vni}").stdout)
    return {r["dst"]: r["lladdr"] for r in rows if r.get("lladdr")}


def neighbour(lab: Lab, node: str, ip: str, dev: str) -> str | None:
    rows = json.loads(lab.run(node, "ip", "-j", "neigh", "show", ip, "dev", dev).stdout)
    return next((r["lladdr"] for r in rows if r.get("lladdr")), None)


def prefix_routes(lab: Lab, node: str, vni: int = VNI) -> dict[str, str]:
    """Routes nsg installed on the tenant bridge (type-5 prefixes): prefix -> gateway IP."""
    rows = json.loads(lab.run(node, "ip", "-j", "route", "show", "proto", str(NSG_PROTO), "dev",
                              f"br-{vni}").stdout)
    return {r["dst"]: r.get("gateway") for r in rows}


# --- processes of the test (each killed by pid if the test ends first) ------------------------------

class Attacker:
    """lab/bgp_attacker.py in ``node``'s namespace running ``scenario``; its progress lines can be
    waited for."""

    def __init__(self, lab: Lab, scenario: dict, node: str = "b1"):
        argv = lab.exec_argv(node, [sys.executable, "-m", "lab.bgp_attacker", json.dumps(scenario)])
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._lines: queue.Queue = queue.Queue()
        self.events: set[str] = set()
        self.result: dict | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _take(self, timeout: float) -> bool:
        try:
            line = self._lines.get(timeout=max(timeout, 0))
        except queue.Empty:
            return False
        if line is None:
            self._lines.put(None)
            return False
        msg = json.loads(line)
        if "event" in msg:
            self.events.add(msg["event"])
        else:
            self.result = msg
        return True

    def wait(self, event: str, timeout: float = 20) -> bool:
        deadline = time.monotonic() + timeout
        while event not in self.events:
            if not self._take(deadline - time.monotonic()):
                return False
        return True

    def finish(self, timeout: float = 60) -> dict:
        self.proc.wait(timeout)
        while self._take(1):
            pass
        if self.result is None:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"the attacker printed no result (exit {self.proc.returncode}): {err}")
        return self.result

    def __enter__(self) -> Attacker:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Ping:
    """ping in the background: ``count`` echoes ``interval`` apart."""

    def __init__(self, lab: Lab, src: str, dst: str, count: int, interval: float = 0.1):
        self.proc = subprocess.Popen(lab.exec_argv(src, ["ping", "-c", str(count), "-i", str(interval), "-W", "1",
                                                         dst]), stdout=subprocess.PIPE, text=True)

    def loss(self, timeout: float = 60) -> tuple[float, str]:
        out, _ = self.proc.communicate(timeout=timeout)
        return loss(out), out.strip().splitlines()[-2] if out.strip() else out

    def __enter__(self) -> Ping:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def loss(out: str) -> float:
    """Percent lost, from ping's summary line."""
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    return 100.0 * (1 - int(m[2]) / int(m[1]))


def ping_loss(lab: Lab, src: str, dst: str, count: int = 5) -> float:
    """Percent of ``count`` pings from ``src`` to ``dst`` lost."""
    return loss(lab.run(src, "ping", "-c", str(count), "-i", "0.2", "-W", "1", dst, check=False).stdout)


# --- the route reflector beside the hub -------------------------------------------------------------

def rr_log(lab: Lab, node: str = HUB_NODE) -> Path:
    return lab.log_path(node, "rr")


def rr_reasons(log: Path, since: int, client: str) -> set[str]:
    """What the reflector refused from ``client`` (its log from octet ``since`` on): the reasons of
    controller/rr_check.py, as its security event lines name them."""
    text = log.read_bytes()[since:].decode(errors="replace")
    return set(re.findall(rf"BGP client {re.escape(client)}(?: \([^)]*\))?: ([a-z-]+) x\d+", text))


def rr_clients(lab: Lab, node: str = HUB_NODE) -> set[str]:
    """The addresses with a TCP connection to the reflector (columns: Recv-Q Send-Q Local Peer)."""
    out = lab.run(node, "ss", "-Htn", "state", "established", "sport", "= :179").stdout
    return {line.split()[3].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()}


def restart_reflector(lab: Lab, node: str = HUB_NODE, timeout: float = 10) -> None:
    """Stop the lab's reflector (SIGTERM: graceful restart, the clients keep its routes meanwhile) and
    start it again with the argv it was started with."""
    pid = int((lab.dir / "logs" / f"{node}-rr.pid").read_text())  # a process of this lab
    argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]]  # as started
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while lab.run(node, "ss", "-Htln", "sport", "= :179").stdout.strip():
        assert time.monotonic() < deadline, "the route reflector did not stop"
        time.sleep(0.05)
    lab.spawn(node, "rr", argv)
