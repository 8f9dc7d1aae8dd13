"""Which route reflector client holds which MAC and IP, and which MACs move between clients: the state
behind the reflector's MAC mobility checks (RFC 7432 section 15; rr_check.py makes the decisions).

Sans-IO: ``now`` comes in. Memory is per held type-2 route, so bounded by the clients' route limits;
move records live for one flap window.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from bgp.evpn_nlri import MacIpRoute


@dataclass
class _Flap:
    incumbent: str  # who held the MAC before its moves began: where it stays if it flaps
    moves: deque[float]
    last: str = ""  # who took it last (its MAC+IP routes following its MAC route are not more moves)
    frozen_until: float | None = None


class Mobility:
    """Which client holds which MAC and IP (type-2 routes), and which MACs move between clients. A MAC
    has one or two routes at one client almost always: small tuples, not dicts, per MAC (memory)."""

    def __init__(self, flap_moves: int = 5, flap_window: float = 180.0) -> None:
        self._macs: dict[tuple[int, str], tuple[tuple[bytes, str, int], ...]] = {}  # (route key, client, seq)
        self._ips: dict[tuple[int, str], tuple[tuple[bytes, str, str], ...]] = {}  # (route key, client, MAC)
        self._flaps: dict[tuple[int, str], _Flap] = {}
        self.flap_moves, self.flap_window = flap_moves, flap_window

    def add(self, client: str, key: bytes, route: MacIpRoute, seq: int) -> None:
        _put(self._macs, (route.vni, route.mac), key, client, (key, client, seq))
        if route.ip is not None:
            _put(self._ips, (route.vni, str(route.ip)), key, client, (key, client, route.mac))

    def remove(self, client: str, key: bytes, route: MacIpRoute) -> None:
        _put(self._macs, (route.vni, route.mac), key, client, None)
        if route.ip is not None:
            _put(self._ips, (route.vni, str(route.ip)), key, client, None)

    def holds(self, client: str, vni: int, mac: str) -> bool:
        return any(c == client for _, c, _ in self._macs.get((vni, mac), ()))

    def seq_of(self, client: str, vni: int, mac: str) -> int | None:
        """The highest sequence number ``client`` itself holds for the MAC."""
        return max((s for _, c, s in self._macs.get((vni, mac), ()) if c == client), default=None)

    def best_elsewhere(self, client: str, vni: int, mac: str) -> tuple[int, str] | None:
        """(the highest sequence number another client holds for the MAC, that client)."""
        return max(((s, c) for _, c, s in self._macs.get((vni, mac), ()) if c != client), default=None)

    def seq_elsewhere(self, client: str, vni: int, mac: str) -> int | None:
        best = self.best_elsewhere(client, vni, mac)
        return best[0] if best is not None else None

    def ip_elsewhere(self, client: str, vni: int, ip: str) -> set[str]:
        """The MACs other clients bind ``ip`` to."""
        return {m for _, c, m in self._ips.get((vni, ip), ()) if c != client}

    def routes_of(self, vni: int, mac: str) -> list[tuple[bytes, str]]:
        """(route key, client) of every route for the MAC (MAC and MAC+IP)."""
        return [(k, c) for k, c, _ in self._macs.get((vni, mac), ())]

    def frozen_at(self, vni: int, mac: str, now: float) -> str | None:
        """The client a flapping MAC is frozen at, or None."""
        f = self._flaps.get((vni, mac))
        if f is None or f.frozen_until is None:
            return None
        if now >= f.frozen_until:
            del self._flaps[(vni, mac)]
            return None
        return f.incumbent

    def note_move(self, vni: int, mac: str, mover: str, previous: str, now: float, was_holding: bool = False) -> bool:
        """The MAC moves from ``previous`` to ``mover``; True when that makes it flap (now frozen).
        ``was_holding``: the mover held it already (its MAC+IP route after its MAC route: one move)."""
        f = self._flaps.get((vni, mac))
        if f is not None:
            while f.moves and now - f.moves[0] > self.flap_window:
                f.moves.popleft()
        if f is None or not f.moves:
            f = self._flaps[(vni, mac)] = _Flap(previous, deque())
        elif f.last == mover and was_holding:
            return False
        f.last = mover
        f.moves.append(now)
        if len(f.moves) >= self.flap_moves:
            f.frozen_until = now + self.flap_window
            return True
        return False

    def prune(self, now: float) -> None:
        """Forget moves older than the window and freezes that ended (bounded memory)."""
        for k, f in list(self._flaps.items()):
            if (f.frozen_until is not None and now >= f.frozen_until) or (
                    f.frozen_until is None and (not f.moves or now - f.moves[-1] > self.flap_window)):
                del self._flaps[k]

    def __len__(self) -> int:
        return len(self._macs)


def _put(table: dict, k: tuple, key: bytes, client: str, entry: tuple | None) -> None:
    """Replace (or, with None, drop) ``client``'s entry of route ``key`` under ``k``."""
    entries = tuple(e for e in table.get(k, ()) if e[0] != key or e[1] != client) + (
        (entry,) if entry is not None else ())
    if entries:
        table[k] = entries
    else:
        table.pop(k, None)
