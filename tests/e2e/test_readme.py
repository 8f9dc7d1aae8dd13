"""The README's demo, run the way a first-time operator runs it: bring the demo lab up with the
Makefile's `make demo` command, then run every command of the README blocks marked
`<!-- readme-test ... -->` exactly as written (from the repository root, .venv/bin on PATH), and check
each one's exit status and output. Only the lab's name differs: a per-run name stands in for `demo`,
so a developer's demo and parallel runs never collide.

A README command this file has no check for fails the test (write the check with the command), and
so does a check no README command used (a block lost its marker or a command was dropped).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab.lab import RUN_ROOT, Lab
from tests.conftest import unique_name

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
MAKEFILE = REPO / "Makefile"
VENV_BIN = REPO / ".venv" / "bin"
MARK = "<!-- readme-test"
DEMO = "demo"  # the lab name the README and `make demo` use
COMMAND_TIMEOUT = 60


# --- the README's commands -------------------------------------------------------------------------


def marked_blocks(text: str) -> list[list[str]]:
    """The lines of each fenced block that directly follows a marker line."""
    blocks: list[list[str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip().startswith(MARK):
            i += 1
            assert i < len(lines) and lines[i].startswith("```"), f"README line {i}: a marker must precede a fence"
            body: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            assert i < len(lines), "README: unclosed fenced block after a readme-test marker"
            blocks.append(body)
        i += 1
    return blocks


def commands(block: list[str]) -> list[str]:
    """Shell commands of a block: continuation lines (ending in a backslash) joined, comments and
    blank lines left out."""
    out: list[str] = []
    pending = ""
    for line in block:
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        out.append(pending + line.strip())
        pending = ""
    assert not pending, f"README: a command ends in a continuation: {pending!r}"
    return out


def for_lab(cmd: str, name: str) -> str:
    """The README's command for the lab ``name`` instead of `demo`."""
    cmd = re.sub(r"--name demo\b", f"--name {name}", cmd)
    cmd = cmd.replace(f"/run/nsg-lab/{DEMO}/", f"{RUN_ROOT}/{name}/")
    rest = cmd.replace("nsg-lab demo ", "nsg-lab ")  # the subcommand, not the lab
    assert not re.search(rf"\b{DEMO}\b", rest), f"the command names the demo lab in a way not redirected: {cmd}"
    return cmd


def make_recipe(target: str) -> str:
    """The command of a one-line Makefile recipe, with $(VENV) spelled out."""
    lines = MAKEFILE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^{re.escape(target)}:", line))
    recipe = lines[start + 1]
    assert recipe.startswith("\t"), f"Makefile: {target} has no recipe"
    return recipe.strip().replace("$(VENV)", ".venv")


# --- checks, one per kind of README command --------------------------------------------------------


@dataclass
class Ran:
    cmd: str
    rc: int
    out: str
    err: str
    seconds: float

    def why(self) -> str:
        return f"{self.cmd}\nexit {self.rc}\n--- stdout\n{self.out[-3000:]}\n--- stderr\n{self.err[-2000:]}"


def _lab_status(r: Ran) -> None:
    kinds = {line.split()[0]: line.split()[1] for line in r.out.splitlines() if line.strip()}
    assert kinds.get("b1") == "gateway" and kinds.get("b2") == "gateway", r.why()
    assert kinds.get("ctl") == "controller" and kinds.get("inet") == "router", r.why()
    assert "198.19.0.11/24" in r.out and "198.19.0.21/24" in r.out, r.why()


def _host_ping(r: Ran) -> None:
    assert re.search(r"\b3 received, 0% packet loss", r.out), r.why()


def _nsg_status(r: Ran) -> None:
    lines = r.out.splitlines()
    assert lines and lines[0].startswith("OK: 2/2 tunnels up, channel connected, generation "), r.why()
    assert "bootstrap: done" in lines and any(x.startswith("channel: connected to wss://") for x in lines), r.why()
    assert any(x.startswith("ipsec: backend ") for x in lines) and "uplinks:" in lines, r.why()


