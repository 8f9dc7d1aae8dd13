"""Two IkeManagers wired together in memory, with a hand-driven clock.

Like simnet.SimNet one level up: datagrams go to whichever manager owns the destination address
(anything sent elsewhere, e.g. an answer to a spoofed source, is lost and kept in ``elsewhere``),
and timers are kept as the driver keys them, by (tag, timer name), so timers tagged with no peer
come back to the manager exactly as ipsec/ike/driver.py feeds them in.
"""

from __future__ import annotations

from ipsec.ike import events as ev
from ipsec.ike.manager import IkeManager, Tagged
from tests.unit.ike.simnet import A_ADDR, B_ADDR


class MgrNet:
    def __init__(self, a: IkeManager, b: IkeManager):
        self.now = 0.0
        self.mgr = {"a": a, "b": b}
        self.addr = {"a": A_ADDR[0], "b": B_ADDR[0]}
        self.timers: dict[str, dict[tuple[str, str], float]] = {"a": {}, "b": {}}
        self.seen: dict[str, list[Tagged]] = {"a": [], "b": []}
        self.wire: list[tuple[str, bytes, ev.Address, int]] = []  # (to side, data, source, port)
        self.elsewhere: list[ev.Send] = []

    def restart(self, side: str, mgr: IkeManager) -> None:
        """The box behind ``side`` restarts: a fresh manager, no timers, nothing in flight to it."""
        self.mgr[side] = mgr
        self.timers[side] = {}
        self.wire = [w for w in self.wire if w[0] != side]

    def apply(self, side: str, tagged: list[Tagged]) -> list[Tagged]:
        for tag, c in tagged:
            self.seen[side].append((tag, c))
            match c:
                case ev.Send(data, dst, port):
                    to = next((s for s, ip in self.addr.items() if ip == dst[0] and s != side), None)
                    if to is None:
                        self.elsewhere.append(c)
                    else:
                        self.wire.append((to, data, (self.addr[side], port), port))
                case ev.SetTimer(name, delay):
                    self.timers[side][(tag, name)] = self.now + delay
                case ev.CancelTimer(name):
                    self.timers[side].pop((tag, name), None)
        return tagged

    def inject(self, side: str, data: bytes, src: ev.Address, port: int = 500) -> list[Tagged]:
        """A datagram from outside (anyone, from any address) arrives at ``side``."""
        return self.apply(side, self.mgr[side].datagram(data, src, port))

    def step(self) -> bool:
        """Deliver the oldest datagram on the wire; False when there was none."""
        if not self.wire:
            return False
        to, data, src, port = self.wire.pop(0)
        self.apply(to, self.mgr[to].datagram(data, src, port))
        return True

    def deliver(self, limit: int = 200) -> None:
        for _ in range(limit):
            if not self.step():
                return
        raise AssertionError("message storm")

    def advance(self, seconds: float) -> None:
        """Let time pass: due timers fire in order, and what they send is delivered."""
        end = self.now + seconds
        while True:
            due = [(t, side, key) for side, ts in self.timers.items() for key, t in ts.items() if t <= end]
            if not due:
                break
            t, side, (tag, name) = min(due, key=lambda x: x[0])
            self.now = max(self.now, t)
            del self.timers[side][(tag, name)]
            self.apply(side, self.mgr[side].timer(tag, name))
            self.deliver()
        self.now = end

    def connect(self) -> None:
        """a initiates to b (its reconnect timer, as set_peer arms it) and the exchanges run."""
        self.apply("a", self.mgr["a"].timer("b", "reconnect"))
        self.deliver()
