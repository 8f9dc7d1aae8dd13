"""A rooted branch gateway's BGP, as an attacker uses it (issue 23, "A stolen box stays one box").

Shared by the stolen-box tests (tests/e2e/test_stolen_box.py) and the benchmark bench/evpn_flood.py.

Runs inside the gateway's own namespace (the lab's b1) and speaks to the route reflector at the hub's
system IP from the box's system IP: through the box's real ESP tunnel, as the box's own BGP does. It
sends the UPDATEs a scenario describes, built with the project's BGP library (bgp/), and prints one
JSON line of what it sent and what it saw.

Two ways in:

- ``"mode": "inject"`` (the default): the box's own session. The nsg daemon keeps running. A
  destination NAT rule in the box's namespace (table ``ip nsgattack``) sends the daemon's next
  connection to the reflector to this harness instead; the daemon's current connection is reset
  (``ss -K``) so that it makes that next one at once. The harness opens the upstream connection itself
  (from the system IP, a source port the rule leaves alone), relays both directions frame by frame,
  and once the session is Established adds its own UPDATEs to the stream toward the reflector. The
  reflector sees one session from the box, with the box's routes and the attacker's: a rooted box.
  At the end the rule goes first, then both connections close: the daemon reconnects directly and the
  reflector withdraws everything the session announced (the attacker's routes too).
- ``"mode": "session"``: a session of the harness's own with its own OPEN (``router_id``,
  ``hold_time``), through bgp.speaker. The reflector of today takes it for the box reconnecting and
  replaces the box's session with it; the daemon takes its place back at its next connection.

Scenario (JSON, the one argument)::

    {"mode": "inject" | "session", "hub": "198.19.255.254", "local": "198.19.255.1", "asn": 65000,
     "router_id": "<session mode>", "hold_time": 9,             # session mode: our OPEN
     "open": {"router_id": "...", "hold_time": 0},              # inject mode: the daemon's OPEN, changed
     "wait_s": 15, "linger_s": 1, "stop_on_stdin": false,
     "steps": [
        {"announce": [ROUTE, ...], "every_ms": 100, "for_s": 20, "seq_step": 1, "outbid": true},
        {"withdraw": [ROUTE, ...]},
        {"flood": {"count": 500, "mac_prefix": "02:66", "next_hop": "...", "per_update": 60}},
        {"sleep": 1.5}]}

    ROUTE: {"type": 2, "mac": "...", "ip": null, "seq": null, "sticky": false}
           {"type": 3, "originator": "<default: next hop>"}
           {"type": 5, "prefix": "198.51.100.0/24", "gateway": "198.19.0.11"}
       and for each: "rd" ("a.b.c.d:n", default "<local>:<vni>"), "vni" (100), "next_hop" (local),
       "rt" ("asn:vni" by default), "originator_id", "cluster_list" (addresses).

``linger_s``: how long the session stays up after the last step (once it closes the reflector
withdraws everything it announced); with ``stop_on_stdin`` it ends earlier, at the first line (or the
end) of standard input, so that whoever runs the harness decides when the attack stops.
``announce`` without ``every_ms`` sends once. Repeated, a type-2 route's sequence number grows by
``seq_step`` each round, and with ``outbid`` it is at least one above the highest sequence number the
reflector has sent us for that MAC (the real owner re-announcing).

Output, the last line: ``established``, ``established_s``, ``peer_open``, ``our_open``, ``sent``,
``received``, ``notification`` (the reflector's, ``{"code", "subcode"}``) or None, ``end`` (why the
session ended), ``errors``. Before it, progress lines ``{"event": "established"}`` and
``{"event": "steps_done"}`` as they happen.

Usage: python -m lab.bgp_attacker '<scenario JSON>'   (inside the box's namespace, as root), or
``Harness(lab, "b1", scenario, log)`` from outside.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from bgp import fsm
from bgp.attributes import ClusterList, OriginatorId
from bgp.codec import Notification, Open, Update, UpdateResult, decode, next_frame
from bgp.constants import HEADER_LEN, AttrType, MessageType
from bgp.errors import BgpError
from bgp.evpn_nlri import (
    EvpnRoute,
    InclusiveMulticastRoute,
    IpPrefixRoute,
    MacIpRoute,
    MacMobility,
    PmsiTunnel,
    RouteDistinguisher,
    encap_vxlan,
    route_target,
)
from bgp.speaker import BGP_PORT, Speaker

NFT_TABLE = "nsgattack"  # ip family, in the box's namespace; removed at the end (and by the tests)
PROXY_PORT = 21790  # where the redirected daemon connection lands (on the system IP)
SOURCE_PORTS = (21700, 21789)  # our own connections to the reflector: the redirect leaves these alone
VNI = 100


# --- routes ----------------------------------------------------------------------------------------

def _rd(text: str) -> RouteDistinguisher:
    addr, _, number = text.rpartition(":")
    return RouteDistinguisher.ipv4(addr, int(number))


def _nlri(spec: dict, local: str) -> EvpnRoute:
    vni = spec.get("vni", VNI)
    rd = _rd(spec.get("rd") or f"{local}:{vni}")
    kind = spec["type"]
    if kind == 2:
        ip = spec.get("ip")
        return MacIpRoute(rd, spec["mac"], IPv4Address(ip) if ip else None, vni)
    if kind == 3:
        return InclusiveMulticastRoute(rd, IPv4Address(spec.get("originator") or spec.get("next_hop") or local))
    if kind == 5:
        net = IPv4Network(spec["prefix"], strict=False)
        return IpPrefixRoute(rd, net.network_address, net.prefixlen, IPv4Address(spec["gateway"]), vni)
    raise ValueError(f"route type {kind} is not one this harness builds")


def _announcement(spec: dict, local: str, asn: int, nlri: tuple[EvpnRoute, ...], seq: int | None = None) -> Update:
    """One UPDATE as nsg/evpn/control.py builds them (RT asn:vni, VXLAN encapsulation, MAC Mobility,
    PMSI for type 3), plus what a gateway never sends: ORIGINATOR_ID / CLUSTER_LIST of its choosing."""
    vni = spec.get("vni", VNI)
    next_hop = IPv4Address(spec.get("next_hop") or local)
    rt_asn, _, rt_num = (spec.get("rt") or f"{asn}:{vni}").partition(":")
    comms: list = [route_target(int(rt_asn), int(rt_num)), encap_vxlan()]
    seq = spec.get("seq") if seq is None else seq
    if seq is not None or spec.get("sticky"):
        comms.append(MacMobility(seq or 0, 1 if spec.get("sticky") else 0))
    pmsi = None
    if spec["type"] == 3:
        pmsi = PmsiTunnel.ingress_replication(vni, spec.get("originator") or next_hop)
    upd = Update.for_evpn(nlri, next_hop, comms, pmsi=pmsi)
    extra = []
    if spec.get("originator_id"):
        extra.append(OriginatorId(IPv4Address(spec["originator_id"])))
    if spec.get("cluster_list"):
        extra.append(ClusterList(tuple(IPv4Address(c) for c in spec["cluster_list"])))
    if extra:  # MP_REACH_NLRI first (RFC 7606 5.1), the rest by type code
        head, rest = upd.attributes[:1], list(upd.attributes[1:]) + extra
        upd = replace(upd, attributes=head + tuple(sorted(rest, key=lambda a: a.type_code)))
    return upd


def _flood_macs(prefix: str, count: int) -> list[str]:
    head = prefix.split(":")
    tail = 6 - len(head)
    return [":".join([*head, *(f"{(i >> (8 * k)) & 0xFF:02x}" for k in reversed(range(tail)))])
            for i in range(1, count + 1)]


# --- the scenario --------------------------------------------------------------------------------

def event(name: str) -> None:
    """A progress line, so that a test can act while the attack goes on."""
    print(json.dumps({"event": name}), flush=True)


class Attack:
    """Runs the steps over whichever session the mode provides (``send`` writes one UPDATE)."""

    def __init__(self, sc: dict):
        self.sc = sc
        self.local = sc.get("local", "198.19.255.1")
        self.hub = sc.get("hub", "198.19.255.254")
        self.asn = sc.get("asn", 65000)
        self.t0 = time.monotonic()
        self.out: dict = {"mode": sc.get("mode", "inject"), "established": False, "established_s": None,
                          "peer_open": None, "our_open": None,
                          "sent": {"updates": 0, "announced": 0, "withdrawn": 0},
                          "received": {"updates": 0, "routes": 0, "withdrawals": 0, "max_seq": {}},
                          "notification": None, "end": None, "errors": []}
        self.seen_seq: dict[str, int] = {}  # MAC -> highest MAC Mobility sequence the reflector sent us
        self.established = asyncio.Event()
        self.ended = asyncio.Event()
        self._send = None  # set by the mode

    # what the reflector tells the box
    def observe(self, frame: bytes) -> None:
        kind = frame[HEADER_LEN - 1]
        if kind == MessageType.NOTIFICATION:
            note = Notification.decode_body(frame[HEADER_LEN:])
            self.out["notification"] = {"code": note.code, "subcode": note.subcode}
        elif kind == MessageType.OPEN:
            msg = Open.decode_body(frame[HEADER_LEN:])
            self.out["peer_open"] = {"router_id": str(msg.bgp_id), "hold_time": msg.hold_time}
        elif kind == MessageType.UPDATE:
            with contextlib.suppress(BgpError):  # an UPDATE we cannot read is the daemon's business
                self._observe_update(decode(frame))

    def _observe_update(self, res: object) -> None:
        if not isinstance(res, UpdateResult) or res.update is None:
            return
        rec = self.out["received"]
        rec["updates"] += 1
        upd = res.update
        if upd.mp_unreach is not None:
            rec["withdrawals"] += len(upd.mp_unreach.nlri)
        if upd.mp_reach is None:
            return
        rec["routes"] += len(upd.mp_reach.nlri)
        ext = upd.get(AttrType.EXTENDED_COMMUNITIES)
        seq = max((c.sequence for c in getattr(ext, "communities", ()) if isinstance(c, MacMobility)), default=0)
        for r in upd.mp_reach.nlri:
            if isinstance(r, MacIpRoute):
                self.seen_seq[r.mac] = max(self.seen_seq.get(r.mac, 0), seq)
        rec["max_seq"] = dict(self.seen_seq)

    def up(self) -> None:
        if not self.established.is_set():
            self.out["established"] = True
            self.out["established_s"] = round(time.monotonic() - self.t0, 3)
            self.established.set()
            event("established")

    def end(self, why: str) -> None:
        if self.out["end"] is None:
            self.out["end"] = why
        self.ended.set()

    def send(self, upd: Update, announced: int = 0, withdrawn: int = 0) -> None:
        if self.ended.is_set():
            return
        self._send(upd)
        s = self.out["sent"]
        s["updates"] += 1
        s["announced"] += announced
        s["withdrawn"] += withdrawn

    async def steps(self) -> None:
        for step in self.sc.get("steps", []):
            if self.ended.is_set():
                return
            if "sleep" in step:
                await asyncio.sleep(step["sleep"])
            elif "withdraw" in step:
                nlri = tuple(_nlri(r, self.local) for r in step["withdraw"])
                self.send(Update.withdraw_evpn(nlri), withdrawn=len(nlri))
            elif "announce" in step:
                await self._announce(step)
            elif "flood" in step:
                await self._flood(step["flood"])
            else:
                raise ValueError(f"unknown step {step}")
        event("steps_done")

    async def _announce(self, step: dict) -> None:
        every = step.get("every_ms")
        rounds = 1 if not every else max(1, int(step.get("for_s", 1) * 1000 / every))
        for i in range(rounds):
            if self.ended.is_set():
                return
            for spec in step["announce"]:
                seq = spec.get("seq")
                if spec["type"] == 2 and seq is not None:
                    seq += i * step.get("seq_step", 0)
                    if step.get("outbid"):
                        seq = max(seq, self.seen_seq.get(spec["mac"].lower(), -1) + 1)
                self.send(_announcement(spec, self.local, self.asn, (_nlri(spec, self.local),), seq), announced=1)
            if every:
                await asyncio.sleep(every / 1000)

    async def _flood(self, f: dict) -> None:
        base = {"type": 2, "next_hop": f.get("next_hop"), "rd": f.get("rd"), "vni": f.get("vni", VNI)}
        macs = _flood_macs(f.get("mac_prefix", "02:66"), f["count"])
        per = f.get("per_update", 60)  # type-2 NLRI of 35 octets: 60 of them stay under 4096 octets
        for i in range(0, len(macs), per):
            chunk = tuple(_nlri({**base, "mac": m}, self.local) for m in macs[i:i + per])
            self.send(_announcement(base, self.local, self.asn, chunk), announced=len(chunk))
            await asyncio.sleep(0)

    async def linger(self) -> None:
        """After the last step: until the session ends, ``linger_s`` passes or (``stop_on_stdin``) a line
        or the end of standard input arrives."""
        waits = [self.ended]
        if self.sc.get("stop_on_stdin"):
            waits.append(_stdin_event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_first(*waits), self.sc.get("linger_s", 1.0))

    def result(self) -> dict:
        self.out["seconds"] = round(time.monotonic() - self.t0, 3)
        return self.out


# --- "inject": the box's own session, relayed -----------------------------------------------------

def _nft(doc: list[dict], check: bool = True) -> None:
    subprocess.run(["nft", "-j", "-f", "-"], input=json.dumps({"nftables": doc}), text=True, check=check,
                   capture_output=True)


def redirect_daemon(hub: str, local: str) -> None:
    """The daemon's connections to the reflector go to the harness (ours, from SOURCE_PORTS, do not)."""
    t = {"family": "ip", "table": NFT_TABLE}
    _nft([{"add": {"table": {"family": "ip", "name": NFT_TABLE}}},
          {"add": {"chain": {**t, "name": "out", "type": "nat", "hook": "output", "prio": -100,
                             "policy": "accept"}}},
          {"add": {"rule": {**t, "chain": "out", "expr": [
              {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": hub}},
              {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": BGP_PORT}},
              {"match": {"op": "!=", "left": {"payload": {"protocol": "tcp", "field": "sport"}},
                         "right": {"range": list(SOURCE_PORTS)}}},
              {"dnat": {"addr": local, "port": PROXY_PORT}}]}}}])


def unredirect() -> None:
    _nft([{"add": {"table": {"family": "ip", "name": NFT_TABLE}}},
          {"delete": {"table": {"family": "ip", "name": NFT_TABLE}}}], check=False)


class Inject:
    def __init__(self, attack: Attack):
        self.a = attack
        self.b1: asyncio.StreamWriter | None = None
        self.rr: asyncio.StreamWriter | None = None
        self.daemon_ka = self.rr_ka = False
        self.relay: asyncio.Future | None = None

    async def run(self) -> None:
        a = self.a
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((a.local, PROXY_PORT))
        server = await asyncio.start_server(self._accept, sock=lsock)
        try:
            redirect_daemon(a.hub, a.local)
            # the daemon's session now: reset, so that its next connection comes to us (in ~1 s)
            subprocess.run(["ss", "-K", "-tn", "dst", a.hub, "dport", "=", f":{BGP_PORT}"], check=False,
                           capture_output=True)
            await self._run_steps()
        finally:
            unredirect()  # first: the daemon's next connection goes straight to the reflector
            server.close()
            a.end("closed by the harness")
            for w in (self.rr, self.b1):
                if w is not None:
                    w.close()
            if self.relay is not None:  # both pumps see their connection close
                await asyncio.wait([self.relay], timeout=2)

    async def _run_steps(self) -> None:
        a = self.a
        try:
            await asyncio.wait_for(_first(a.established, a.ended), a.sc.get("wait_s", 15))
        except TimeoutError:
            a.end("no session within wait_s")
            return
        if a.established.is_set() and not a.ended.is_set():
            a._send = lambda upd: self.rr.write(upd.encode())  # type: ignore[union-attr]
            await a.steps()
            await a.linger()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.b1 is not None:  # one session only; a second daemon connection waits for the redirect to go
            writer.close()
            return
        self.b1 = writer
        try:
            rr_reader, self.rr = await self._upstream()
        except OSError as exc:
            self.a.out["errors"].append(f"upstream connect: {exc}")
            self.a.end("upstream connect failed")
            writer.close()
            return
        self.relay = asyncio.gather(self._pump(reader, self.rr, from_daemon=True),
                                    self._pump(rr_reader, writer, from_daemon=False))
        await self.relay

    async def _upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Our connection to the reflector, from the system IP and a port the redirect leaves alone (a
        few tries: an earlier run's connection from the same port may still be in TIME_WAIT)."""
        loop = asyncio.get_running_loop()
        last: Exception | None = None
        for port in random.sample(range(SOURCE_PORTS[0], SOURCE_PORTS[1] + 1), 8):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setblocking(False)
            try:
                sock.bind((self.a.local, port))
                await asyncio.wait_for(loop.sock_connect(sock, (self.a.hub, BGP_PORT)), 5)
            except (OSError, TimeoutError) as exc:
                sock.close()
                last = exc
                continue
            return await asyncio.open_connection(sock=sock)
        raise OSError(f"no connection to the reflector: {last}")

    async def _pump(self, reader: asyncio.StreamReader, to: asyncio.StreamWriter, from_daemon: bool) -> None:
        buf = b""
        try:
            while not self.a.ended.is_set():
                chunk = await reader.read(65536)
                if not chunk:
                    break
                buf += chunk
                while True:
                    frame, buf = next_frame(buf)
                    if frame is None:
                        break
                    to.write(self._frame(frame, from_daemon))
        except (ConnectionError, OSError) as exc:
            self.a.out["errors"].append(f"{'daemon' if from_daemon else 'reflector'} side: {exc}")
        self.a.end("closed by the daemon" if from_daemon else "closed by the reflector")
        to.close()

    def _frame(self, frame: bytes, from_daemon: bool) -> bytes:
        """Observe one relayed message; the daemon's OPEN leaves with the scenario's "open" changes."""
        kind = frame[HEADER_LEN - 1]
        if from_daemon:
            if kind == MessageType.OPEN:
                msg = Open.decode_body(frame[HEADER_LEN:])
                change = self.a.sc.get("open") or {}
                if change:
                    msg = replace(msg, bgp_id=IPv4Address(change.get("router_id", str(msg.bgp_id))),
                                  hold_time=change.get("hold_time", msg.hold_time))
                    frame = msg.encode()
                self.a.out["our_open"] = {"router_id": str(msg.bgp_id), "hold_time": msg.hold_time}
            self.daemon_ka |= kind == MessageType.KEEPALIVE
        else:
            self.a.observe(frame)
            self.rr_ka |= kind == MessageType.KEEPALIVE
        if self.daemon_ka and self.rr_ka:  # both sides past OPENCONFIRM: the reflector is Established
            self.a.up()
        return frame


def _stdin_event() -> asyncio.Event:
    """Set at the first line or the end of standard input (read without blocking the loop)."""
    ev = asyncio.Event()
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()

    def readable() -> None:
        loop.remove_reader(fd)
        ev.set()

    loop.add_reader(fd, readable)
    return ev


async def _first(*events: asyncio.Event) -> None:
    tasks = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


# --- "session": a session of our own ------------------------------------------------------------

class _Speaker(Speaker):
    """bgp.speaker's driver, telling the harness every frame the reflector sends."""

    attack: Attack | None = None

    def _message(self, frame: bytes) -> None:
        if self.attack is not None:
            self.attack.observe(frame)
        super()._message(frame)


class _Reasons(logging.Handler):
    def __init__(self, attack: Attack):
        super().__init__()
        self.attack = attack

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("BGP session down: "):
            self.attack.end(msg.removeprefix("BGP session down: "))


class OwnSession:
    def __init__(self, attack: Attack):
        self.a = attack

    async def run(self) -> None:
        a, sc = self.a, self.a.sc
        router_id, hold = sc.get("router_id", a.local), sc.get("hold_time", 9)
        a.out["our_open"] = {"router_id": router_id, "hold_time": hold}
        log = logging.getLogger("bgp.speaker")
        log.setLevel(logging.INFO)
        log.addHandler(_Reasons(a))
        sp = _Speaker(fsm.Config(a.asn, router_id, a.asn, hold_time=hold), a.hub, local=a.local)
        sp.attack = a
        sp.on_state = lambda st: a.up() if st == "up" else None
        sp.on_update = lambda res: None
        sp.start()
        try:
            try:
                await asyncio.wait_for(_first(a.established, a.ended), sc.get("wait_s", 15))
            except TimeoutError:
                a.end("no session within wait_s")
            if a.established.is_set() and not a.ended.is_set():
                a._send = sp.send
                await a.steps()
                await a.linger()
            a.out["state"] = sp.session.state.value
        finally:
            await sp.stop()
            a.end("closed by the harness")


async def main(sc: dict) -> dict:
    attack = Attack(sc)
    mode = Inject(attack) if attack.out["mode"] == "inject" else OwnSession(attack)
    try:
        await mode.run()
    except (OSError, ValueError, KeyError, BgpError, subprocess.CalledProcessError) as exc:  # for the test to show
        attack.out["errors"].append(f"{type(exc).__name__}: {exc}")
    return attack.result()


# --- the harness from outside the box (tests, benchmarks) -----------------------------------------

class Harness:
    """This module run in ``node`` of a lab (a lab.lab.Lab) with ``scenario``: its progress lines are
    timestamped (time.monotonic()) as they arrive, in ``events``, and the moment it exits as "exited";
    ``stop()`` ends the linger of a scenario with ``stop_on_stdin``; ``close()`` returns its result."""

    def __init__(self, lab, node: str, scenario: dict, log: Path):
        root = Path(__file__).resolve().parents[1]
        self._err = open(log, "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(lab.exec_argv(node, [sys.executable, "-m", "lab.bgp_attacker",
                                                          json.dumps(scenario)]),
                                     cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._err, text=True, start_new_session=True)
        self.events: dict[str, float] = {}
        self.result: dict | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                msg = json.loads(line)
                if "event" in msg:
                    self.events.setdefault(msg["event"], time.monotonic())
                else:
                    self.result = msg
        self.events.setdefault("exited", time.monotonic())

    def wait(self, event: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while event not in self.events and "exited" not in self.events and time.monotonic() < deadline:
            time.sleep(0.02)
        return event in self.events

    @property
    def gone(self) -> bool:
        return "exited" in self.events

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()

    def close(self, timeout: float = 20) -> dict:
        """Stop it, wait for it (SIGKILL by pid if it lingers), and its result."""
        self.stop()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        deadline = time.monotonic() + 2
        while "exited" not in self.events and time.monotonic() < deadline:
            time.sleep(0.02)
        self._err.close()
        return self.result or {"errors": [f"no result (exit {self.proc.returncode})"]}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))), flush=True)
