"""Run real FRR daemons (zebra + bgpd) inside a network namespace, as a BGP EVPN peer for tests.

What FRR needs on the machine: the Debian 12 ``frr`` package (daemons in /usr/lib/frr, ``vtysh``, the
``frr`` user), in deps/apt-packages.txt; ``missing()`` says what is absent and ``Frr.start`` refuses without it.
Init scripts are not used; every instance gets its own directory holding its config, pid files, the
zebra API socket (``-z``) and the vty sockets (``--vty_socket``), so several instances can run side
by side in different namespaces. The directory is ``chown -R frr:frr`` because the daemons drop to
the ``frr`` user.

The daemons daemonize (``-d``): the process ``ip netns exec`` started is gone once the daemon runs,
so each daemon is tracked by the pid from its pid file (``-i``) and stopped by that pid.

Everything read back comes from FRR's JSON output (``show bgp l2vpn evpn json``, ``show bgp summary
json``, ``show evpn mac vni all json`` ...), never from the human-readable tables.

Kernel side of a VTEP (``make_vtep``): bridge ``br100`` + ``vx100`` (``type vxlan id 100 local <vtep>
dstport 4789 nolearning``) enslaved with learning off. With ``advertise-all-vni`` zebra tells bgpd
about the VNI and bgpd originates a type-3 (IMET) route for it; local MACs learned on the bridge's
other ports become type-2 MAC routes, neighbor entries on the bridge (it carries an address) type-2
MAC+IP routes, and ``advertise-svi-ip`` adds the bridge's own MAC+IP.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FRR_DIR = Path("/usr/lib/frr")
ZEBRA = FRR_DIR / "zebra"
BGPD = FRR_DIR / "bgpd"
VTYSH = "vtysh"
_SUN_PATH_MAX = 107


class FrrError(RuntimeError):
    """FRR did not start, refused a command, or did not reach the awaited state."""


@dataclass(frozen=True)
class Neighbor:
    """One BGP neighbor, activated for l2vpn evpn (and nothing else)."""

    address: str
    remote_as: int
    rr_client: bool = False
    keepalive: int = 3
    hold: int = 9
    connect_retry: int = 1
    update_source: str | None = None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def _run(argv: Sequence[str], timeout: float = 20.0, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise FrrError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


class Frr:
    """zebra + bgpd in namespace ``netns``, files under ``workdir``; ``router_id`` is also the source address."""

    def __init__(self, netns: str, workdir: Path, router_id: str, asn: int,
                 neighbors: Sequence[Neighbor] = (), *, name: str = "frr", advertise_all_vni: bool = True,
                 advertise_svi_ip: bool = False, extra_bgp: Sequence[str] = (), extra_evpn: Sequence[str] = (),
                 debug: bool = False, start_timeout: float = 10.0) -> None:
        self.netns = netns
        self.workdir = Path(workdir).absolute()
        self.router_id = router_id
        self.asn = asn
        self.neighbors: list[Neighbor] = list(neighbors)
        self.name = name
        self.advertise_all_vni = advertise_all_vni
        self.advertise_svi_ip = advertise_svi_ip
        self.extra_bgp = tuple(extra_bgp)
        self.extra_evpn = tuple(extra_evpn)
        self.debug = debug
        self.start_timeout = start_timeout
        # The daemons run as user frr, which cannot enter a root-only tmp_path: they get their own
        # directory under /tmp (made at start); stop() copies config and logs back into ``workdir``.
        self.rundir: Path | None = None
        self.pids: dict[str, int] = {}

    # -- paths -----------------------------------------------------------------------------------

    @property
    def dir(self) -> Path:
        """Where the daemons' files live while running (``workdir`` before start and after stop)."""
        return self.rundir or self.workdir

    @property
    def zserv_path(self) -> Path:
        return self.dir / "zserv.api"

    def conf_path(self, daemon: str) -> Path:
        return self.dir / f"{daemon}.conf"

    def pid_path(self, daemon: str) -> Path:
        return self.dir / f"{daemon}.pid"

    def log_path(self, daemon: str) -> Path:
        return self.dir / f"{daemon}.log"

    # -- configuration files ---------------------------------------------------------------------

    def zebra_conf(self) -> str:
        lines = ["! written by tests/interop/frr.py", f"hostname {self.name}-zebra",
                 f"log file {self.log_path('zebra')} debugging" if self.debug else
                 f"log file {self.log_path('zebra')} informational"]
        if self.debug:
            lines += ["debug zebra vxlan", "debug zebra kernel"]
        return "\n".join([*lines, "!", ""])

    def bgpd_conf(self) -> str:
        level = "debugging" if self.debug else "informational"
        lines = ["! written by tests/interop/frr.py", f"hostname {self.name}-bgpd",
                 f"log file {self.log_path('bgpd')} {level}"]
        if self.debug:
            lines += ["debug bgp neighbor-events", "debug bgp updates", "debug bgp zebra"]
        lines += ["!", f"router bgp {self.asn}", f" bgp router-id {self.router_id}", " no bgp default ipv4-unicast",
                  " no bgp ebgp-requires-policy", " no bgp network import-check"]
        for n in self.neighbors:
            lines += [f" neighbor {n.address} remote-as {n.remote_as}",
                      f" neighbor {n.address} timers {n.keepalive} {n.hold}",
                      f" neighbor {n.address} timers connect {n.connect_retry}"]
            if n.update_source:
                lines.append(f" neighbor {n.address} update-source {n.update_source}")
        lines += [f" {x}" for x in self.extra_bgp]
        lines += [" !", " address-family l2vpn evpn"]
        for n in self.neighbors:
            lines.append(f"  neighbor {n.address} activate")
            if n.rr_client:
                lines.append(f"  neighbor {n.address} route-reflector-client")
        if self.advertise_all_vni:
            lines.append("  advertise-all-vni")
        if self.advertise_svi_ip:
            lines.append("  advertise-svi-ip")
        lines += [f"  {x}" for x in self.extra_evpn]
        lines += [" exit-address-family", "exit", "!", ""]
        return "\n".join(lines)

    def write_config(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf_path("zebra").write_text(self.zebra_conf())
        self.conf_path("bgpd").write_text(self.bgpd_conf())
        if self.rundir:
            _run(["chown", "-R", "frr:frr", str(self.rundir)])

    # -- lifecycle -------------------------------------------------------------------------------

    def running(self) -> bool:
        return bool(self.pids) and all(_alive(p) for p in self.pids.values())

    def start(self) -> Frr:
        if self.pids:
            raise FrrError(f"{self.name}: already started")
        absent = missing()
        if absent:
            raise FrrError(f"{self.name}: cannot run FRR here: " + "; ".join(absent))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.rundir = Path(tempfile.mkdtemp(prefix="nsg-frr-"))
        self.rundir.chmod(0o750)
        if len(str(self.rundir / "zserv.api")) > _SUN_PATH_MAX:
            raise ValueError(f"path too long for unix sockets: {self.rundir}")
        common = ["-d", "-u", "frr", "-g", "frr", "-z", str(self.zserv_path), "--vty_socket", str(self.rundir)]
        try:
            self.write_config()
            self._start_daemon("zebra", [str(ZEBRA), *common, "-f", str(self.conf_path("zebra")),
                                         "-i", str(self.pid_path("zebra"))], self.zserv_path)
            self._start_daemon("bgpd", [str(BGPD), *common, "-f", str(self.conf_path("bgpd")),
                                        "-i", str(self.pid_path("bgpd")), "-p", "179"], self.dir / "bgpd.vty")
            self._wait(lambda: self.vtysh_json("show bgp summary json") is not None, "bgpd answering vtysh")
        except BaseException:
            self.stop()
            raise
        return self

    def _start_daemon(self, daemon: str, argv: list[str], socket_path: Path) -> None:
        out = self.dir / f"{daemon}.out"
        with open(out, "wb") as f:
            proc = subprocess.run(["ip", "netns", "exec", self.netns, *argv], stdin=subprocess.DEVNULL, stdout=f,
                                  stderr=subprocess.STDOUT, timeout=self.start_timeout, check=False)
        if proc.returncode != 0:
            raise FrrError(f"{self.name}: {daemon} failed to start (exit {proc.returncode})\n" + self.log_tail())
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            pid_file = self.pid_path(daemon)
            if pid_file.exists() and daemon not in self.pids:
                text = pid_file.read_text().strip()
                if text.isdigit():
                    self.pids[daemon] = int(text)
            if daemon in self.pids:
                if not _alive(self.pids[daemon]):
                    raise FrrError(f"{self.name}: {daemon} exited\n" + self.log_tail())
                if socket_path.exists():
                    return
            time.sleep(0.02)
        raise FrrError(f"{self.name}: {daemon} not ready after {self.start_timeout}s\n" + self.log_tail())

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM bgpd then zebra by the pids from their pid files; SIGKILL what lingers."""
        # a daemon whose pid file appeared after start() gave up is still ours
        for daemon in ("zebra", "bgpd"):
            pid_file = self.pid_path(daemon)
            if daemon not in self.pids and pid_file.exists():
                text = pid_file.read_text().strip()
                if text.isdigit() and _alive(int(text)) and self._in_our_netns(int(text)):
                    self.pids[daemon] = int(text)
        for daemon in ("bgpd", "zebra"):
            pid = self.pids.pop(daemon, None)
            if pid is None or not _alive(pid):
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        rundir, self.rundir = self.rundir, None
        if rundir is not None and not self.pids:
            for f in rundir.iterdir():
                if f.suffix in (".conf", ".log", ".out") and f.is_file():
                    with contextlib.suppress(OSError):
                        shutil.copyfile(f, self.workdir / f.name)
            shutil.rmtree(rundir, ignore_errors=True)

    def _in_our_netns(self, pid: int) -> bool:
        try:
            return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{self.netns}").st_ino
        except OSError:
            return False

    def __enter__(self) -> Frr:
        return self.start() if not self.pids else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for name in ("zebra.out", "bgpd.out", "zebra.log", "bgpd.log"):
            path = self.dir / name
            if path.exists():
                text += f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text

    # -- vtysh -----------------------------------------------------------------------------------

    def vtysh(self, *commands: str, check: bool = True, timeout: float = 15.0) -> str:
        """Run vtysh commands (each one ``-c``) against this instance; returns stdout."""
        argv = [VTYSH, "--vty_socket", str(self.dir)]
        for c in commands:
            argv += ["-c", c]
        proc = _run(argv, timeout=timeout, check=False)
        if check and (proc.returncode != 0 or "% " in proc.stdout[:2]):
            raise FrrError(f"{self.name}: vtysh {commands}: exit {proc.returncode}: {proc.stdout}{proc.stderr}")
        return proc.stdout

    def vtysh_json(self, command: str) -> Any:
        """One ``... json`` show command parsed; None when bgpd/zebra did not answer with JSON."""
        out = self.vtysh(command, check=False)
        try:
            return json.loads(out)
        except json.JSONDecodeError:
            return None

    def configure(self, *lines: str) -> str:
        """Apply config lines in ``configure terminal`` (e.g. "router bgp 65000", "neighbor ... shutdown")."""
        return self.vtysh("configure terminal", *lines)

    # -- state -----------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """``show bgp summary json``: {"l2VpnEvpn": {"peers": {addr: {"state": ...}}, ...}, ...}."""
        return self.vtysh_json("show bgp summary json") or {}

    def neighbor_json(self, address: str | None = None) -> dict[str, Any]:
        """``show bgp neighbors [X] json``: {addr: {"bgpState": "Established", ...}}."""
        return self.vtysh_json(f"show bgp neighbors {address or ''} json".replace("  ", " ")) or {}

    def peer_state(self, address: str) -> str | None:
        return self.neighbor_json(address).get(address, {}).get("bgpState")

    def evpn_json(self) -> dict[str, Any]:
        """``show bgp l2vpn evpn json``: RD -> prefix -> {"paths": [...]}, plus scalar keys."""
        return self.vtysh_json("show bgp l2vpn evpn json") or {}

    def evpn_routes(self) -> list[dict[str, Any]]:
        """``show bgp l2vpn evpn json`` flattened: one dict per path with "rd" and "prefix" added.

        Paths carry FRR's fields, e.g. routeType (2/3), mac, ip, ethTag, nexthops[].ip, extendedCommunity.string
        ("RT:65000:100 ET:8"), valid, bestpath, peerId ("(unspec)" for locally originated).
        """
        routes: list[dict[str, Any]] = []
        for rd, prefixes in self.evpn_json().items():
            if not isinstance(prefixes, dict):
                continue
            for prefix, entry in prefixes.items():
                if not isinstance(entry, dict) or "paths" not in entry:
                    continue
                for path in entry["paths"]:
                    for p in path if isinstance(path, list) else [path]:
                        routes.append({"rd": rd, "prefix": prefix, **p})
        return routes

    def evpn_vnis(self) -> dict[str, Any]:
        """``show bgp l2vpn evpn vni json``: the VNIs bgpd knows (from zebra with advertise-all-vni)."""
        return self.vtysh_json("show bgp l2vpn evpn vni json") or {}

    def evpn_macs(self) -> dict[str, Any]:
        """``show evpn mac vni all json`` (zebra): {vni: {"macs": {mac: {"type": "local"|"remote", ...}}}}."""
        return self.vtysh_json("show evpn mac vni all json") or {}

    def evpn_vni_json(self) -> dict[str, Any]:
        """``show evpn vni json`` (zebra): VNIs zebra found in the kernel."""
        return self.vtysh_json("show evpn vni json") or {}

    # -- waiting ---------------------------------------------------------------------------------

    def _wait(self, predicate: Callable[[], Any], what: str, timeout: float | None = None) -> Any:
        deadline = time.monotonic() + (timeout if timeout is not None else self.start_timeout)
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                raise FrrError(f"{self.name}: timed out waiting for {what}\n" + self.log_tail())
            time.sleep(0.1)

    def wait_for(self, predicate: Callable[[Frr], Any], timeout: float = 15.0, what: str = "condition") -> Any:
        return self._wait(lambda: predicate(self), what, timeout)

    def wait_established(self, address: str, timeout: float = 20.0) -> None:
        self._wait(lambda: self.peer_state(address) == "Established", f"{address} Established", timeout)

    def wait_route(self, match: Callable[[dict[str, Any]], bool], timeout: float = 15.0,
                   what: str = "EVPN route") -> dict[str, Any]:
        """Wait until a path in ``show bgp l2vpn evpn json`` satisfies ``match``; returns it."""
        return self._wait(lambda: next((r for r in self.evpn_routes() if match(r)), None), what, timeout)


def make_vtep(netns: str, vtep: str, *, vni: int = 100, bridge: str | None = None, vxlan: str | None = None,
              bridge_address: str | None = None, dstport: int = 4789) -> tuple[str, str]:
    """Kernel VTEP in ``netns``: bridge ``br<vni>`` + ``vx<vni>`` (nolearning, learning off); returns names.

    ``bridge_address`` ("198.51.100.1/24") goes on the bridge, so neighbor entries there give MAC+IP routes.
    """
    br = bridge or f"br{vni}"
    vx = vxlan or f"vx{vni}"
    ip = ["ip", "-n", netns]
    _run([*ip, "link", "add", br, "type", "bridge"])
    # no STP, no forward delay: ports forward at once
    _run([*ip, "link", "set", br, "type", "bridge", "stp_state", "0", "forward_delay", "0"])
    _run([*ip, "link", "add", vx, "type", "vxlan", "id", str(vni), "local", vtep, "dstport", str(dstport),
          "nolearning"])
    _run([*ip, "link", "set", vx, "master", br])
    _run(["ip", "netns", "exec", netns, "bridge", "link", "set", "dev", vx, "learning", "off"])
    _run([*ip, "link", "set", vx, "up"])
    _run([*ip, "link", "set", br, "up"])
    if bridge_address:
        _run([*ip, "addr", "add", bridge_address, "dev", br])
    return br, vx


def missing() -> list[str]:
    """What the FRR harness lacks here (each line names the Debian package); empty when all is there."""
    out = [f"FRR {p} missing (Debian package frr)" for p in (ZEBRA, BGPD) if not os.access(p, os.X_OK)]
    if shutil.which(VTYSH) is None:
        out.append(f"FRR {VTYSH} not found (Debian package frr)")
    try:
        pwd.getpwnam("frr")
        grp.getgrnam("frr")
    except KeyError:
        out.append("user/group frr missing (the frr package's postinst creates them)")
    return out


def available() -> bool:
    return not missing()


# ---------------------------------------------------------------------------------------------
# Two namespaces joined by a veth (plus an optional host namespace on the first one's bridge)
# ---------------------------------------------------------------------------------------------

_LAB_NETS = ("198.18.0.0/15", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")


@dataclass(frozen=True)
class BgpNet:
    """``ns[i]`` with veth ``ifname[i]`` carrying ``addr[i]``/24; ``host_ns`` (if made) hangs off ``ns[0]``."""

    prefix: str
    ns: tuple[str, str]
    ifname: tuple[str, str]
    addr: tuple[str, str]
    host_ns: str | None = None

    def exec(self, ns: str, *argv: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                              timeout=timeout, check=False)

    def add_host(self, bridge: str, address: str, port: str = "h0") -> str:
        """Veth from ``bridge`` in ``ns[0]`` (port ``<port>p``) to ``host_ns`` (``port`` with ``address``/24)."""
        if not self.host_ns:
            raise ValueError("bgp_pair(host=True) makes the host namespace")
        _run(["ip", "link", "add", "name", port + "p", "netns", self.ns[0], "type", "veth", "peer", "name", port,
              "netns", self.host_ns])
        _run(["ip", "-n", self.ns[0], "link", "set", port + "p", "master", bridge])
        _run(["ip", "-n", self.ns[0], "link", "set", port + "p", "up"])
        _run(["ip", "-n", self.host_ns, "addr", "add", address, "dev", port])
        _run(["ip", "-n", self.host_ns, "link", "set", port, "up"])
        return port


@contextlib.contextmanager
def bgp_pair(prefix: str | None = None, addr: tuple[str, str] = ("198.18.70.1", "198.18.70.2"),
             host: bool = False) -> Any:
    """Make the namespaces, yield a BgpNet, and always remove them with anything still running inside."""
    import ipaddress
    import secrets

    from lab import netns

    nets = [ipaddress.ip_network(n) for n in _LAB_NETS]
    for a in addr:
        if not any(ipaddress.ip_address(a) in n for n in nets):
            raise ValueError(f"{a} is outside the lab ranges")
    prefix = prefix or f"bgp{secrets.token_hex(3)}-"
    net = BgpNet(prefix, (prefix + "a", prefix + "b"), ("bgp-a", "bgp-b"), addr, prefix + "h" if host else None)
    made: list[str] = []
    try:
        for ns in (*net.ns, *([net.host_ns] if net.host_ns else [])):
            netns.add_namespace(ns)
            made.append(ns)
        netns.add_veth(net.ns[0], net.ifname[0], net.ns[1], net.ifname[1], alias=prefix + "bgp")
        for i in (0, 1):
            netns.add_address(net.ns[i], net.ifname[i], f"{addr[i]}/24")
        yield net
    finally:
        for ns in made:
            # only processes this harness (or the test using it) started live in these namespaces
            netns.kill_namespace_processes(ns)
            netns.delete_namespace(ns)
