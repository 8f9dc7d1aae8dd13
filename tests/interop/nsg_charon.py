"""nsg against charon, the pieces both pairings use: nsg and strongSwan in two namespaces
(tests/interop/test_nsg_strongswan.py) and the appliance's kernel ESP against charon
(tests/e2e/appliance/test_strongswan_guest.py). Their names for each other, the check that both sides
settled on the same SAs (View, agreed), and a 10 ms ping that counts every packet lost (Pinger)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any

from tests.interop.strongswan import established

PEER = "sw"  # nsg's name for the strongSwan peer
IKE, CHILD = "nsg", "net"  # charon's names for its connection and child
PSK = "nsg-interop-psk-0123456789"


def nsg_ike(st: dict[str, Any] | None) -> dict[str, Any] | None:
    tun = (st or {}).get("tunnels") or {}
    peers = [p for p in tun.get("ike", []) if p["peer"] == PEER]
    return peers[0]["ike_sa"] if peers else None


def spi(text: str) -> int:
    return int(text, 16)


@dataclass(frozen=True)
class View:
    """One moment on which both sides agree: IKE SPIs (initiator, responder) and child SPIs as nsg sees
    them (in = what charon sends with, out = what nsg sends with)."""

    ike: tuple[int, int]
    child_in: int
    child_out: int
    nsg_initiator: bool
    charon_ike: dict
    charon_child: dict
    nsg_sa: dict


def agreed(nsg: dict[str, Any] | None, sas: list[dict[str, Any]]) -> View | None:
    """Both sides settled on the same SAs: nsg has one live (not deleting) active child, charon one
    ESTABLISHED IKE SA with one INSTALLED child, and the SPIs match pairwise."""
    sa = nsg_ike(nsg)
    found = established(sas, IKE, CHILD)
    if sa is None or sa["state"] != "established" or found is None:
        return None
    c_ike, c_child = found
    live = [c for c in sa["children"] if not c["deleting"]]
    if len(live) != 1 or not live[0]["active"]:
        return None
    mine = (spi(sa["local_spi"]), spi(sa["remote_spi"]))
    ike = mine if sa["initiator"] else mine[::-1]
    if ike != (spi(c_ike["initiator-spi"]), spi(c_ike["responder-spi"])):
        return None
    if sa["initiator"] == (c_ike.get("initiator") == "yes"):
        return None
    child_in, child_out = spi(live[0]["in_spi"]), spi(live[0]["out_spi"])
    if (child_in, child_out) != (spi(c_child["spi-out"]), spi(c_child["spi-in"])):
        return None
    return View(ike, child_in, child_out, sa["initiator"], c_ike, c_child, sa)


_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received(?:, \+(\d+) duplicates)?(?:, \+(\d+) errors)?"
                      r", ([\d.]+)% packet loss")


class Pinger:
    """``ping -i 0.01`` in a namespace. It is stopped with SIGINT right after a reply came in, so that
    no echo request is still on its way when ping prints its summary: a lost packet is a lost packet."""

    def __init__(self, ns: str, src: str, dst: str, interval: float = 0.01):
        self.interval = interval
        self.started = time.monotonic()
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "ping", "-n", "-i", str(interval), "-I", src, dst],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     text=True, bufsize=1)
        self.lines: list[str] = []
        self.replies: set[int] = set()
        self._stop_after_reply = threading.Event()
        self._signalled = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            m = re.search(r"bytes from .* icmp_seq=(\d+) ", line)
            if m:
                self.replies.add(int(m[1]))
                if self._stop_after_reply.is_set() and not self._signalled:
                    self._interrupt()

    def _interrupt(self) -> None:
        self._signalled = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGINT)  # `ip netns exec` execs ping: this pid is ping's

    def stop(self, timeout: float = 5.0) -> dict[str, Any]:
        self._stop_after_reply.set()
        try:
            self.proc.wait(2.0)
        except subprocess.TimeoutExpired:  # no reply for 2 s: stop it anyway
            self._interrupt()
            self.proc.wait(timeout)
        self._reader.join(timeout)
        out = "".join(self.lines)
        m = _SUMMARY.search(out)
        assert m, f"no ping summary in:\n{out[-2000:]}"
        sent, got = int(m[1]), int(m[2])
        per_packet = self.lines[1:next(i for i, line in enumerate(self.lines) if line.startswith("--- "))]
        return {"transmitted": sent, "received": got, "errors": int(m[4] or 0), "loss": m[5],
                "seconds": round(time.monotonic() - self.started, 1),
                "missing": sorted(set(range(1, sent + 1)) - self.replies),
                # anything but a reply: unreachables, send errors, DUP! (a replayed packet)
                "unusual": [line.rstrip() for line in per_packet
                            if (line.strip() and "bytes from" not in line) or "DUP" in line][:20]}

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
