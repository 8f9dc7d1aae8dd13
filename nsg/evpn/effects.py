"""What the EVPN route core (routes.py) asks its driver (control.py) to do, as data: UPDATEs for
the peers, timers to start or cancel (timers are commands, so tests control time), and whether
the kernel view changed. The core never sends, sleeps or reads a clock."""

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


TimerCommand = StartStaleTimer | CancelStaleTimer


@dataclass(frozen=True)
class Effects:
    """``send``: UPDATEs for every peer whose session is up, in this order. ``announce``: when not
    None, the whole set of UPDATEs a session gets when it comes up (and on a route refresh).
    ``changed``: fdb(), neighbors() or routes() may answer differently now."""

    send: tuple[Update, ...] = ()
    announce: tuple[Update, ...] | None = None
    timers: tuple[TimerCommand, ...] = ()
    changed: bool = False


@dataclass
class Pending:
    """Effects gathered while the core handles one input."""

    send: list[Update] = field(default_factory=list)
    timers: list[TimerCommand] = field(default_factory=list)
    announce: bool = False  # the announced set changed
    changed: bool = False

    def effects(self, announcements: Callable[[], list[Update]]) -> Effects:
        return Effects(tuple(self.send), tuple(announcements()) if self.announce else None, tuple(self.timers),
                       self.changed)
