"""The lab's one OS adapter: namespaces, veths, addresses, routes, nftables, processes.

Commands are argument vectors (never shell strings); state is read back as JSON
(`ip -j`), never scraped from human output.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path


class LabError(RuntimeError):
    pass


def run(*argv: str, input: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()} (exit {proc.returncode})")
    return proc.stdout


def list_namespaces() -> list[str]:
    out = run("ip", "-j", "netns", "list", check=False).strip()
    if not out:
        return []
    return [n["name"] for n in json.loads(out)]


def add_namespace(ns: str) -> None:
    run("ip", "netns", "add", ns)
    run("ip", "-n", ns, "link", "set", "lo", "up")
    # No IPv6 in the lab: captures then hold only what the test sent.
    sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")
    sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")


def sysctl(ns: str, key: str, value: str) -> None:
    path = f"/proc/sys/{key.replace('.', '/')}"
    run("ip", "netns", "exec", ns, "sh", "-c", 'echo "$1" > "$2"', "sh", value, path)


def add_veth(ns_a: str, if_a: str, ns_b: str, if_b: str, alias: str) -> None:
    run("ip", "link", "add", "name", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)
    for ns, ifname in ((ns_a, if_a), (ns_b, if_b)):
        run("ip", "-n", ns, "link", "set", ifname, "alias", alias, "up")


def add_bridge(ns: str, name: str, ports: tuple[str, ...], alias: str) -> None:
    run("ip", "-n", ns, "link", "add", "name", name, "type", "bridge")
    run("ip", "-n", ns, "link", "set", name, "alias", alias, "up")
    for p in ports:
        run("ip", "-n", ns, "link", "set", p, "master", name)


def add_address(ns: str, ifname: str, cidr: str) -> None:
    run("ip", "-n", ns, "addr", "add", cidr, "dev", ifname)


def add_route(ns: str, dst: str, via: str) -> None:
    run("ip", "-n", ns, "route", "add", dst, "via", via)


def masquerade(ns: str, outside: str) -> None:
    """Source NAT everything leaving ``outside`` (nft JSON, applied atomically)."""
    doc = {"nftables": [
        {"add": {"table": {"family": "ip", "name": "labnat"}}},
        {"add": {"chain": {"family": "ip", "table": "labnat", "name": "post", "type": "nat",
                           "hook": "postrouting", "prio": 100, "policy": "accept"}}},
        {"add": {"rule": {"family": "ip", "table": "labnat", "chain": "post", "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": outside}},
            {"masquerade": None},
        ]}}},
    ]}
    run("ip", "netns", "exec", ns, "nft", "-j", "-f", "-", input=json.dumps(doc))


def addresses(ns: str) -> list[dict]:
    out = run("ip", "-n", ns, "-j", "addr", "show", check=False).strip()
    return json.loads(out) if out else []


def pids(ns: str) -> list[int]:
    out = run("ip", "netns", "pids", ns, check=False)
    return [int(p) for p in out.split()]


def kill_namespace_processes(ns: str, grace: float = 3.0) -> None:
    """Every process in a lab namespace was started by the lab (or a test using it). Listed again
    after each round: a supervisor dying slowly may start a child (a VM, say) after the first list."""
    for _ in range(5):
        victims = pids(ns)
        if not victims:
            return
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while victims and time.monotonic() < deadline:
            victims = [p for p in victims if _alive(p)]
            time.sleep(0.05)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def delete_namespace(ns: str) -> None:
    run("ip", "netns", "del", ns, check=False)


def spawn(ns: str, argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, **env},
        )