def _show_evpn(r: Ran) -> None:
    assert re.search(r"^\s+\S+\s+Established$", r.out, re.M), r.why()  # the session to the reflector
    # b2's VTEP learned from the reflector (type 3), and a MAC behind it (type 2)
    assert re.search(r"^\s+\S+\s+3\s+100\s.*\s198\.19\.255\.2\s", r.out, re.M), r.why()
    assert re.search(r"^\s+\S+\s+2\s+100\s+([0-9a-f]{2}:){5}[0-9a-f]{2}\s.*\s198\.19\.255\.2\s", r.out, re.M), r.why()


WAN_PACKET = re.compile(r"^\S+ IP (\d+\.\d+\.\d+\.\d+)\.(\d+) > (\d+\.\d+\.\d+\.\d+)\.(\d+): (UDP|tcp)\b")


def _tcpdump(r: Ran) -> None:
    """Only IKE/ESP-in-UDP, DHCP and the channel's TLS on b1's WAN, and the ping went as ESP-in-UDP."""
    packets = [line for line in r.out.splitlines() if line.strip() and " ARP, " not in line]
    assert len(packets) == 20, r.why()
    allowed = {("UDP", 500), ("UDP", 4500), ("UDP", 67), ("UDP", 68), ("tcp", 8444)}
    esp = 0
    for line in packets:
        m = WAN_PACKET.match(line)
        assert m, f"not IPv4 UDP/TCP on the WAN: {line}\n{r.why()}"
        proto, ports = m[5], {int(m[2]), int(m[4])}
        assert any((proto, p) in allowed for p in ports), f"this crossed the WAN: {line}\n{r.why()}"
        esp += proto == "UDP" and ports == {4500}
    assert esp >= 10, r.why()


def _wan_probe(r: Ran) -> None:
    assert "2 packets transmitted, 0 received" in r.out, r.why()
    assert r.out.rstrip().endswith("no answer: b1's guard dropped it"), r.why()


def _guard_table(r: Ran) -> None:
    assert "table inet nsg_guard" in r.out and 'iifname "wan0" jump uplink' in r.out, r.why()
    assert re.search(r"udp dport \{ 500, 4500 \} accept", r.out), r.why()
    m = re.search(r'counter packets (\d+) bytes \d+ drop comment "guard\.uplink"', r.out)
    assert m and int(m[1]) >= 2, f"the probe above was not counted\n{r.why()}"
    assert re.search(r'drop comment "guard\.overlay"', r.out), r.why()


def _gateway_list(r: Ran) -> None:
    rows = {line.split()[0]: line.split() for line in r.out.splitlines()[1:] if line.strip()}
    assert r.out.startswith("NAME"), r.why()
    assert set(rows) == {"b1", "b2", "hub"}, r.why()
    assert rows["hub"][1] == "hub" and rows["b2"][-1] == "yes", r.why()  # role; b2 behind NAT


def _gateway_status(r: Ran) -> None:
    lines = r.out.splitlines()
    assert lines and lines[0] == "b1: OK", r.why()
    assert "Channel" in lines and any(re.match(r"^\s+connected\s+yes$", x) for x in lines), r.why()


def _openapi(r: Ran) -> None:
    lines = r.out.splitlines()
    assert lines and re.match(r"^OpenAPI 3\.\d+\.\d+$", lines[0]), r.why()
    assert "/api/v1/enterprises" in lines and "/api/v1/gateways/{gateway}/status" in lines, r.why()


CHECKS: list[tuple[str, Callable[[Ran], None]]] = [
    (r"^nsg-lab status --name \S+$", _lab_status),
    (r"^nsg-lab exec --name \S+ b1-h1 -- ping -c3 198\.19\.0\.21$", _host_ping),
    (r"-- nsg status --state-dir \S+/b1/state$", _nsg_status),
    (r"-- nsg show evpn --state-dir \S+/b1/state$", _show_evpn),
    (r"-- tcpdump -nqi b1-w0 -c 20; wait$", _tcpdump),
    (r"inet -- ping -c2 -W1 198\.18\.1\.2 \|\|", _wan_probe),
    (r"b1 -- nft list table inet nsg_guard$", _guard_table),
    (r"ctl -- nsg-controller gateway list acme --token-file \S+$", _gateway_list),
    (r"ctl -- nsg-controller gateway status b1 --token-file \S+$", _gateway_status),
    (r"curl -sf -H @- http://127\.0\.0\.1:8443/api/v1/openapi\.json", _openapi),
]


