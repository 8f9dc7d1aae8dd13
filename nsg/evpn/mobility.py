"""Duplicate-MAC detection (RFC 7432 section 15.1). Pure: the time is an argument of every input.

A MAC that moves between sites (from one remote VTEP to another, from our LAN to a VTEP or back)
``max_moves`` times within ``window`` seconds is a duplicate: two hosts with one MAC, a loop, or a
member box announcing a MAC that is not its own with ever higher sequence numbers. The RFC says the
PE "MUST alert the operator and stop sending and processing any BGP MAC/IP Advertisement routes for
that MAC address till a corrective action is taken". Here the MAC is *frozen* where it is: its
routes still go into the RIB (a withdrawal must still find its path) but move it nowhere; forwarding
goes on toward where it is; a local MAC frozen here stays announced as ours (no withdrawal, no new
sequence number); a MAC frozen at a remote VTEP and learned on our LAN is not announced. Each
detection is an alert (effects.DuplicateMacAlert) and a count (``duplicate_macs``); moves ignored
meanwhile are counted too (``moves_ignored``).

Defaults: FRR's, 5 moves in 180 s; the freeze holds for 180 s (``evpn.duplicate_mac``). FRR keeps a
frozen duplicate until an operator clears it; a gateway has no local operator (it is configured
from the controller), and a freeze that never ends would keep a MAC stuck at a site after its cause
is gone (a VM really moved during the storm) until someone logs in. With a hold that ends by itself
an attacker gets at most ``max_moves`` moves per hold (plus the window to count them again), every
freeze reaches the controller as an alert, and the box heals once the cause stops. When the hold
ends the MAC's move history is cleared and it goes where its routes say.

Where it is frozen: where it was before the move that completed the count (that move is not made),
except that a MAC on our own LAN at that moment is frozen here, whichever way the move went: we
see our LAN first-hand, a remote location is only a claim.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from nsg.evpn.effects import DuplicateMacAlert

Mac = tuple[int, str]  # (vni, mac)
LOCAL = "local"  # the site name of our own LAN
SWEEP_AT = 4096  # histories kept before the old ones are swept out


@dataclass(frozen=True)
class Freeze:
    at: str  # a VTEP address, or LOCAL
    until: float
    sites: tuple[str, ...]
    moves: int


class DuplicateMacs:
    """Move histories and freezes. ``counters``: the core's, shared."""

    def __init__(self, counters: dict[str, int], max_moves: int = 5, window: float = 180.0, hold: float = 180.0):
        self.counters = counters
        self.max_moves, self.window, self.hold = max_moves, window, hold
        self.frozen: dict[Mac, Freeze] = {}
        self._moves: dict[Mac, deque[tuple[float, str, str]]] = {}  # (time, from, to), newest last
        self._sweep_at = SWEEP_AT

    def configure(self, max_moves: int, window: float, hold: float) -> None:
        self.max_moves, self.window, self.hold = max_moves, window, hold

    def frozen_at(self, m: Mac) -> str | None:
        f = self.frozen.get(m)
        return f.at if f is not None else None

    def move(self, m: Mac, frm: str, to: str, now: float, *, here: bool) -> tuple[bool, DuplicateMacAlert | None]:
        """The MAC is about to move from site ``frm`` to site ``to``; ``here``: it is on our LAN now.
        Returns whether the move may be made, and the alert when this move made it a duplicate."""
        if m in self.frozen:
            self.counters["moves_ignored"] += 1
            return False, None
        moves = self._moves.get(m)
        if moves is None:
            moves = self._moves[m] = deque(maxlen=self.max_moves)
            if len(self._moves) >= self._sweep_at:
                self._sweep(now)
        while moves and moves[0][0] <= now - self.window:
            moves.popleft()
        moves.append((now, frm, to))
        if len(moves) < self.max_moves:
            return True, None
        at = LOCAL if here else frm
        sites = tuple(sorted({s for _t, a, b in moves for s in (a, b)}))
        self.frozen[m] = Freeze(at, now + self.hold, sites, len(moves))
        del self._moves[m]
        self.counters["duplicate_macs"] += 1
        return at == to, DuplicateMacAlert(m[0], m[1], sites, self.max_moves, self.window, at, self.hold)

    def relocate(self, m: Mac, at: str) -> None:
        """The frozen MAC's location is gone (its path withdrawn, or it left our LAN): it is held
        where it is now for the rest of the hold."""
        f = self.frozen.get(m)
        if f is not None and f.at != at:
            self.frozen[m] = Freeze(at, f.until, f.sites, f.moves)

    def forget(self, m: Mac) -> None:
        """The MAC is gone everywhere: nothing to hold."""
        self.frozen.pop(m, None)
        self._moves.pop(m, None)

    def expire(self, now: float) -> list[Mac]:
        """Freezes whose hold is over end; their MACs go where their routes say again."""
        done = [m for m, f in self.frozen.items() if f.until <= now]
        for m in done:
            del self.frozen[m]
        self._sweep(now)
        return done

    def next_expiry(self) -> float | None:
        return min((f.until for f in self.frozen.values()), default=None)

    def _sweep(self, now: float) -> None:
        """Histories whose newest move is out of the window are of no use any more."""
        self._moves = {m: d for m, d in self._moves.items() if d and d[-1][0] > now - self.window}
        self._sweep_at = max(SWEEP_AT, 2 * len(self._moves))
