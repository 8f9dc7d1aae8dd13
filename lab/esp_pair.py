"""Two namespaces joined by a veth, each running the userspace ESP engine with manual keys.

Shared by tests/netns/test_userspace_engine.py and bench/esp.py.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab import netns

WAN = ("198.18.60.1", "198.18.60.2")
INNER = ("198.19.250.1", "198.19.250.2")
SPIS = (0x1001, 0x2001)


@dataclass
class EspPair:
    prefix: str
    workdir: Path
    ns: tuple[str, str] = ("", "")
    procs: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ns = (f"{self.prefix}a", f"{self.prefix}b")

    def up(self, engine: bool = True) -> None:
        a, b = self.ns
        for ns in self.ns:
            netns.add_namespace(ns)
        netns.run("ip", "link", "add", "name", "wan0", "netns", a, "type", "veth", "peer", "name", "wan0", "netns", b)
        for ns, wan, inner in zip(self.ns, WAN, INNER, strict=True):
            netns.run("ip", "-n", ns, "addr", "add", f"{wan}/24", "dev", "wan0")
            netns.run("ip", "-n", ns, "link", "set", "wan0", "up")
            netns.run("ip", "-n", ns, "addr", "add", f"{inner}/32", "dev", "lo")
        if engine:
            keys = [(secrets.token_hex(16), secrets.token_hex(4)) for _ in range(2)]
            for i in (0, 1):
                self._start(i, keys[i], keys[1 - i])

    def _start(self, i: int, out_key: tuple[str, str], in_key: tuple[str, str]) -> None:
        ns, me, peer = self.ns[i], INNER[i], INNER[1 - i]
        spec = {"tun": "esp0", "listen": [WAN[i]], "counters": str(self.counters_path(i)),
                "sas": [{"peer": peer, "endpoint": WAN[1 - i], "out_spi": SPIS[i], "in_spi": SPIS[1 - i],
                         "out_key": out_key[0], "out_salt": out_key[1], "in_key": in_key[0], "in_salt": in_key[1]}]}
        path = self.workdir / f"{ns}.spec"
        path.write_text(json.dumps(spec))
        p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "ipsec.engine.manual", str(path)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.procs.append(p)
        line = p.stdout.readline().strip()
        if line != "engine up":
            raise netns.LabError(f"engine in {ns} did not start: {line} {p.stdout.read()}")
        netns.run("ip", "-n", ns, "link", "set", "esp0", "mtu", "1438", "up")
        netns.run("ip", "-n", ns, "route", "add", f"{peer}/32", "dev", "esp0", "src", me)

    def counters_path(self, i: int) -> Path:
        return self.workdir / f"{self.ns[i]}.counters.json"

    def counters(self, i: int) -> dict:
        path = self.counters_path(i)
        path.unlink(missing_ok=True)
        self.procs[i].send_signal(signal.SIGUSR1)
        for _ in range(100):
            if path.exists():
                return json.loads(path.read_text())
            time.sleep(0.05)
        raise netns.LabError("engine did not write its counters")

    def down(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for ns in self.ns:
            netns.kill_namespace_processes(ns)
            netns.delete_namespace(ns)
