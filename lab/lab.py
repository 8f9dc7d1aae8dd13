"""A running lab: namespaces named "<lab>-<node>", their links, and the processes in them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lab import netns
from lab.netns import LabError
from lab.topology import LAB_NAME_RE, Plan, Topology, plan

RUN_ROOT = Path(os.environ.get("NSG_LAB_RUN", "/run/nsg-lab"))
DEFAULT_NAME = "nsg"


def check_name(name: str) -> str:
    if not LAB_NAME_RE.match(name):
        raise LabError(f"lab name {name!r} must match {LAB_NAME_RE.pattern} (lowercase, digits, no '-')")
    return name


@dataclass
class Lab:
    name: str

    def __post_init__(self) -> None:
        check_name(self.name)

    @property
    def dir(self) -> Path:
        return RUN_ROOT / self.name

    def ns(self, node: str) -> str:
        return f"{self.name}-{node}"

    def namespaces(self) -> list[str]:
        return sorted(n for n in netns.list_namespaces() if n.startswith(self.name + "-"))

    def node_dir(self, node: str) -> Path:
        d = self.dir / "nodes" / node
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return d

    # --- up / down -------------------------------------------------------

    def up(self, topo: Topology) -> Plan:
        if self.namespaces():
            raise LabError(f"lab {self.name!r} is already up (run `nsg-lab down --name {self.name}` first)")
        p = plan(topo)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.dir / "logs").mkdir(exist_ok=True)
        try:
            self._build(p)
        except LabError:
            self.down()
            raise
        state = {"lab": self.name, "topology": topo.model_dump(mode="json"), "plan": p.to_json(),
                 "nodes": {n.name: n.kind for n in p.nodes}, "created": time.time()}
        (self.dir / "lab.json").write_text(json.dumps(state, indent=2))
        return p

    def _build(self, p: Plan) -> None:
        for node in p.nodes:
            ns = self.ns(node.name)
            netns.add_namespace(ns)
            if node.forwarding:
                netns.sysctl(ns, "net.ipv4.ip_forward", "1")
        for link in p.links:
            netns.add_veth(self.ns(link.a), link.a_if, self.ns(link.b), link.b_if,
                           f"{self.name}:{link.a}/{link.a_if}<->{link.b}/{link.b_if}")
        for node, br, ports in p.bridges:
            netns.add_bridge(self.ns(node), br, ports, f"{self.name}:{node}/{br}")
        for node, ifname, cidr in p.addresses:
            netns.add_address(self.ns(node), ifname, cidr)
        for node, ifname, mtu in p.mtus:
            netns.run("ip", "-n", self.ns(node), "link", "set", ifname, "mtu", str(mtu))
        for node, dst, via in p.routes:
            netns.add_route(self.ns(node), dst, via)
        for node, outside in p.masquerade:
            netns.masquerade(self.ns(node), outside)

    def down(self) -> list[str]:
        """Remove every namespace (and so every link) and process of this lab.

        Works from the namespace names alone, so also after a crash left no state file."""
        removed = self.namespaces()
        for ns in removed:
            netns.kill_namespace_processes(ns)
        for ns in removed:
            netns.delete_namespace(ns)
        left = self.namespaces()
        if left:
            raise LabError(f"could not remove namespaces {left}")
        shutil.rmtree(self.dir, ignore_errors=True)
        return removed

    # --- use -------------------------------------------------------------

    def state(self) -> dict:
        try:
            return json.loads((self.dir / "lab.json").read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def status(self) -> dict:
        st = self.state()
        kinds = st.get("nodes", {})
        nodes = {}
        for ns in self.namespaces():
            node = ns[len(self.name) + 1 :]
            addrs, links = [], []
            for link in netns.addresses(ns):
                if link["ifname"] == "lo" and not any(a["local"] != "127.0.0.1" and a["family"] == "inet"
                                                      for a in link.get("addr_info", [])):
                    continue
                links.append(link["ifname"])
                for a in link.get("addr_info", []):
                    if a["family"] == "inet" and a["local"] != "127.0.0.1":
                        addrs.append(f"{a['local']}/{a['prefixlen']}")
            nodes[node] = {"namespace": ns, "kind": kinds.get(node, "unknown"), "addresses": addrs,
                           "links": links, "pids": netns.pids(ns)}
        return {"lab": self.name, "up": bool(nodes), "topology": st.get("topology", {}).get("name"),
                "plan": st.get("plan"), "nodes": nodes}

    def _need(self, node: str) -> str:
        ns = self.ns(node)
        if ns not in netns.list_namespaces():
            raise LabError(f"lab {self.name!r} has no node {node!r}")
        return ns

    def exec_argv(self, node: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self._need(node), *argv]

    def run(self, node: str, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.exec_argv(node, list(argv)), capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise LabError(f"{node}: {' '.join(argv)} failed (exit {proc.returncode}): "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def spawn(self, node: str, tag: str, argv: list[str]) -> subprocess.Popen:
        """Start a background process in a node; its log is logs/<node>-<tag>.log."""
        ns = self._need(node)
        log = self.dir / "logs" / f"{node}-{tag}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        proc = netns.spawn(ns, argv, log, {"NSG_LAB": self.name, "NSG_LAB_NODE": node})
        (self.dir / "logs" / f"{node}-{tag}.pid").write_text(str(proc.pid))
        return proc

    def log_path(self, node: str, tag: str) -> Path:
        return self.dir / "logs" / f"{node}-{tag}.log"
