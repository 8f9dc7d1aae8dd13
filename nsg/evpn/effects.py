"""What the EVPN route core (routes.py) asks its driver (control.py) to do, as data: UPDATEs for
the peers, timers to start or cancel (timers are commands, so tests control time), alerts for the
operator, and whether the kernel view changed. The core never sends, sleeps or reads a clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bgp.codec import Update


@dataclass(frozen=True)
class StartStaleTimer:
    """Start ``peer``'s graceful-restart timer (RFC 4724 4.2), replacing one that runs; when it
    fires, the driver calls ``EvpnRoutes.stale_expired(peer)``."""

    peer: str
    seconds: float


@dataclass(frozen=True)
class CancelStaleTimer:
    """``peer``'s stale routes are settled (End-of-RIB, or the session ended without graceful restart)."""

    peer: str


@dataclass(frozen=True)
class StartFreezeTimer:
    """The earliest hold of a frozen MAC (mobility.py) ends in ``seconds``: replaces the running
    freeze timer; when it fires, the driver calls ``EvpnRoutes.tick(now)``."""

    seconds: float


TimerCommand = StartStaleTimer | CancelStaleTimer | StartFreezeTimer


@dataclass(frozen=True)
class DuplicateMacAlert:
    """RFC 7432 section 15.1: ``mac`` moved ``moves`` times within ``window`` seconds between
    ``sites`` (VTEP addresses; "local" is our own LAN). It is frozen at ``frozen_at`` for ``hold``
    seconds: moves are ignored meanwhile, forwarding goes on toward where it is."""

    vni: int
    mac: str
    sites: tuple[str, ...]
    moves: int
    window: float
    frozen_at: str
    hold: float
    kind: str = "duplicate-mac"

    def detail(self) -> dict:
        """The alert as the channel Event's ``detail`` (nsg.channel.wire.Event)."""
        return {"vni": self.vni, "mac": self.mac, "sites": list(self.sites), "moves": self.moves,
                "window_s": self.window, "frozen_at": self.frozen_at, "hold_s": self.hold}


@dataclass(frozen=True)
class RouteLimitAlert:
    """A BGP peer (``site`` None) or the routes of one next hop through that peer (``site``, its
    VTEP) came to ``routes`` paths: at ``warn`` (80 % of ``limit``), or at the limit, from where
    further new paths are refused and counted (``routes_over_limit``)."""

    peer: str
    site: str | None
    routes: int
    limit: int
    refusing: bool
    kind: str = "route-limit"

    def detail(self) -> dict:
        return {"peer": self.peer, "site": self.site, "routes": self.routes, "limit": self.limit,
                "refusing": self.refusing}


Alert = DuplicateMacAlert | RouteLimitAlert


@dataclass(frozen=True)
class Effects:
    """``send``: UPDATEs for every peer whose session is up, in this order. ``announce``: when not
    None, the whole set of UPDATEs a session gets when it comes up (and on a route refresh).
    ``changed``: fdb(), neighbors() or routes() answer differently now. ``alerts``: for the
    operator (the driver logs them and hands them on: a channel Event each)."""

    send: tuple[Update, ...] = ()
    announce: tuple[Update, ...] | None = None
    timers: tuple[TimerCommand, ...] = ()
    changed: bool = False
    alerts: tuple[Alert, ...] = ()


@dataclass
class Pending:
    """Effects gathered while the core handles one input."""

    send: list[Update] = field(default_factory=list)
    timers: list[TimerCommand] = field(default_factory=list)
    announce: bool = False  # the announced set changed
    changed: bool = False
    alerts: list[Alert] = field(default_factory=list)

    def effects(self, announcements: Callable[[], list[Update]]) -> Effects:
        return Effects(tuple(self.send), tuple(announcements()) if self.announce else None, tuple(self.timers),
                       self.changed, tuple(self.alerts))