def check_for(cmd: str) -> Callable[[Ran], None]:
    found = [fn for pattern, fn in CHECKS if re.search(pattern, cmd)]
    assert len(found) == 1, (f"README command {cmd!r} matches {len(found)} checks in tests/e2e/test_readme.py: "
                             "give each README command one check")
    return found[0]


# --- running them ----------------------------------------------------------------------------------


def operator_env(home: Path) -> dict[str, str]:
    """A shell like the README's reader has after `. .venv/bin/activate`, with no controller login of
    its own (a kept token or URL would change what nsg-controller talks to)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NSG_CONTROLLER_") and k not in ("NSG_LAB", "NSG_LAB_NODE")}  # NSG_LAB_RUN stays
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    env["VIRTUAL_ENV"] = str(VENV_BIN.parent)
    env["XDG_CONFIG_HOME"] = str(home)
    return env


def run(cmd: str, env: dict[str, str], timeout: float = COMMAND_TIMEOUT) -> Ran:
    t0 = time.monotonic()
    p = subprocess.run(["bash", "-c", cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
                       check=False)
    return Ran(cmd, p.returncode, p.stdout, p.stderr, time.monotonic() - t0)


def test_readme_parsing_sees_markers_blocks_and_continuations():
    """The extraction itself, on a made-up README (it must be able to find nothing, and to fail)."""
    text = ("intro\n<!-- readme-test -->\n```sh\nnsg-lab status --name demo\n# a comment\n\n"
            "a | \\\n    b\n```\n```sh\nnot marked\n```\n")
    (block,) = marked_blocks(text)
    assert commands(block) == ["nsg-lab status --name demo", "a | b"]
    assert marked_blocks("```sh\nx\n```\n") == []
    assert for_lab("nsg-lab exec --name demo b1 -- nsg status --state-dir /run/nsg-lab/demo/nodes/b1/state",
                   "r1") == f"nsg-lab exec --name r1 b1 -- nsg status --state-dir {RUN_ROOT}/r1/nodes/b1/state"
    try:
        for_lab("ip netns exec demo-b1 true", "r1")
    except AssertionError:
        pass
    else:
        raise AssertionError("a command naming the demo's namespaces directly went through")
    try:
        check_for("rm -rf /")
    except AssertionError:
        pass
    else:
        raise AssertionError("a command without a check went through")


def test_readme_demo_commands_work_as_written(tmp_path):
    text = README.read_text()
    assert "make demo" in text and "make demo-down" in text and ". .venv/bin/activate" in text
    assert (VENV_BIN / "activate").exists() and (VENV_BIN / "nsg-lab").exists()
    cmds = [c for block in marked_blocks(text) for c in commands(block)]
    assert len(cmds) >= len(CHECKS), f"the README's marked blocks hold {len(cmds)} commands: {cmds}"
    checks = [check_for(c) for c in cmds]  # every command has its check before anything runs
    unused = {fn.__name__ for _, fn in CHECKS} - {fn.__name__ for fn in checks}
    assert not unused, f"no README command left for these checks: {sorted(unused)}"

    up, down = make_recipe("demo"), make_recipe("demo-down")
    assert up == ".venv/bin/nsg-lab demo --name demo", up
    name = unique_name("r")
    env = operator_env(tmp_path)
    ran: list[Ran] = []
    t0 = time.monotonic()
    try:
        r = run(for_lab(up, name), env, timeout=120)
        assert r.rc == 0 and "FAILED" not in r.out, r.why()
        print(f"demo up in {r.seconds:.1f}s")
        for cmd, check in zip(cmds, checks, strict=True):
            r = run(for_lab(cmd, name), env)
            ran.append(r)
            assert r.rc == 0, r.why()
            check(r)
    finally:
        for r in ran:
            print(f"{r.seconds:5.1f}s exit {r.rc}: {r.cmd}")
        r = run(for_lab(down, name), env)
        if Lab(name).namespaces():
            Lab(name).down()
        print(f"whole run {time.monotonic() - t0:.1f}s")
    assert r.rc == 0 and f"lab {name}: removed" in r.out, r.why()
    # and `nsg-lab status` says the lab is gone, with exit status 1
    gone = run(f"nsg-lab status --name {shlex.quote(name)}", env)
    assert gone.rc == 1 and "not up" in gone.err, gone.why()
