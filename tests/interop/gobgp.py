"""Run a real GoBGP (gobgpd) inside a network namespace, as a BGP EVPN peer / route injector for tests.

What it needs: the Debian 12 ``gobgpd`` package (``gobgpd`` and the ``gobgp`` CLI), in deps/apt-packages.txt;
``missing()`` says what is absent and ``GoBgp.start`` refuses without it. gobgpd reads
``WORKDIR/gobgpd.toml`` (global AS/router-id, neighbors with the l2vpn-evpn afi-safi, timers 3/9) and
serves its gRPC API on ``127.0.0.1:<api_port>`` inside the namespace (so ``lo`` must be up, and the
CLI runs in the namespace too). pprof is disabled so several instances never share a port.

``ip netns exec`` execs gobgpd, so the Popen pid *is* gobgpd's pid and it is stopped by that pid.

Routes are injected with the CLI exactly as PEERS.md shows:

    gobgp global rib -a evpn add macadv <mac> <ip> etag 0 label <vni> rd <rd> rt <asn:vni> encap vxlan nexthop <nh>
    gobgp global rib -a evpn add multicast <vtep> etag 0 rd <rd> rt <rt> encap vxlan pmsi ingress-repl <vni> <vtep> \\
        nexthop <nh>

and read back as JSON (``gobgp -j global rib -a evpn``, ``gobgp -j neighbor``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.interop.procs import stop_process

GOBGPD = "gobgpd"
GOBGP = "gobgp"
DEFAULT_API_PORT = 50051


class GoBgpError(RuntimeError):
    """gobgpd did not start, the CLI refused a command, or a state was not reached in time."""


@dataclass(frozen=True)
class GoNeighbor:
    address: str
    peer_as: int
    rr_client: bool = False
    keepalive: int = 3
    hold: int = 9
    connect_retry: int = 1
    passive: bool = False
    local_address: str | None = None  # the session's source address (several speakers in one namespace)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string


class GoBgp:
    """gobgpd in ``netns``; ``neighbors`` are GoNeighbor or (address, peer_as) pairs. ``listen_port=-1``:
    gobgpd does not listen (it only connects out): a second instance in the same namespace."""

    def __init__(self, netns: str, workdir: Path, router_id: str, asn: int,
                 neighbors: Sequence[GoNeighbor | tuple[str, int]] = (), *, api_port: int = DEFAULT_API_PORT,
                 listen_port: int = 179, local_addresses: Sequence[str] = (), name: str = "gobgp",
                 log_level: str = "info", start_timeout: float = 10.0) -> None:
        self.netns = netns
        self.workdir = Path(workdir).absolute()
        self.router_id = router_id
        self.asn = asn
        self.neighbors = [n if isinstance(n, GoNeighbor) else GoNeighbor(n[0], n[1]) for n in neighbors]
        self.api_port = api_port
        self.listen_port = listen_port
        self.local_addresses = tuple(local_addresses)
        self.name = name
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.conf_path = self.workdir / "gobgpd.toml"
        self.log_path = self.workdir / "gobgpd.log"
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    # -- configuration ---------------------------------------------------------------------------

    def toml(self) -> str:
        glob: dict[str, Any] = {"as": self.asn, "router-id": self.router_id, "port": self.listen_port}
        if self.local_addresses:
            glob["local-address-list"] = list(self.local_addresses)
        lines = ["# written by tests/interop/gobgp.py", "[global.config]"]
        lines += [f"  {k} = {_toml_value(v)}" for k, v in glob.items()]
        for n in self.neighbors:
            lines += ["", "[[neighbors]]", "  [neighbors.config]",
                      f"    neighbor-address = {_toml_value(n.address)}", f"    peer-as = {n.peer_as}",
                      "  [neighbors.timers.config]", f"    hold-time = {n.hold}",
                      f"    keepalive-interval = {n.keepalive}", f"    connect-retry = {n.connect_retry}"]
            if n.passive or n.local_address:
                lines += ["  [neighbors.transport.config]"]
                if n.passive:
                    lines += ["    passive-mode = true"]
                if n.local_address:
                    lines += [f"    local-address = {_toml_value(n.local_address)}"]
            if n.rr_client:
                lines += ["  [neighbors.route-reflector.config]", "    route-reflector-client = true",
                          f"    route-reflector-cluster-id = {_toml_value(self.router_id)}"]
            lines += ["  [[neighbors.afi-safis]]", "    [neighbors.afi-safis.config]",
                      '      afi-safi-name = "l2vpn-evpn"']
        return "\n".join(lines) + "\n"

    # -- lifecycle -------------------------------------------------------------------------------

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> GoBgp:
        if self.proc is not None:
            raise GoBgpError(f"{self.name}: already started")
        absent = missing()
        if absent:
            raise GoBgpError(f"{self.name}: cannot run GoBGP here: " + "; ".join(absent))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.toml())
        argv = ["ip", "netns", "exec", self.netns, GOBGPD, "-f", str(self.conf_path), "-t", "toml",
                "--api-hosts", f"127.0.0.1:{self.api_port}", "--pprof-disable", "-l", self.log_level, "-p"]
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        try:
            deadline = time.monotonic() + self.start_timeout
            while True:
                if self.proc.poll() is not None:
                    raise GoBgpError(f"{self.name}: gobgpd exited ({self.proc.returncode})\n" + self.log_tail())
                if self.cli("global", check=False).returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise GoBgpError(f"{self.name}: gRPC API not up after {self.start_timeout}s\n" + self.log_tail())
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        return stop_process(proc, timeout=timeout)

    def __enter__(self) -> GoBgp:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return f"--- {self.log_path}\n" + "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # -- CLI -------------------------------------------------------------------------------------

    def cli(self, *args: str, check: bool = True, timeout: float = 15.0) -> subprocess.CompletedProcess:
        """``gobgp -p <port> ARGS`` in the namespace (the API listens on the namespace's 127.0.0.1)."""
        argv = ["ip", "netns", "exec", self.netns, GOBGP, "-u", "127.0.0.1", "-p", str(self.api_port), *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise GoBgpError(f"{self.name}: gobgp {' '.join(args)}: exit {proc.returncode}: "
                             f"{proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def cli_json(self, *args: str) -> Any:
        out = self.cli("-j", *args).stdout.strip()
        return json.loads(out) if out else None

    # -- routes ----------------------------------------------------------------------------------

    @staticmethod
    def _macadv_args(mac: str, ip: str, *, rd: str, label: int, etag: int = 0, esi: str | None = None) -> list[str]:
        args = ["macadv", mac, ip]
        if esi:
            args += ["esi", esi]
        return [*args, "etag", str(etag), "label", str(label), "rd", rd]

    def add_macadv(self, mac: str, ip: str = "0.0.0.0", *, rd: str, rt: str | Sequence[str], label: int,
                   nexthop: str, etag: int = 0, encap: str | None = "vxlan", esi: str | None = None) -> None:
        """Type-2 MAC/IP advertisement; ``label`` is the VNI (RFC 8365: the whole 24-bit label field)."""
        rts = [rt] if isinstance(rt, str) else list(rt)
        args = [*self._macadv_args(mac, ip, rd=rd, label=label, etag=etag, esi=esi), "rt", *rts]
        if encap:
            args += ["encap", encap]
        self.cli("global", "rib", "-a", "evpn", "add", *args, "nexthop", nexthop)

    def del_macadv(self, mac: str, ip: str = "0.0.0.0", *, rd: str, label: int, etag: int = 0,
                   esi: str | None = None) -> None:
        self.cli("global", "rib", "-a", "evpn", "del", *self._macadv_args(mac, ip, rd=rd, label=label, etag=etag,
                                                                          esi=esi))

    def add_multicast(self, vtep: str, *, rd: str, rt: str | Sequence[str], vni: int, nexthop: str | None = None,
                      etag: int = 0, encap: str | None = "vxlan") -> None:
        """Type-3 inclusive multicast route with a PMSI tunnel attribute (ingress replication, label = VNI)."""
        rts = [rt] if isinstance(rt, str) else list(rt)
        args = ["multicast", vtep, "etag", str(etag), "rd", rd, "rt", *rts]
        if encap:
            args += ["encap", encap]
        args += ["pmsi", "ingress-repl", str(vni), vtep, "nexthop", nexthop or vtep]
        self.cli("global", "rib", "-a", "evpn", "add", *args)

    def del_multicast(self, vtep: str, *, rd: str, etag: int = 0) -> None:
        self.cli("global", "rib", "-a", "evpn", "del", "multicast", vtep, "etag", str(etag), "rd", rd)

    def evpn_rib(self) -> list[dict[str, Any]]:
        """``gobgp -j global rib -a evpn`` flattened to a list of paths (each has "nlri", "attrs", ...).

        The JSON is {prefix-string: [path, ...]}; every path gets "prefix" added. nlri holds e.g.
        {"type": 2, "value": {"rd": ..., "esi": ..., "etag": 0, "mac": ..., "ip": ..., "labels": [100]}} and
        {"type": 3, "value": {"rd": ..., "etag": 0, "ip": ...}}; attrs the path attributes by numeric type.
        """
        data = self.cli_json("global", "rib", "-a", "evpn") or {}
        paths: list[dict[str, Any]] = []
        for prefix, entries in data.items():
            for p in entries:
                paths.append({"prefix": prefix, **p})
        return paths

    def neighbors_json(self) -> list[dict[str, Any]]:
        return self.cli_json("neighbor") or []

    def neighbor_state(self, address: str) -> str | None:
        """session_state of a neighbor ("established", "active", ...), None if unknown."""
        for n in self.neighbors_json():
            if n.get("conf", {}).get("neighbor_address") == address:
                state = n.get("state", {}).get("session_state")
                return str(state).lower() if state is not None else None
        return None

    def _wait(self, predicate: Callable[[], Any], what: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                raise GoBgpError(f"{self.name}: timed out waiting for {what}\n" + self.log_tail())
            time.sleep(0.1)

    def wait_established(self, address: str, timeout: float = 20.0) -> None:
        # gobgp's JSON gives the state as a number (6 = established) in some versions, a name in others
        self._wait(lambda: self.neighbor_state(address) in ("established", "6"), f"{address} established", timeout)

    def wait_route(self, match: Callable[[dict[str, Any]], bool], timeout: float = 15.0,
                   what: str = "EVPN route") -> dict[str, Any]:
        return self._wait(lambda: next((p for p in self.evpn_rib() if match(p)), None), what, timeout)


def next_hop(path: dict[str, Any]) -> str | None:
    """The next hop of a path from ``evpn_rib()`` (in its MP_REACH_NLRI attribute, type 14)."""
    return next((a.get("nexthop") for a in path.get("attrs", []) if a.get("type") == 14), None)


def mac_mobility(path: dict[str, Any]) -> tuple[int, bool] | None:
    """(sequence, sticky) of the path's MAC Mobility extended community (RFC 7432 7.7: EVPN type 6,
    sub-type 0), None without one."""
    for a in path.get("attrs", []):
        if a.get("type") == 16:
            for c in a.get("value", []):
                if c.get("type") == 6 and c.get("subtype") == 0:
                    return int(c.get("sequence", 0)), bool(c.get("is_sticky", False))
    return None


def missing() -> list[str]:
    """What the GoBGP harness lacks here (each line names the Debian package); empty when all is there."""
    return [f"GoBGP {cmd} not found (Debian package gobgpd)" for cmd in (GOBGPD, GOBGP) if shutil.which(cmd) is None]


def available() -> bool:
    return not missing()
